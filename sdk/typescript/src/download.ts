import { createHash } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { Code } from "@connectrpc/connect";
import { AiprodError } from "./errors.js";
import { JobState, type Job, type VideoArtifact } from "./gen/aiprod/v1/job_pb.js";
import { sleep } from "./retry.js";
import { cancelled, isResumableError } from "./watch.js";

/** The retry policy of {@link AiprodClient.readResource} and the downloads. */
export interface ReadRetryOptions {
  /**
   * Consecutive failed attempts without a new byte in between before giving up (the counter resets
   * whenever a retry makes progress). Default 8.
   */
  maxRetries?: number;
  /** First retry delay in ms; doubles on each consecutive failure. Default 100. */
  initialBackoffMs?: number;
  /** Longest retry delay in ms. Default 5000. */
  maxBackoffMs?: number;
  /** Called before each retry, e.g. for logging. */
  onRetry?: (info: ReadRetryInfo) => void;
}

/** What {@link ReadRetryOptions.onRetry} receives. */
export interface ReadRetryInfo {
  /** 1 for the first retry after progress, then 2, 3, … */
  attempt: number;
  /** The resource read (or, for a GetJob retry, "" ). */
  resourceName: string;
  /** The offset the next attempt reads from (the bytes received so far). */
  readOffset: bigint;
  /** Why the previous attempt failed. */
  error: AiprodError;
  /** How long the SDK waits before retrying. */
  delayMs: number;
}

/** Options of {@link AiprodClient.readResource}. */
export interface ReadResourceOptions extends ReadRetryOptions {
  /** Offset of the first byte (default 0). */
  readOffset?: bigint | number;
  /** Most bytes to read (default 0: to the end of the resource). */
  readLimit?: bigint | number;
  /** Stops the read; the iterator then throws CANCELLED (DEADLINE_EXCEEDED for `AbortSignal.timeout`). */
  signal?: AbortSignal;
}

/** Options of {@link AiprodClient.downloadVideo} and {@link AiprodClient.downloadShotClip}. */
export interface DownloadOptions extends ReadRetryOptions {
  /** Stops the download (CANCELLED; DEADLINE_EXCEEDED for `AbortSignal.timeout`); the `.part` file is removed. */
  signal?: AbortSignal;
  /** Deadline of the whole download in ms (default none). */
  timeoutMs?: number;
  /** Called after every chunk written. */
  onProgress?: (progress: DownloadProgress) => void;
}

/** What {@link DownloadOptions.onProgress} receives. */
export interface DownloadProgress {
  /** Bytes written to the `.part` file so far. */
  bytesWritten: number;
  /** The artifact's size_bytes. */
  totalBytes: number;
  /** The resource being read (with its pinned version). */
  resourceName: string;
}

/** Opens one ByteStream.Read stream. */
export type OpenReadStream = (
  request: { resourceName: string; readOffset: bigint; readLimit: bigint },
  signal: AbortSignal,
) => AsyncIterable<{ data: Uint8Array }>;

/** Returns the artifact to download (from a fresh GetJob); called again when a revision replaced the file. */
export type FetchArtifact = (signal: AbortSignal | undefined) => Promise<VideoArtifact>;

/**
 * Thrown by the downloads when the job has no such artifact yet (the video before the cut is
 * assembled, a clip before its shot renders). Its code is FAILED_PRECONDITION; `jobState` tells
 * where the job is.
 */
export class ArtifactNotAvailableError extends AiprodError {
  override name = "ArtifactNotAvailableError";
  /** The job. */
  readonly jobId: string;
  /** The shot, for a clip. */
  readonly shotId: string | undefined;
  /** The job's state when it was asked. */
  readonly jobState: JobState;

  constructor(jobId: string, shotId: string | undefined, jobState: JobState, message: string) {
    super(Code.FailedPrecondition, message);
    this.jobId = jobId;
    this.shotId = shotId;
    this.jobState = jobState;
  }
}

/**
 * Whether a failed read may be retried: what {@link isResumableError} resumes (UNAVAILABLE,
 * ABORTED, a dropped connection or a reset stream), and RESOURCE_EXHAUSTED with a RetryInfo delay.
 */
export function isRetryableReadError(err: AiprodError): boolean {
  if (err.code === Code.ResourceExhausted) return err.retryDelayMs !== undefined;
  return isResumableError(err);
}

function backoffMs(failures: number, options: ReadRetryOptions, err: AiprodError): number {
  const initial = options.initialBackoffMs ?? 100;
  const max = options.maxBackoffMs ?? 5000;
  const base = Math.min(max, initial * 2 ** (failures - 1));
  const delay = Math.round(base / 2 + (Math.random() * base) / 2);
  return err.retryDelayMs !== undefined ? Math.max(delay, err.retryDelayMs) : delay;
}

