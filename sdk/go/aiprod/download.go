package aiprod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// ErrNotAvailable is matched (errors.Is) by a *NotAvailableError: the job has no such artifact yet.
var ErrNotAvailable = errors.New("aiprod: artifact not available yet")

// ErrIntegrity is matched (errors.Is) by a download whose bytes do not match the artifact's
// size_bytes or sha256. The partial file is deleted.
var ErrIntegrity = errors.New("aiprod: downloaded bytes do not match the artifact")

// NotAvailableError is returned by DownloadVideo and DownloadShotClip when the job has no video
// (it is set from AWAITING_FINAL_APPROVAL on) or the shot has no clip (it is set once the shot
// renders), yet or at all (a CANCELLED or FAILED job). It matches ErrNotAvailable, and its
// GRPCStatus is FAILED_PRECONDITION.
type NotAvailableError struct {
	// JobID is the job asked for.
	JobID string
	// ShotID is the shot asked for; empty for the job's video.
	ShotID string
	// State is the job's state when it was asked.
	State aiprodv1.JobState
}

// Error implements error. It says why: not yet (with the job's state and when the artifact comes),
// never (the job was CANCELLED or FAILED first), or missing although the job is past that point.
func (e *NotAvailableError) Error() string {
	what, name, when := "the video of job "+e.JobID, "video", "once the cut is assembled (AWAITING_FINAL_APPROVAL or DELIVERED)"
	if e.ShotID != "" {
		what, name, when = fmt.Sprintf("the clip of shot %s of job %s", e.ShotID, e.JobID), "clip", "once the shot renders"
	}
	switch e.State {
	case aiprodv1.JobState_JOB_STATE_CANCELLED, aiprodv1.JobState_JOB_STATE_FAILED:
		return fmt.Sprintf("aiprod: %s is not available: the job ended %s without a %s", what, e.State, name)
	case aiprodv1.JobState_JOB_STATE_AWAITING_FINAL_APPROVAL, aiprodv1.JobState_JOB_STATE_DELIVERED:
		if e.ShotID == "" {
			return fmt.Sprintf("aiprod: %s is not available: the job is %s but GetJob reported no video", what, e.State)
		}
	}
	return fmt.Sprintf("aiprod: %s is not available yet (job state %s); it is set %s", what, e.State, when)
}

// Is makes errors.Is(err, ErrNotAvailable) true.
func (e *NotAvailableError) Is(target error) bool { return target == ErrNotAvailable }

// GRPCStatus makes aiprod.Code and status.Code report FAILED_PRECONDITION.
func (e *NotAvailableError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}

// DownloadOption configures one download or ReadResource call.
type DownloadOption func(*downloadOptions)

type downloadOptions struct {
	retry    RetryPolicy
	progress func(written, total int64)
	limit    int64
}

// WithDownloadRetry sets how a download or ReadResource resumes after a transient failure
// (default DefaultRetryPolicy). MaxAttempts counts retries in a row that read no new byte.
func WithDownloadRetry(p RetryPolicy) DownloadOption {
	return func(o *downloadOptions) { o.retry = p }
}

// WithProgress calls fn after each chunk a download writes, with the bytes written so far and the
// artifact's size. It restarts from 0 if the file was replaced by a revision during the download.
func WithProgress(fn func(written, total int64)) DownloadOption {
	return func(o *downloadOptions) { o.progress = fn }
}

// WithReadLimit makes ReadResource stop after n bytes (read_limit; 0, the default, reads to the end
// of the resource). Downloads ignore it.
func WithReadLimit(n int64) DownloadOption {
	return func(o *downloadOptions) { o.limit = n }
}

