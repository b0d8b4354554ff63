package aiprod_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	"github.com/aiprod/aiprod/sdk/go/aiprod/aiprodtest"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// size is 4 full chunks and a short one.
const size = 4*chunk + 1000

var fastDownload = aiprod.WithDownloadRetry(fast)

// downloaded checks that path holds want and that no .part file is left.
func downloaded(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, sha %s; want %d bytes, sha %s", path, len(got), sha(got), len(want), sha(want))
	}
	if _, err := os.Stat(path + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s.part left behind: %v", path, err)
	}
}

// nothingWritten checks that neither path nor path.part exists.
func nothingWritten(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{path, path + ".part"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a failed download (%v)", p, err)
		}
	}
}

func offsets(reads []fakeRead) []int64 {
	var out []int64
	for _, r := range reads {
		out = append(out, r.offset)
	}
	return out
}

func TestDownloadVideo(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(1, size)
	store.setJob(store.videoJob("job_ok", data))
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	var last, total int64
	video, err := c.DownloadVideo(context.Background(), "job_ok", path, aiprod.WithProgress(func(w, n int64) { last, total = w, n }))
	if err != nil {
		t.Fatal(err)
	}
	downloaded(t, path, data)
	if video.GetSha256() != sha(data) || video.GetSizeBytes() != size || video.GetResourceName() != "jobs/job_ok/video" {
		t.Fatalf("artifact %v", video)
	}
	if last != size || total != size {
		t.Fatalf("progress ended at %d/%d", last, total)
	}
	reads := store.readLog()
	if len(reads) != 1 || reads[0].name != "jobs/job_ok/video@"+sha(data) || reads[0].offset != 0 {
		t.Fatalf("reads %v: want one read of the pinned version from 0", reads)
	}
}

func TestDownloadResumesAfterDroppedStream(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(2, size)
	store.setJob(store.videoJob("job_drop", data))
	store.setMode("jobs/job_drop/video", "drop-stream")
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	if _, err := c.DownloadVideo(context.Background(), "job_drop", path, fastDownload); err != nil {
		t.Fatal(err)
	}
	downloaded(t, path, data)
	if o := offsets(store.readLog()); !slices.Equal(o, []int64{0, 2 * chunk}) {
		t.Fatalf("read offsets %v, want [0 %d]", o, 2*chunk)
	}
}

