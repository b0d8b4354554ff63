import { Code } from "@connectrpc/connect";
import { AiprodError } from "./errors.js";
import { JobState, type JobEvent } from "./gen/aiprod/v1/job_pb.js";
import { backoffMs, DEFAULT_RETRY, sleep } from "./retry.js";

/** Options of {@link AiprodClient.watchJob}. */
export interface WatchJobOptions {
  /** Yield only events with a sequence greater than this (0, the default, replays from the start). */
  afterSequence?: bigint | number;
  /**
   * Stops the watch; the iterator then throws a CANCELLED AiprodError (DEADLINE_EXCEEDED for
   * `AbortSignal.timeout(ms)`).
   */
  signal?: AbortSignal;
  /**
   * How long to keep reconnecting in ms, counted from the first failure since the last event (an
   * event resets the clock). Default 120 000. If the next wait would end past it, the last error is thrown.
   */
  resumeTimeoutMs?: number;
  /** Optional cap on consecutive failed attempts (without a new event in between). Default: none. */
  maxRetries?: number;
  /** Upper bound of the first reconnect delay in ms (full jitter); doubles on each consecutive failure. Default 100. */
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
  attempt: number,
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
 * Whether a failed WatchJob stream may be resumed: UNAVAILABLE and ABORTED always,
 * RESOURCE_EXHAUSTED when it carries RetryInfo (rate limited before anything was done); INTERNAL,
 * UNKNOWN, CANCELLED and DEADLINE_EXCEEDED only when the transport produced them (connection loss,
 * HTTP/2 stream reset), not the server.
 */
export function isResumableError(err: AiprodError): boolean {
  switch (err.code) {
    case Code.Unavailable:
    case Code.Aborted:
      return true;
    case Code.ResourceExhausted:
      return err.retryDelayMs !== undefined;
    case Code.Internal:
    case Code.Unknown:
    case Code.Canceled:
    case Code.DeadlineExceeded:
      return err.isTransportError;
    default:
      return false;
  }
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
  const maxRetries = options.maxRetries ?? Infinity;
  const resumeTimeoutMs = options.resumeTimeoutMs ?? 120_000;
  const policy = {
    maxAttempts: Infinity,
    initialBackoffMs: options.initialBackoffMs ?? DEFAULT_RETRY.initialBackoffMs,
    maxBackoffMs: options.maxBackoffMs ?? DEFAULT_RETRY.maxBackoffMs,
  };
  const userSignal = options.signal;
  let last = BigInt(options.afterSequence ?? 0);
  let failures = 0;
  let failingSince = 0; // when the current run of failures began (the clock resets on every event)

  for (;;) {
    if (userSignal?.aborted) throw cancelled(userSignal);
    const attempt = new AbortController();
    const forward = (): void => attempt.abort(userSignal?.reason);
    userSignal?.addEventListener("abort", forward, { once: true });
    let failure: AiprodError;
    try {
      for await (const response of open({ jobId, afterSequence: last }, attempt.signal, failures + 1)) {
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
    if (failures === 1) failingSince = Date.now();
    if (failures > maxRetries) throw failure;
    const delayMs = Math.round(backoffMs(failures, policy, failure.retryDelayMs));
    if (Date.now() + delayMs - failingSince > resumeTimeoutMs) throw failure;
    options.onReconnect?.({ attempt: failures, afterSequence: last, error: failure, delayMs });
    try {
      await sleep(delayMs, userSignal);
    } catch {
      throw cancelled(userSignal as AbortSignal);
    }
  }
}