func newDownloadOptions(opts []DownloadOption) downloadOptions {
	o := downloadOptions{retry: DefaultRetryPolicy}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// transientRead reports whether a broken Read is worth resuming: UNAVAILABLE, a lost connection
// or reset stream, or RESOURCE_EXHAUSTED when the server said when to retry (RetryInfo).
func transientRead(e *Error) bool {
	if e.Code() == codes.ResourceExhausted {
		_, ok := e.RetryDelay()
		return ok
	}
	return resumable(e)
}

// ReadResource streams the bytes of a google.bytestream resource (e.g. a VideoArtifact's
// resource_name, optionally pinned with "@" + sha256) from offset to its end (or for
// WithReadLimit bytes), in the server's chunks (256 KiB). When the stream breaks with
// UNAVAILABLE, a lost connection, a reset stream or RESOURCE_EXHAUSTED with RetryInfo, it reads
// again from the first byte not yet yielded, with bounded exponential back-off; after the retry policy's MaxAttempts retries in a row without a
// new byte it yields the last error and ends. Other errors (NOT_FOUND, OUT_OF_RANGE,
// FAILED_PRECONDITION for a pinned version that was replaced, ctx cancelled...) are yielded at
// once as *Error. The stream has no default deadline: bound it with ctx.
//
// A yielded slice belongs to the caller. Breaking out of the loop cancels the stream.
//
//	for chunk, err := range client.ReadResource(ctx, video.GetResourceName(), 0) {
//		if err != nil { return err }
//		w.Write(chunk)
//	}
func (c *Client) ReadResource(ctx context.Context, resourceName string, offset int64, opts ...DownloadOption) iter.Seq2[[]byte, error] {
	o := newDownloadOptions(opts)
	policy := o.retry
	return func(yield func([]byte, error) bool) {
		pos := offset
		failures := 0
		for {
			limit := int64(0)
			if o.limit > 0 {
				if limit = o.limit - (pos - offset); limit <= 0 {
					return
				}
			}
			progressed, err := c.readOnce(ctx, resourceName, &pos, limit, yield)
			if err == nil || err == errStop {
				return
			}
			if ctx.Err() != nil {
				yield(nil, FromError(ctx.Err()))
				return
			}
			e := FromError(err)
			if !transientRead(e) {
				yield(nil, e)
				return
			}
			if progressed {
				failures = 0
			}
			failures++
			if failures > policy.MaxAttempts {
				yield(nil, &Error{st: status.New(e.Code(), fmt.Sprintf(
					"read of %s gave up after %d retries without progress at byte %d: %s",
					resourceName, policy.MaxAttempts, pos, e.Message()))})
				return
			}
			hint, _ := e.RetryDelay()
			t := time.NewTimer(policy.delay(failures, hint))
			select {
			case <-ctx.Done():
				t.Stop()
				yield(nil, FromError(ctx.Err()))
				return
			case <-t.C:
			}
		}
	}
}

// readOnce runs one Read stream from *pos (limit bytes at most; 0: no limit), advancing *pos by the
// bytes yielded. It returns nil at the end of the stream, errStop when the consumer stopped, or the
// stream's error, and whether it yielded any byte.
func (c *Client) readOnce(ctx context.Context, name string, pos *int64, limit int64, yield func([]byte, error) bool) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	progressed := false
	stream, err := c.ByteStream.Read(sctx, &bytestream.ReadRequest{ResourceName: name, ReadOffset: *pos, ReadLimit: limit})
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, nil
		}
		if err != nil {
			return progressed, err
		}
		data := resp.GetData()
		if len(data) == 0 {
			continue
		}
		*pos += int64(len(data))
		progressed = true
		if !yield(data, nil) {
			return true, errStop
		}
	}
}

// DownloadVideo downloads the final cut of a job (Job.video) to path and returns its metadata.
//
// It reads the version GetJob reports (resource_name pinned with "@" + sha256) into path+".part",
// streaming to disk and hashing as it goes, resuming from the bytes written after a transient
// failure (see ReadResource and WithDownloadRetry). If a revision replaced the file meanwhile
// (FAILED_PRECONDITION), it starts over once from a fresh GetJob. At the end it checks the size
// and SHA-256 against the artifact (a mismatch is an error matching ErrIntegrity), syncs the file
// and renames it onto path atomically; on any error the .part file is removed and path is left
// as it was. A job without a video yet gives a *NotAvailableError with the job's state.
//
//	video, err := client.DownloadVideo(ctx, jobID, "video.mp4")
func (c *Client) DownloadVideo(ctx context.Context, jobID, path string, opts ...DownloadOption) (*aiprodv1.VideoArtifact, error) {
	return c.download(ctx, path, newDownloadOptions(opts), func(ctx context.Context) (*aiprodv1.VideoArtifact, error) {
		job, err := c.getJob(ctx, jobID)
		if err != nil {
			return nil, err
		}
		if job.GetVideo().GetResourceName() == "" {
			return nil, &NotAvailableError{JobID: jobID, State: job.GetState()}
		}
		return job.GetVideo(), nil
	})
}