/** Sleeps before a retry; throws the cancellation error if `signal` fires meanwhile. */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, signal);
  } catch {
    throw cancelled(signal as AbortSignal);
  }
}

/**
 * Yields the bytes of a resource from `readOffset` on, in the chunks the server sends, retrying
 * after transient failures and resuming at the first byte not yet yielded: the concatenation of
 * the chunks is exactly the resource's bytes [readOffset, readOffset + readLimit). The engine
 * behind {@link AiprodClient.readResource}; `open` opens one Read stream.
 */
export async function* readResourceChunks(
  open: OpenReadStream,
  resourceName: string,
  options: ReadResourceOptions = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  const maxRetries = options.maxRetries ?? 8;
  const userSignal = options.signal;
  let offset = BigInt(options.readOffset ?? 0);
  const limit = BigInt(options.readLimit ?? 0);
  let remaining = limit > 0n ? limit : undefined;
  let failures = 0;
  for (;;) {
    if (userSignal?.aborted) throw cancelled(userSignal);
    const attempt = new AbortController();
    const forward = (): void => attempt.abort(userSignal?.reason);
    userSignal?.addEventListener("abort", forward, { once: true });
    let failure: AiprodError;
    try {
      for await (const response of open({ resourceName, readOffset: offset, readLimit: remaining ?? 0n }, attempt.signal)) {
        if (userSignal?.aborted) throw cancelled(userSignal);
        let data = response.data;
        if (data.length === 0) continue;
        if (remaining !== undefined && BigInt(data.length) > remaining) data = data.subarray(0, Number(remaining));
        offset += BigInt(data.length);
        if (remaining !== undefined) remaining -= BigInt(data.length);
        failures = 0;
        yield data;
        if (remaining === 0n) return;
      }
      return;
    } catch (e) {
      if (userSignal?.aborted) throw cancelled(userSignal);
      failure = AiprodError.from(e);
      if (!isRetryableReadError(failure)) throw failure;
    } finally {
      userSignal?.removeEventListener("abort", forward);
      attempt.abort();
    }
    failures += 1;
    if (failures > maxRetries) throw failure;
    const delayMs = backoffMs(failures, options, failure);
    options.onRetry?.({ attempt: failures, resourceName, readOffset: offset, error: failure, delayMs });
    await pause(delayMs, userSignal);
  }
}

/** Calls `fn`, retrying transient failures with the same policy as the reads. */
async function withRetries<T>(
  fn: () => Promise<T>,
  options: ReadRetryOptions,
  signal: AbortSignal | undefined,
): Promise<T> {
  const maxRetries = options.maxRetries ?? 8;
  for (let failures = 1; ; failures++) {
    if (signal?.aborted) throw cancelled(signal);
    try {
      return await fn();
    } catch (e) {
      if (signal?.aborted) throw cancelled(signal);
      const err = AiprodError.from(e);
      if (err instanceof ArtifactNotAvailableError || !isRetryableReadError(err) || failures > maxRetries) throw err;
      const delayMs = backoffMs(failures, options, err);
      options.onRetry?.({ attempt: failures, resourceName: "", readOffset: 0n, error: err, delayMs });
      await pause(delayMs, signal);
    }
  }
}

/** The video of a job, or the clear error that it is not there yet. */
export function videoOf(job: Job): VideoArtifact {
  const video = job.video;
  if (video !== undefined && video.resourceName !== "") return video;
  const state = JobState[job.state] ?? String(job.state);
  let message: string;
  switch (job.state) {
    case JobState.CANCELLED:
    case JobState.FAILED:
      message = `job ${job.jobId} has no video: it is ${state}`;
      break;
    case JobState.AWAITING_FINAL_APPROVAL:
    case JobState.DELIVERED:
      message = `job ${job.jobId} is ${state} but GetJob reported no video (Job.video is not set)`;
      break;
    default:
      message =
        `the video of job ${job.jobId} is not available yet (job state ${state}); ` +
        "it is set once the cut is assembled (AWAITING_FINAL_APPROVAL or DELIVERED)";
  }
  throw new ArtifactNotAvailableError(job.jobId, undefined, job.state, message);
}

/** The clip of one shot of a job, or the clear error that it is not there yet. */
export function shotClipOf(job: Job, shotId: string): VideoArtifact {
  const state = JobState[job.state] ?? String(job.state);
  if (job.shots.length === 0) {
    throw new ArtifactNotAvailableError(
      job.jobId,
      shotId,
      job.state,
      `the clip of shot ${shotId} of job ${job.jobId} is not available yet (job state ${state}): ` +
        "the job has no approved shots yet",
    );
  }
  const shot = job.shots.find((s) => s.shotId === shotId);
  if (shot === undefined) {
    throw new AiprodError(
      Code.NotFound,
      `job ${job.jobId} has no shot ${shotId} (shots: ${job.shots.map((s) => s.shotId).join(", ")})`,
    );
  }
  const clip = shot.clip;
  if (clip !== undefined && clip.resourceName !== "") return clip;
  throw new ArtifactNotAvailableError(
    job.jobId,
    shotId,
    job.state,
    `the clip of shot ${shotId} of job ${job.jobId} is not available yet (job state ${state}, ` +
      `shot rendered: ${shot.rendered}, attempts: ${shot.attempts})`,
  );
}

