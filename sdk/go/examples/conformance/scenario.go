package main

// The conformance scenario of the Go SDK (the same 11 steps as the other SDKs), run by
// TestConformance after the quickstart (main.go) against a real server.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	"github.com/aiprod/aiprod/sdk/go/aiprod/aiprodtest"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

const brief = "A 60-second spot for the acme-shoes spring line: runners at dawn, close-ups of the new sole."

func check(ok bool, format string, args ...any) {
	if !ok {
		panic(checkFailed(fmt.Sprintf(format, args...)))
	}
}

type checkFailed string

// step names the scenario step running, for the failure message.
var step = "step 1"

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func expectCode(err error, code codes.Code) *aiprod.Error {
	e, ok := aiprod.AsError(err)
	check(ok && e.Code() == code, "want %s, got %v", code, err)
	return e
}

// readRecorder records the read_offset of a ByteStream.Read.
type readRecorder struct {
	grpc.ClientStream
	offsets *[]int64
}

func (r readRecorder) SendMsg(m any) error {
	if req, ok := m.(*bytestream.ReadRequest); ok {
		*r.offsets = append(*r.offsets, req.ReadOffset)
	}
	return r.ClientStream.SendMsg(m)
}

func fileSHA256(path string) string {
	f := must(os.Open(path))
	defer f.Close()
	h := sha256.New()
	must(io.Copy(h, f))
	return hex.EncodeToString(h.Sum(nil))
}

// checkDownload checks that the file at path is want (from GetJob): the same size and SHA-256, an
// MP4 with frames.
func checkDownload(path string, got, want *aiprodv1.VideoArtifact, what string) {
	check(got.ResourceName == want.ResourceName, "%s: resource %s != %s", what, got.ResourceName, want.ResourceName)
	check(got.Sha256 == want.Sha256, "%s: downloaded version %s != GetJob's %s", what, got.Sha256, want.Sha256)
	info := must(os.Stat(path))
	check(info.Size() > 0 && uint64(info.Size()) == want.SizeBytes, "%s: %d bytes on disk, size_bytes %d", what, info.Size(), want.SizeBytes)
	check(fileSHA256(path) == want.Sha256, "%s: SHA-256 of the file != %s", what, want.Sha256)
	head := make([]byte, 8)
	f := must(os.Open(path))
	defer f.Close()
	must(io.ReadFull(f, head))
	check(string(head[4:8]) == "ftyp", "%s: an MP4 (ftyp at bytes 4..8), got %q", what, head)
	check(want.FrameCount > 0, "%s: frame_count > 0, got %d", what, want.FrameCount)
	check(want.MimeType == "video/mp4", "%s: mime_type video/mp4, got %q", what, want.MimeType)
}

