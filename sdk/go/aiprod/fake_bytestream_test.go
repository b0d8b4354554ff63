package aiprod_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// chunk is the size of the fake server's ReadResponse chunks (the real server's too).
const chunk = 256 << 10

// testBytes returns n deterministic pseudo-random bytes.
func testBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// artifact describes data stored under name.
func artifact(name string, data []byte) *aiprodv1.VideoArtifact {
	return &aiprodv1.VideoArtifact{ResourceName: name, Uri: name, Sha256: sha(data), SizeBytes: uint64(len(data)),
		MimeType: "video/mp4", Codec: "avc1.42c01f", FrameCount: 24, FrameRate: 24, ShotCount: 1}
}

// fakeRead is one ByteStream.Read the fake server received.
type fakeRead struct {
	name          string
	offset, limit int64
}

// fakeStore holds jobs with artifacts and their bytes, and how Read misbehaves for each resource.
//
// Modes (per resource name, without "@sha"), n being the how-manieth Read of that resource:
//
//	"drop-stream"  n=1: 2 chunks, then UNAVAILABLE
//	"drop-conn"    n=1: 2 chunks, then hangs until the client goes away
//	"trickle"      every Read: 1 chunk, then UNAVAILABLE (progress on every retry)
//	"down"         every Read: UNAVAILABLE at once
//	"busy"         n=1: RESOURCE_EXHAUSTED with RetryInfo
//	"quota"        every Read: RESOURCE_EXHAUSTED without RetryInfo
//
// A pinned name in replaced sends 1 chunk, then FAILED_PRECONDITION.
type fakeStore struct {
	mu       sync.Mutex
	jobs     map[string][]*aiprodv1.Job // GetJob's n-th call returns jobs[id][min(n, len)-1]
	gets     map[string]int
	files    map[string][]byte // pinned name ("name@sha") → bytes
	modes    map[string]string
	replaced map[string]bool
	reads    []fakeRead
	count    map[string]int
}

func newFakeStore() *fakeStore {
	return &fakeStore{jobs: map[string][]*aiprodv1.Job{}, gets: map[string]int{}, files: map[string][]byte{},
		modes: map[string]string{}, replaced: map[string]bool{}, count: map[string]int{}}
}

// put stores data as the version sha of name (sha of the data unless given).
func (s *fakeStore) put(name string, data []byte, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == "" {
		version = sha(data)
	}
	s.files[name+"@"+version] = data
}

func (s *fakeStore) setJob(versions ...*aiprodv1.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[versions[0].GetJobId()] = versions
}

func (s *fakeStore) setMode(name, mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modes[name] = mode
}

func (s *fakeStore) replace(pinned string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replaced[pinned] = true
}

func (s *fakeStore) getJob(id string) *aiprodv1.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	versions := s.jobs[id]
	if len(versions) == 0 {
		return nil
	}
	s.gets[id]++
	return proto.Clone(versions[min(s.gets[id], len(versions))-1]).(*aiprodv1.Job)
}

func (s *fakeStore) getJobCalls(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[id]
}

func (s *fakeStore) readLog() []fakeRead {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakeRead(nil), s.reads...)
}

// videoJob returns a DELIVERED job whose video is data, stored in s.
func (s *fakeStore) videoJob(jobID string, data []byte) *aiprodv1.Job {
	name := "jobs/" + jobID + "/video"
	s.put(name, data, "")
	return &aiprodv1.Job{JobId: jobID, State: aiprodv1.JobState_JOB_STATE_DELIVERED, Video: artifact(name, data)}
}

type fakeByteStream struct {
	bytestream.UnimplementedByteStreamServer
	store *fakeStore
}

func (f *fakeByteStream) Read(req *bytestream.ReadRequest, stream bytestream.ByteStream_ReadServer) error {
	if err := checkAuth(stream.Context(), apiKey); err != nil {
		return err
	}
	s := f.store
	name := req.GetResourceName()
	base, _, _ := strings.Cut(name, "@")
	s.mu.Lock()
	s.reads = append(s.reads, fakeRead{name: name, offset: req.GetReadOffset(), limit: req.GetReadLimit()})
	s.count[base]++
	n, mode, replaced := s.count[base], s.modes[base], s.replaced[name]
	data, ok := s.files[name]
	s.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "resource %s not found", name)
	}
	off := req.GetReadOffset()
	if off < 0 || off > int64(len(data)) {
		return status.Errorf(codes.OutOfRange, "read_offset %d is outside 0..%d", off, len(data))
	}
	if l := req.GetReadLimit(); l > 0 && off+l < int64(len(data)) {
		data = data[:off+l]
	}
	switch {
	case mode == "down":
		return status.Error(codes.Unavailable, "backend unavailable")
	case mode == "quota":
		return status.Error(codes.ResourceExhausted, "download quota exhausted")
	case mode == "busy" && n == 1:
		st, _ := status.New(codes.ResourceExhausted, "too many reads").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Millisecond)})
		return st.Err()
	}
	sent := 0
	for ; off < int64(len(data)); off += chunk {
		end := min(off+chunk, int64(len(data)))
		if err := stream.Send(&bytestream.ReadResponse{Data: data[off:end]}); err != nil {
			return err
		}
		sent++
		switch {
		case replaced:
			return status.Errorf(codes.FailedPrecondition, "%s was replaced by a revision", name)
		case mode == "trickle" && end < int64(len(data)):
			return status.Error(codes.Unavailable, "connection lost")
		case mode == "drop-stream" && n == 1 && sent == 2:
			return status.Error(codes.Unavailable, "server shutting down")
		case mode == "drop-conn" && n == 1 && sent == 2:
			<-stream.Context().Done()
			return stream.Context().Err()
		}
	}
	return nil
}