/** The resource name pinned to the artifact's version: "name@sha256". */
export function pinnedResourceName(artifact: VideoArtifact): string {
  return artifact.sha256 === "" ? artifact.resourceName : `${artifact.resourceName}@${artifact.sha256}`;
}

async function writeAll(file: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** fsyncs a directory so that a rename in it survives a crash (best effort: not every OS allows it). */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // e.g. Windows, where directories cannot be opened.
  } finally {
    await handle?.close().catch(() => {});
  }
}

function combinedSignal(options: DownloadOptions): AbortSignal | undefined {
  const signals: AbortSignal[] = [];
  if (options.signal !== undefined) signals.push(options.signal);
  const { timeoutMs } = options;
  if (timeoutMs !== undefined && timeoutMs > 0 && Number.isFinite(timeoutMs)) signals.push(AbortSignal.timeout(timeoutMs));
  if (signals.length <= 1) return signals[0];
  return AbortSignal.any(signals);
}

/**
 * Downloads an artifact to `path`: streams `Read(resource@sha256)` into `path + ".part"` (hashing
 * as it goes), resumes at the bytes written after transient failures, starts over once from a
 * fresh `fetchArtifact` when a revision replaced the file (FAILED_PRECONDITION), then checks the
 * size and SHA-256, fsyncs and renames onto `path`. On any failure the `.part` file is removed.
 * The engine behind {@link AiprodClient.downloadVideo} and {@link AiprodClient.downloadShotClip}.
 */
export async function downloadArtifact(
  fetchArtifact: FetchArtifact,
  openRead: OpenReadStream,
  path: string,
  options: DownloadOptions = {},
): Promise<VideoArtifact> {
  const signal = combinedSignal(options);
  const partPath = `${path}.part`;
  let file: FileHandle | undefined;
  try {
    let artifact = await withRetries(() => fetchArtifact(signal), options, signal);
    file = await open(partPath, "w");
    for (let restarts = 0; ; restarts++) {
      const resourceName = pinnedResourceName(artifact);
      const totalBytes = Number(artifact.sizeBytes);
      const hash = createHash("sha256");
      let written = 0;
      if (restarts > 0) await file.truncate(0);
      try {
        // A stream that ends cleanly short of the size is read again from where it stopped; one
        // that returns nothing more confirms the end, and the size check below reports it.
        for (;;) {
          let received = 0;
          const chunks = readResourceChunks(openRead, resourceName, { ...options, signal, readOffset: written });
          for await (const chunk of chunks) {
            if (written + chunk.length > totalBytes) {
              throw new AiprodError(
                Code.DataLoss,
                `${resourceName}: the server sent more than the ${totalBytes} bytes of size_bytes`,
              );
            }
            await writeAll(file, chunk, written);
            hash.update(chunk);
            written += chunk.length;
            received += chunk.length;
            options.onProgress?.({ bytesWritten: written, totalBytes, resourceName });
          }
          if (written >= totalBytes || received === 0) break;
        }
      } catch (e) {
        if (signal?.aborted) throw cancelled(signal);
        const err = AiprodError.from(e);
        if (err.code === Code.FailedPrecondition && restarts === 0) {
          // A revision replaced the file since GetJob: start over, once, with the new version.
          artifact = await withRetries(() => fetchArtifact(signal), options, signal);
          continue;
        }
        throw err;
      }
      if (written !== totalBytes) {
        throw new AiprodError(
          Code.DataLoss,
          `${resourceName}: downloaded ${written} bytes, but size_bytes is ${totalBytes}`,
        );
      }
      const digest = hash.digest("hex");
      if (artifact.sha256 !== "" && digest !== artifact.sha256.toLowerCase()) {
        throw new AiprodError(
          Code.DataLoss,
          `${resourceName}: the SHA-256 of the downloaded bytes is ${digest}, expected ${artifact.sha256}`,
        );
      }
      await file.sync();
      await file.close();
      file = undefined;
      await rename(partPath, path);
      await syncDirectory(dirname(path));
      return artifact;
    }
  } catch (e) {
    await file?.close().catch(() => {});
    await rm(partPath, { force: true }).catch(() => {});
    if (signal?.aborted) throw cancelled(signal);
    throw AiprodError.from(e);
  }
}
