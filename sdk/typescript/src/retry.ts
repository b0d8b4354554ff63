import { Code, createContextKey, type ContextKey } from "@connectrpc/connect";
import type { AiprodError } from "./errors.js";

/** The retry policy of unary calls (the same in every AIPROD SDK; see sdk/PRODUCTION.md). */
export interface RetryOptions {
  /** Attempts per call, including the first. Default 5; 1 disables retries. */
  maxAttempts?: number;
  /** Upper bound of the first wait in ms; doubles per attempt. Default 100. */
  initialBackoffMs?: number;
  /** Cap of the wait's upper bound in ms. Default 5000. */
  maxBackoffMs?: number;
}

/** The defaults of {@link RetryOptions}. */
export const DEFAULT_RETRY: Required<RetryOptions> = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 5000 };

/**
 * The attempt number (1, 2, …) of the call an interceptor sees: `req.contextValues.get(attemptKey)`.
 * WatchJob reconnects count as attempts too.
 */
export const attemptKey: ContextKey<number> = createContextKey(1, { description: "aiprod attempt number" });

/** What the logging hook ({@link AiprodClientOptions.onAttempt}) receives after every attempt. */
export interface AttemptInfo {
  /** Fully qualified service name, e.g. "aiprod.v1.RenderService". */
  service: string;
  /** Method name, e.g. "CreateJob". */
  method: string;
  /** 1 for the first attempt of a call, 2 for its first retry, … */
  attempt: number;
  /** "OK" or the gRPC code name of the failure, e.g. "UNAVAILABLE". */
  code: string;
  /** How long the attempt took (for a stream: until it ended or failed). */
  durationMs: number;
  /** The failure, if any. */
  error?: AiprodError;
}

// Calls that are safe to repeat after UNAVAILABLE: reads, CreateJob (idempotent by request_id, which
// the SDK fills before the first attempt) and CancelJob (cancelling twice has the same effect).
const REPEATABLE = new Set(["EstimateCost", "CreateJob", "CancelJob"]);

/** Whether a unary method may be repeated after UNAVAILABLE: every Get/List, EstimateCost, CreateJob, CancelJob. */
export function isRepeatable(method: string): boolean {
  return method.startsWith("Get") || method.startsWith("List") || REPEATABLE.has(method);
}

/**
 * Whether a failed attempt of `method` is retried: UNAVAILABLE for repeatable calls, and
 * RESOURCE_EXHAUSTED carrying RetryInfo for any call (the server refused before doing anything).
 */
export function shouldRetry(method: string, err: AiprodError): boolean {
  if (err.code === Code.ResourceExhausted) return err.retryDelayMs !== undefined;
  return err.code === Code.Unavailable && isRepeatable(method);
}

/**
 * The wait before retry `n` (n ≥ 1): exponential backoff with full jitter,
 * uniform(0, min(maxBackoff, initial × 2^(n-1))), never shorter than the server's RetryInfo delay.
 */
export function backoffMs(n: number, policy: Required<RetryOptions>, retryDelayMs?: number): number {
  const cap = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (n - 1));
  const wait = Math.random() * cap;
  return Math.max(wait, retryDelayMs ?? 0);
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