func TestDownloadResumesAfterDroppedConnection(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(3, size)
	store.setJob(store.videoJob("job_conn", data))
	store.setMode("jobs/job_conn/video", "drop-conn")
	d := aiprodtest.NewDropDialer()
	c := newClient(t, ep, aiprod.WithDialOptions(grpc.WithContextDialer(d.DialContext)))
	path := filepath.Join(t.TempDir(), "video.mp4")
	dropped := 0
	_, err := c.DownloadVideo(context.Background(), "job_conn", path, fastDownload, aiprod.WithProgress(func(w, _ int64) {
		if w == 2*chunk && dropped == 0 {
			dropped = d.Drop()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 || d.Dials() < 2 {
		t.Fatalf("dropped %d connections, %d dials: the connection was not cut and redialed", dropped, d.Dials())
	}
	downloaded(t, path, data)
	if o := offsets(store.readLog()); !slices.Equal(o, []int64{0, 2 * chunk}) {
		t.Fatalf("read offsets %v, want [0 %d]", o, 2*chunk)
	}
}

func TestDownloadRetryBudgetResetsOnProgress(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(4, size)
	store.setJob(store.videoJob("job_trickle", data))
	store.setMode("jobs/job_trickle/video", "trickle") // 5 reads, 4 failures: more than MaxAttempts 3
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	if _, err := c.DownloadVideo(context.Background(), "job_trickle", path, fastDownload); err != nil {
		t.Fatal(err)
	}
	downloaded(t, path, data)
	if o := offsets(store.readLog()); !slices.Equal(o, []int64{0, chunk, 2 * chunk, 3 * chunk, 4 * chunk}) {
		t.Fatalf("read offsets %v", o)
	}
}

func TestDownloadGivesUpWithoutProgress(t *testing.T) {
	ep, _, store := startFakeStore(t)
	store.setJob(store.videoJob("job_down", testBytes(5, size)))
	store.setMode("jobs/job_down/video", "down")
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	_, err := c.DownloadVideo(context.Background(), "job_down", path, fastDownload)
	if aiprod.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "gave up after 3 retries") {
		t.Fatalf("got %v", err)
	}
	if n := len(store.readLog()); n != 4 {
		t.Fatalf("%d reads, want 4 (1 + 3 retries)", n)
	}
	nothingWritten(t, path)
}

func TestDownloadKeepsTheOldFileOnFailure(t *testing.T) {
	ep, _, store := startFakeStore(t)
	store.setJob(store.videoJob("job_down", testBytes(5, size)))
	store.setMode("jobs/job_down/video", "down")
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	if err := os.WriteFile(path, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DownloadVideo(context.Background(), "job_down", path, fastDownload); err == nil {
		t.Fatal("download succeeded")
	}
	downloaded(t, path, []byte("previous"))
}

func TestDownloadRetriesResourceExhaustedOnlyWithRetryInfo(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(6, size)
	store.setJob(store.videoJob("job_busy", data))
	store.setMode("jobs/job_busy/video", "busy")
	store.setJob(store.videoJob("job_quota", data))
	store.setMode("jobs/job_quota/video", "quota")
	c := newClient(t, ep)
	dir := t.TempDir()
	if _, err := c.DownloadVideo(context.Background(), "job_busy", filepath.Join(dir, "busy.mp4"), fastDownload); err != nil {
		t.Fatal(err)
	}
	downloaded(t, filepath.Join(dir, "busy.mp4"), data)
	_, err := c.DownloadVideo(context.Background(), "job_quota", filepath.Join(dir, "quota.mp4"), fastDownload)
	if aiprod.Code(err) != codes.ResourceExhausted {
		t.Fatalf("got %v", err)
	}
	nothingWritten(t, filepath.Join(dir, "quota.mp4"))
	if n := len(store.readLog()); n != 3 {
		t.Fatalf("%d reads, want 2 for job_busy and 1 for job_quota", n)
	}
}

func TestDownloadStartsOverOnceAfterARevision(t *testing.T) {
	ep, _, store := startFakeStore(t)
	v1, v2 := testBytes(7, size), testBytes(8, size-5000)
	name := "jobs/job_rev/video"
	store.put(name, v1, "")
	store.put(name, v2, "")
	store.replace(name + "@" + sha(v1))
	job := func(data []byte) *aiprodv1.Job {
		return &aiprodv1.Job{JobId: "job_rev", State: aiprodv1.JobState_JOB_STATE_AWAITING_FINAL_APPROVAL, Video: artifact(name, data)}
	}
	store.setJob(job(v1), job(v2))
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	video, err := c.DownloadVideo(context.Background(), "job_rev", path, fastDownload)
	if err != nil {
		t.Fatal(err)
	}
	downloaded(t, path, v2)
	if video.GetSha256() != sha(v2) || store.getJobCalls("job_rev") != 2 {
		t.Fatalf("artifact %s after %d GetJob", video.GetSha256(), store.getJobCalls("job_rev"))
	}
	reads := store.readLog()
	if len(reads) != 2 || reads[0].name != name+"@"+sha(v1) || reads[1].name != name+"@"+sha(v2) || reads[1].offset != 0 {
		t.Fatalf("reads %v", reads)
	}

	// Replaced again while it restarts: the second FAILED_PRECONDITION is returned.
	store.replace(name + "@" + sha(v2))
	store.setJob(job(v2))
	_, err = c.DownloadVideo(context.Background(), "job_rev", path+"2", fastDownload)
	if aiprod.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v", err)
	}
	nothingWritten(t, path+"2")
}

func TestDownloadDetectsAMismatch(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(9, size)
	name := "jobs/job_bad/video"
	wrong := artifact(name, testBytes(10, size)) // same size, another hash
	store.put(name, data, wrong.GetSha256())
	store.setJob(&aiprodv1.Job{JobId: "job_bad", State: aiprodv1.JobState_JOB_STATE_DELIVERED, Video: wrong})
	c := newClient(t, ep)
	path := filepath.Join(t.TempDir(), "video.mp4")
	_, err := c.DownloadVideo(context.Background(), "job_bad", path, fastDownload)
	if !errors.Is(err, aiprod.ErrIntegrity) || !strings.Contains(err.Error(), "has SHA-256 "+sha(data)) {
		t.Fatalf("got %v", err)
	}
	nothingWritten(t, path)

	short := artifact(name, data)
	short.SizeBytes = size - 1 // the server sends more than size_bytes
	store.setJob(&aiprodv1.Job{JobId: "job_bad", State: aiprodv1.JobState_JOB_STATE_DELIVERED, Video: short})
	store.put(name, data, "")
	if _, err := c.DownloadVideo(context.Background(), "job_bad", path, fastDownload); !errors.Is(err, aiprod.ErrIntegrity) {
		t.Fatalf("got %v", err)
	}
	nothingWritten(t, path)
}

func TestDownloadNotAvailableYet(t *testing.T) {
	ep, _, store := startFakeStore(t)
	clip := testBytes(11, chunk+7)
	clipName := "jobs/job_r/shots/shot_1/clip"
	store.put(clipName, clip, "")
	store.setJob(&aiprodv1.Job{JobId: "job_r", State: aiprodv1.JobState_JOB_STATE_RENDERING, Shots: []*aiprodv1.ShotStatus{
		{ShotId: "shot_1", Rendered: true, Clip: artifact(clipName, clip)},
		{ShotId: "shot_2"},
	}})
	store.setJob(&aiprodv1.Job{JobId: "job_q", State: aiprodv1.JobState_JOB_STATE_QUEUED})
	c := newClient(t, ep)
	dir := t.TempDir()
	ctx := context.Background()

	_, err := c.DownloadVideo(ctx, "job_r", filepath.Join(dir, "video.mp4"))
	var na *aiprod.NotAvailableError
	if !errors.As(err, &na) || na.State != aiprodv1.JobState_JOB_STATE_RENDERING || na.JobID != "job_r" || na.ShotID != "" {
		t.Fatalf("got %#v", err)
	}
	if !errors.Is(err, aiprod.ErrNotAvailable) || aiprod.Code(err) != codes.FailedPrecondition ||
		err.Error() != "aiprod: the video of job job_r is not available yet (job state JOB_STATE_RENDERING); "+
			"it is set once the cut is assembled (AWAITING_FINAL_APPROVAL or DELIVERED)" {
		t.Fatalf("got %v (code %s)", err, aiprod.Code(err))
	}
	nothingWritten(t, filepath.Join(dir, "video.mp4"))

	// The rendered shot's clip is readable already; the other is not, and an unknown shot is NOT_FOUND.
	clipArt, err := c.DownloadShotClip(ctx, "job_r", "shot_1", filepath.Join(dir, "shot_1.mp4"))
	if err != nil || clipArt.GetResourceName() != clipName {
		t.Fatalf("%v %v", clipArt, err)
	}
	downloaded(t, filepath.Join(dir, "shot_1.mp4"), clip)
	_, err = c.DownloadShotClip(ctx, "job_r", "shot_2", filepath.Join(dir, "shot_2.mp4"))
	if !errors.As(err, &na) || na.ShotID != "shot_2" || !strings.Contains(err.Error(), "the clip of shot shot_2 of job job_r is not available yet") {
		t.Fatalf("got %v", err)
	}
	_, err = c.DownloadShotClip(ctx, "job_r", "shot_9", filepath.Join(dir, "shot_9.mp4"))
	if aiprod.Code(err) != codes.NotFound || errors.Is(err, aiprod.ErrNotAvailable) {
		t.Fatalf("got %v", err)
	}
	_, err = c.DownloadShotClip(ctx, "job_q", "shot_1", filepath.Join(dir, "q.mp4"))
	if !errors.Is(err, aiprod.ErrNotAvailable) {
		t.Fatalf("got %v", err)
	}
	_, err = c.DownloadVideo(ctx, "job_missing", filepath.Join(dir, "missing.mp4"))
	if aiprod.Code(err) != codes.NotFound {
		t.Fatalf("got %v", err)
	}
	store.setJob(&aiprodv1.Job{JobId: "job_c", State: aiprodv1.JobState_JOB_STATE_CANCELLED})
	_, err = c.DownloadVideo(ctx, "job_c", filepath.Join(dir, "c.mp4"))
	if !errors.Is(err, aiprod.ErrNotAvailable) || err.Error() != "aiprod: the video of job job_c is not available: the job ended JOB_STATE_CANCELLED without a video" {
		t.Fatalf("got %v", err)
	}
	for _, p := range []string{"shot_2.mp4", "shot_9.mp4", "q.mp4", "missing.mp4", "c.mp4"} {
		nothingWritten(t, filepath.Join(dir, p))
	}
}

func TestReadResource(t *testing.T) {
	ep, _, store := startFakeStore(t)
	data := testBytes(12, size)
	job := store.videoJob("job_read", data)
	store.setJob(job)
	store.setMode("jobs/job_read/video", "drop-stream")
	c := newClient(t, ep)
	ctx := context.Background()
	name := job.GetVideo().GetResourceName() + "@" + job.GetVideo().GetSha256()
	var got []byte
	for b, err := range c.ReadResource(ctx, name, 1000, fastDownload) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data[1000:]) {
		t.Fatalf("read %d bytes from offset 1000, want %d", len(got), len(data)-1000)
	}
	if o := offsets(store.readLog()); !slices.Equal(o, []int64{1000, 1000 + 2*chunk}) {
		t.Fatalf("read offsets %v", o)
	}
	for _, tc := range []struct {
		name   string
		offset int64
		code   codes.Code
	}{
		{"jobs/job_nope/video", 0, codes.NotFound},
		{name, size + 1, codes.OutOfRange},
		{name, -1, codes.OutOfRange},
	} {
		n := 0
		var err error
		for _, e := range c.ReadResource(ctx, tc.name, tc.offset, fastDownload) {
			n++
			err = e
		}
		if n != 1 || aiprod.Code(err) != tc.code {
			t.Errorf("%s at %d: %d items, %v; want one %s", tc.name, tc.offset, n, err, tc.code)
		}
	}
	// A limit spans the resumed reads: 3 chunks from 1000 with a drop after 2.
	limited := store.videoJob("job_limit", data)
	store.setMode("jobs/job_limit/video", "drop-stream")
	got = nil
	n := len(store.readLog())
	for b, err := range c.ReadResource(ctx, limited.GetVideo().GetResourceName()+"@"+sha(data), 1000, fastDownload, aiprod.WithReadLimit(3*chunk-5)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data[1000:1000+3*chunk-5]) {
		t.Fatalf("read %d bytes with a limit of %d", len(got), 3*chunk-5)
	}
	if reads := store.readLog()[n:]; len(reads) != 2 || reads[0].offset != 1000 || reads[0].limit != 3*chunk-5 ||
		reads[1].offset != 1000+2*chunk || reads[1].limit != chunk-5 {
		t.Fatalf("reads %v", reads)
	}
	// Breaking out early cancels the stream without an error.
	for range c.ReadResource(ctx, name, 0) {
		break
	}
}
