import { Code } from "@connectrpc/connect";
import { AiprodError } from "./errors.js";
import { JobState, type JobEvent } from "./gen/aiprod/v1/job_pb.js";

/** Options of {@link AiprodClient.watchJob}. */
export interface WatchJobOptions {
  /** Yield only events with a sequence greater than this (0, the default, replays from the start). */
  afterSequence?: bigint | number;
  /**
   * Stops the watch; the iterator then throws a CANCELLED AiprodError (DEADLINE_EXCEEDED for
   * `AbortSignal.timeout(ms)`).
   */
  signal?: AbortSignal;
  /** Consecutive failed attempts (without a new event in between) before giving up. Default 8. */
  maxRetries?: number;
  /** First reconnect delay in ms; doubles on each consecutive failure. Default 100. */
  initialBackoffMs?: number;
  /** Longest reconnect delay in ms. Default 5000. */
  maxBackoffMs?: number;
  /** Called before each reconnect, e.g. for logging. */
  onReconnect?: (info: ReconnectInfo) => void;
}

/** What {@link WatchJobOptions.onReconnect} receives. */
export interface ReconnectInfo {
  /** 1 for the first reconnect after progress, then 2, 3, … */
  attempt: number;
  /** The sequence the next stream resumes after (the last one yielded). */
  afterSequence: bigint;
  /** Why the previous stream stopped. */
  error: AiprodError;
  /** How long the SDK waits before reconnecting. */
  delayMs: number;
}

/** Opens one WatchJob stream. */
export type OpenWatchStream = (
  request: { jobId: string; afterSequence: bigint },
  signal: AbortSignal,
) => AsyncIterable<{ event?: JobEvent | undefined }>;

/**
 * Tells whether the job is already finished at `afterSequence` (terminal, and no event after it);
 * asked when a stream ends cleanly without a terminal event.
 */
export type CheckFinished = (jobId: string, afterSequence: bigint) => Promise<boolean>;

const TERMINAL_STATES: ReadonlySet<JobState> = new Set([
  JobState.DELIVERED,
  JobState.CANCELLED,
  JobState.FAILED,
]);

/** Whether a job state is terminal (DELIVERED, CANCELLED or FAILED). */
export function isTerminalState(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

/**
 * Whether a failed WatchJob stream may be resumed: UNAVAILABLE and ABORTED always; INTERNAL,
 * UNKNOWN, CANCELLED and DEADLINE_EXCEEDED only when the transport produced them (connection loss,
 * HTTP/2 stream reset), not the server.
 */
export function isResumableError(err: AiprodError): boolean {
  switch (err.code) {
    case Code.Unavailable:
    case Code.Aborted:
      return true;
    case Code.Internal:
    case Code.Unknown:
    case Code.Canceled:
    case Code.DeadlineExceeded:
      return err.isTransportError;
    default:
      return false;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it fires first. @internal */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The error a cancelled call throws: CANCELLED, or DEADLINE_EXCEEDED for a timeout signal. @internal */
export function cancelled(signal: AbortSignal): AiprodError {
  const reason: unknown = signal.reason;
  if (reason instanceof AiprodError) return reason;
  const message = reason instanceof Error ? reason.message : "cancelled";
  const code = reason instanceof Error && reason.name === "TimeoutError" ? Code.DeadlineExceeded : Code.Canceled;
  return new AiprodError(code, message, { cause: reason });
}

/**
 * Yields a job's events from `afterSequence` on, reconnecting after transient failures and
 * resuming after the last yielded sequence, so that no event is skipped or yielded twice. Ends
 * after the terminal event (DELIVERED, CANCELLED, FAILED). The engine behind
 * {@link AiprodClient.watchJob}; `open` opens one stream.
 */
export async function* watchJobEvents(
  open: OpenWatchStream,
  jobId: string,
  options: WatchJobOptions = {},
  checkFinished?: CheckFinished,
): AsyncGenerator<JobEvent, void, undefined> {
  const maxRetries = options.maxRetries ?? 8;
  const initialBackoffMs = options.initialBackoffMs ?? 100;
  const maxBackoffMs = options.maxBackoffMs ?? 5000;
  const userSignal = options.signal;
  let last = BigInt(options.afterSequence ?? 0);
  let failures = 0;

  for (;;) {
    if (userSignal?.aborted) throw cancelled(userSignal);
    const attempt = new AbortController();
    const forward = (): void => attempt.abort(userSignal?.reason);
    userSignal?.addEventListener("abort", forward, { once: true });
    let failure: AiprodError;
    try {
      for await (const response of open({ jobId, afterSequence: last }, attempt.signal)) {
        const event = response.event;
        if (event === undefined) continue;
        if (event.sequence <= last) continue; // already yielded: never twice
        if (event.sequence !== last + 1n) {
          throw new AiprodError(
            Code.DataLoss,
            `WatchJob(${jobId}) skipped events: expected sequence ${last + 1n}, got ${event.sequence}`,
          );
        }
        last = event.sequence;
        failures = 0;
        yield event;
        if (isTerminalState(event.state)) return;
      }
      if (checkFinished !== undefined && (await checkFinished(jobId, last))) return;
      failure = new AiprodError(
        Code.Unavailable,
        `WatchJob(${jobId}) stream ended before the terminal event (after sequence ${last})`,
      );
    } catch (e) {
      if (userSignal?.aborted) throw cancelled(userSignal);
      failure = AiprodError.from(e);
      if (!isResumableError(failure)) throw failure;
    } finally {
      userSignal?.removeEventListener("abort", forward);
      attempt.abort();
    }
    failures += 1;
    if (failures > maxRetries) throw failure;
    const base = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (failures - 1));
    let delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    if (failure.retryDelayMs !== undefined) delayMs = Math.max(delayMs, failure.retryDelayMs);
    options.onReconnect?.({ attempt: failures, afterSequence: last, error: failure, delayMs });
    try {
      await sleep(delayMs, userSignal);
    } catch {
      throw cancelled(userSignal as AbortSignal);
    }
  }
}