// scenario runs the 11 steps; a failed check or an unexpected error panics (see conformance).
func scenario(ctx context.Context) string {
	endpoint, key := os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY")
	// Connections go through a dialer that can cut them, so that step 7 drops the TCP connection.
	dialer := aiprodtest.NewDropDialer()
	var readOffsets []int64 // of every ByteStream.Read (step 11 checks the resumed one)
	recordReads := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err == nil && method == "/google.bytestream.ByteStream/Read" {
			s = readRecorder{s, &readOffsets}
		}
		return s, err
	}
	client := must(aiprod.New(endpoint, key, aiprod.WithDialOptions(grpc.WithContextDialer(dialer.DialContext),
		grpc.WithChainStreamInterceptor(recordReads))))
	defer client.Close()
	var events []*aiprodv1.JobEvent

	// 1. presets
	step = "step 1: presets"
	presets := must(client.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})).Presets
	var ids []string
	for _, p := range presets {
		ids = append(ids, p.PresetId)
	}
	slices.Sort(ids)
	check(slices.Equal(ids, []string{"brand_campaign", "premium_spot", "quick_social"}), "3 presets, got %v", ids)

	// 2. estimate
	step = "step 2: estimate"
	est := must(client.CostEstimator.EstimateCost(ctx, &aiprodv1.EstimateCostRequest{PresetId: "brand_campaign", DurationS: proto.Uint32(60)}))
	check(est.Recommended.GetTotalMicros() > 0, "recommended.total_micros > 0")
	check(est.Recommended.GetGuaranteedMaxMicros() >= est.Recommended.GetTotalMicros(), "guaranteed max >= total")
	backends := map[aiprodv1.Backend]bool{}
	for _, o := range est.Options {
		backends[o.Backend] = true
	}
	check(len(est.Options) == 3 && len(backends) == 3, "3 options, one per backend: %v", est.Options)

	// 3. create, idempotently
	step = "step 3: create, idempotently"
	req := &aiprodv1.CreateJobRequest{
		RequestId: "conformance-go-" + rand.Text(),
		PresetId:  "brand_campaign",
		Brief:     brief,
		BrandId:   "acme-shoes",
		DurationS: proto.Uint32(60),
		Labels:    map[string]string{"campaign": "conformance"},
	}
	job := must(client.Render.CreateJob(ctx, req)).Job
	check(job.State == aiprodv1.JobState_JOB_STATE_QUEUED, "new job QUEUED, got %s", job.State)
	again := must(client.Render.CreateJob(ctx, req)).Job
	check(again.JobId == job.JobId, "same request_id, same job: %s != %s", again.JobId, job.JobId)

	// 4. watch until AWAITING_APPROVAL, then read the manifest
	step = "step 4: watch until AWAITING_APPROVAL, then read the manifest"
	for ev, err := range client.WatchJob(ctx, job.JobId, 0) {
		must(0, err)
		events = append(events, ev)
		if ev.State == aiprodv1.JobState_JOB_STATE_AWAITING_APPROVAL {
			break
		}
	}
	check(len(events) > 0 && events[len(events)-1].State == aiprodv1.JobState_JOB_STATE_AWAITING_APPROVAL, "reached AWAITING_APPROVAL")
	lastSeen := events[len(events)-1].Sequence
	manifest := must(client.Icc.GetManifest(ctx, &aiprodv1.GetManifestRequest{JobId: job.JobId})).Manifest
	check(len(manifest.Shots) > 0, "manifest has shots")
	check(manifest.Etag != "" && manifest.Revision == 1, "etag set and revision 1, got %d", manifest.Revision)

	// 5. edit the manifest, then try again with the stale etag
	step = "step 5: edit the manifest, then try again with the stale etag"
	edit := &aiprodv1.Manifest{AudioStyle: "upbeat acoustic", Shots: manifest.Shots}
	edit.Shots[0].Description = "Close-up of the new sole hitting wet asphalt at sunrise, slow motion."
	mask := &fieldmaskpb.FieldMask{Paths: []string{"audio_style", "shots"}}
	updated := must(client.Icc.UpdateManifest(ctx, &aiprodv1.UpdateManifestRequest{JobId: job.JobId, Manifest: edit, UpdateMask: mask, Etag: manifest.Etag}))
	check(updated.Manifest.Revision == 2, "revision 2, got %d", updated.Manifest.Revision)
	check(updated.Manifest.Etag != "" && updated.Manifest.Etag != manifest.Etag, "a new etag")
	check(updated.Quote.GetTotalMicros() > 0, "a new quote")
	check(updated.Manifest.AudioStyle == "upbeat acoustic", "audio_style updated")
	_, err := client.Icc.UpdateManifest(ctx, &aiprodv1.UpdateManifestRequest{JobId: job.JobId, Manifest: edit,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"audio_style"}}, Etag: manifest.Etag})
	expectCode(err, codes.Aborted)

	// 6. approve
	step = "step 6: approve"
	approved := must(client.Icc.ApproveManifest(ctx, &aiprodv1.ApproveManifestRequest{JobId: job.JobId, Etag: updated.Manifest.Etag})).Job
	check(approved.State == aiprodv1.JobState_JOB_STATE_RENDERING, "RENDERING after approval, got %s", approved.State)

	// 7. resume the watch; after 2 events cut the connection: WatchJob reconnects by itself
	step = "step 7: resume the watch; after 2 events cut the connection: WatchJob reconnects by itself"
	dials, received := dialer.Dials(), 0
	for ev, err := range client.WatchJob(ctx, job.JobId, lastSeen) {
		must(0, err)
		events = append(events, ev)
		if received++; received == 2 {
			dialer.Drop()
		}
	}
	reconnects := dialer.Dials() - dials
	check(reconnects >= 1, "the watch reconnected after the dropped connection")
	for i, ev := range events {
		check(ev.Sequence == uint64(i+1), "sequences 1..N without gap or duplicate: #%d is %d", i, ev.Sequence)
	}
	var states []aiprodv1.JobState
	for _, ev := range events {
		if !slices.Contains(states, ev.State) {
			states = append(states, ev.State)
		}
	}
	want := []aiprodv1.JobState{
		aiprodv1.JobState_JOB_STATE_QUEUED, aiprodv1.JobState_JOB_STATE_PLANNING, aiprodv1.JobState_JOB_STATE_AWAITING_APPROVAL,
		aiprodv1.JobState_JOB_STATE_RENDERING, aiprodv1.JobState_JOB_STATE_QUALITY_CHECK, aiprodv1.JobState_JOB_STATE_DELIVERED,
	}
	check(slices.Equal(states, want), "states in order: %v", states)
	check(events[len(events)-1].State == aiprodv1.JobState_JOB_STATE_DELIVERED, "last event DELIVERED")

	// 8. certified costs
	step = "step 8: certified costs"
	report := must(client.CostEstimator.GetJobCosts(ctx, &aiprodv1.GetJobCostsRequest{JobId: job.JobId})).Report
	check(report.Certified && report.WithinGuarantee, "report certified and within guarantee")
	check(report.BilledMicros <= report.GuaranteedMaxMicros, "billed <= guaranteed max")
	check(report.MeteredMicros > 0, "metered > 0")

	// 9. validation errors carry field violations
	step = "step 9: validation errors carry field violations"
	// request_id is left empty: the SDK fills it (so that retries carry the same key).
	_, err = client.Render.CreateJob(ctx, &aiprodv1.CreateJobRequest{PresetId: "quick_social", Brief: "", DurationS: proto.Uint32(1000)})
	fields := map[string]bool{}
	for _, v := range expectCode(err, codes.InvalidArgument).FieldViolations() {
		fields[v.Field] = true
	}
	check(fields["brief"] && fields["duration_s"] && !fields["request_id"], "violations on brief and duration_s only: %v", fields)

	// 10. unknown and foreign jobs are NOT_FOUND alike
	step = "step 10: unknown and foreign jobs are NOT_FOUND alike"
	_, err = client.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: "job_does_not_exist"})
	expectCode(err, codes.NotFound)
	other := must(aiprod.New(endpoint, os.Getenv("AIPROD_OTHER_API_KEY")))
	defer other.Close()
	_, err = other.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: job.JobId})
	expectCode(err, codes.NotFound)

	// 11. download the final cut and one shot's clip (ByteStream Read, verified); another tenant's
	// read of the same resources is NOT_FOUND
	step = "step 11: download the video and a shot clip"
	delivered := must(client.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: job.JobId})).Job
	check(delivered.Video.GetResourceName() != "", "a DELIVERED job has a video")
	check(len(delivered.Shots) > 0, "a DELIVERED job lists its shots")
	shot := delivered.Shots[0]
	check(shot.Rendered && shot.Clip.GetResourceName() != "", "shot %s has a clip", shot.ShotId)
	tmp := must(os.MkdirTemp("", "aiprod-go-conformance-"))
	defer os.RemoveAll(tmp)
	videoPath := filepath.Join(tmp, "video.mp4")
	// The connection is cut after the first chunk: the download resumes where it was (unless the
	// whole file was already buffered), and must end with the same bytes.
	dials, cut, reads := dialer.Dials(), false, len(readOffsets)
	video := must(client.DownloadVideo(ctx, job.JobId, videoPath, aiprod.WithProgress(func(written, _ int64) {
		if !cut {
			cut = dialer.Drop() > 0
		}
	})))
	checkDownload(videoPath, video, delivered.Video, "video")
	check(cut, "a connection to cut during the download")
	downloadReconnects, videoReads := dialer.Dials()-dials, readOffsets[reads:]
	check(len(videoReads) >= 1 && videoReads[0] == 0, "the download reads from 0: %v", videoReads)
	for i := 1; i < len(videoReads); i++ {
		check(videoReads[i] > videoReads[i-1], "resumed reads go forward: %v", videoReads)
	}
	clipPath := filepath.Join(tmp, "clip.mp4")
	clip := must(client.DownloadShotClip(ctx, job.JobId, shot.ShotId, clipPath))
	checkDownload(clipPath, clip, shot.Clip, "clip of "+shot.ShotId)
	entries := must(os.ReadDir(tmp))
	check(len(entries) == 2, "no .part file left: %v", entries)
	var head []byte
	for data, err := range client.ReadResource(ctx, video.ResourceName, 0, aiprod.WithReadLimit(8)) {
		head = append(head, must(data, err)...)
	}
	check(len(head) == 8 && bytes.Equal(head[4:8], []byte("ftyp")), "ReadResource with a read limit of 8: %q", head)
	for _, name := range []string{video.ResourceName, video.ResourceName + "@" + video.Sha256, clip.ResourceName} {
		var rerr error
		for _, err := range other.ReadResource(ctx, name, 0) {
			if err != nil {
				rerr = err
				break
			}
		}
		expectCode(rerr, codes.NotFound)
	}

	return fmt.Sprintf("job %s DELIVERED after %d events (%d reconnect(s)), billed $%.2f of max $%.2f, "+
		"video %d bytes %dx%d %d frames (%d reconnect(s) while downloading, reads at %v)",
		job.JobId, len(events), reconnects, float64(report.BilledMicros)/1e6, float64(report.GuaranteedMaxMicros)/1e6,
		video.SizeBytes, video.Width, video.Height, video.FrameCount, downloadReconnects, videoReads)
}

// loadEnv reads KEY=VALUE lines (scripts/test-server.sh's env file) into the environment.
func loadEnv(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			if err := os.Setenv(k, v); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}

// inTempDir runs fn with a new temporary directory as the current directory, then removes it.
func inTempDir(fn func() error) error {
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "aiprod-go-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chdir(tmp); err != nil {
		return err
	}
	defer func() { _ = os.Chdir(cwd) }()
	return fn()
}