// DownloadShotClip downloads the clip of one shot of a job (Job.shots[i].clip, set once the shot
// renders) to path, as DownloadVideo does. An unknown shot is NOT_FOUND; a shot without a clip yet
// gives a *NotAvailableError.
func (c *Client) DownloadShotClip(ctx context.Context, jobID, shotID, path string, opts ...DownloadOption) (*aiprodv1.VideoArtifact, error) {
	return c.download(ctx, path, newDownloadOptions(opts), func(ctx context.Context) (*aiprodv1.VideoArtifact, error) {
		job, err := c.getJob(ctx, jobID)
		if err != nil {
			return nil, err
		}
		for _, s := range job.GetShots() {
			if s.GetShotId() != shotID {
				continue
			}
			if s.GetClip().GetResourceName() == "" {
				return nil, &NotAvailableError{JobID: jobID, ShotID: shotID, State: job.GetState()}
			}
			return s.GetClip(), nil
		}
		if len(job.GetShots()) == 0 {
			// Shots are listed from approval on.
			return nil, &NotAvailableError{JobID: jobID, ShotID: shotID, State: job.GetState()}
		}
		return nil, FromError(status.Errorf(codes.NotFound, "job %s has no shot %s", jobID, shotID))
	})
}

func (c *Client) getJob(ctx context.Context, jobID string) (*aiprodv1.Job, error) {
	resp, err := c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: jobID})
	if err != nil {
		return nil, err
	}
	return resp.GetJob(), nil
}

func (c *Client) download(ctx context.Context, path string, o downloadOptions, locate func(context.Context) (*aiprodv1.VideoArtifact, error)) (art *aiprodv1.VideoArtifact, err error) {
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("aiprod: download: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(part)
		}
	}()
	for restarted := false; ; restarted = true {
		art, err = locate(ctx)
		if err != nil {
			return nil, err
		}
		err = c.fetchInto(ctx, f, art, o)
		if Code(err) == codes.FailedPrecondition && !restarted {
			continue // replaced by a revision: once more with the new version
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("aiprod: download: %w", err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("aiprod: download: %w", err)
	}
	if err = os.Rename(part, path); err != nil {
		return nil, fmt.Errorf("aiprod: download: %w", err)
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = d.Sync() // make the rename durable (best effort)
		_ = d.Close()
	}
	return art, nil
}

// fetchInto writes the artifact's bytes into f from its start, hashing them, and verifies them.
func (c *Client) fetchInto(ctx context.Context, f *os.File, art *aiprodv1.VideoArtifact, o downloadOptions) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("aiprod: download: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("aiprod: download: %w", err)
	}
	name := art.GetResourceName()
	if art.GetSha256() != "" {
		name += "@" + art.GetSha256()
	}
	size := int64(art.GetSizeBytes())
	h := sha256.New()
	var written int64
	for chunk, err := range c.ReadResource(ctx, name, 0, WithDownloadRetry(o.retry)) {
		if err != nil {
			return err
		}
		if written+int64(len(chunk)) > size {
			return fmt.Errorf("%w: %s is longer than its size_bytes %d", ErrIntegrity, name, size)
		}
		if _, err := f.Write(chunk); err != nil {
			return fmt.Errorf("aiprod: download: %w", err)
		}
		h.Write(chunk)
		written += int64(len(chunk))
		if o.progress != nil {
			o.progress(written, size)
		}
	}
	if written != size {
		return fmt.Errorf("%w: %s ended after %d bytes, want size_bytes %d", ErrIntegrity, name, written, size)
	}
	if want := art.GetSha256(); want != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("%w: %s has SHA-256 %s, want %s", ErrIntegrity, name, got, want)
		}
	}
	return nil
}
