"""The SDK's retry policy (sdk/PRODUCTION.md): which failures are retried, the backoff, the hook.

Unary calls: UNAVAILABLE is retried for RPCs that are safe to repeat (reads, CreateJob with its
request_id, CancelJob); RESOURCE_EXHAUSTED with RetryInfo for every RPC; nothing else. Waits are
exponential with full jitter, floored by RetryInfo, bounded by ``max_attempts`` and by the call's
deadline. Streams (WatchJob, downloads) resume after transport failures for ``watch_resume_timeout``
of continuous failure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from aiprod._errors import AiprodError

__all__ = ["Attempt", "AttemptHook", "Method", "Outage", "RetryPolicy", "UnaryRetry", "stream_resumable"]

log = logging.getLogger("aiprod")


@dataclass(frozen=True)
class RetryPolicy:
    """How the SDK retries unary calls and resumes streams; the defaults are sdk/PRODUCTION.md's.

    ``max_attempts`` counts the first attempt (1 disables retries of unary calls). Before attempt
    n + 1 the SDK waits ``uniform(0, min(max_backoff, initial_backoff * 2**(n-1)))`` seconds, or
    the server's RetryInfo delay if that is longer. ``watch_resume_timeout`` is how long watch_job
    and the downloads keep reconnecting while every attempt fails (the clock restarts whenever an
    event or bytes arrive).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    watch_resume_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 (1 disables retries)")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        if self.watch_resume_timeout < 0:
            raise ValueError("watch_resume_timeout must be >= 0")

    def backoff(self, attempt: int, floor: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based): full jitter, floored by RetryInfo."""
        cap = min(self.max_backoff, self.initial_backoff * 2 ** max(0, attempt - 1))
        return max(random.uniform(0.0, cap), floor or 0.0)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a call, as the client's ``on_attempt`` hook sees it.

    Unary calls report each try; ``watch_job`` each stream connection; downloads each GetJob and
    ByteStream Read.
    """

    method: str
    """The full gRPC method, e.g. ``"/aiprod.v1.RenderService/CreateJob"``."""
    attempt: int
    """1 for the first try of a call, 2 for the first retry (for streams: the connection number)."""
    code: grpc.StatusCode
    """OK, or the status code the attempt failed with."""
    duration: float
    """Seconds the attempt took."""
    error: AiprodError | None
    """The failure (None when OK)."""
    retry_in: float | None
    """Seconds until the next attempt, or None when no retry follows."""


AttemptHook = Callable[[Attempt], None]
"""A callable that receives every :class:`Attempt`; exceptions it raises propagate to the caller."""


@dataclass(frozen=True)
class Method:
    """A unary RPC: its full name and whether it is safe to repeat after UNAVAILABLE."""

    name: str
    idempotent: bool
    fill_request_id: bool = False


def _throttled(err: AiprodError) -> bool:
    # RESOURCE_EXHAUSTED with RetryInfo: the server refused before doing anything (rate limit).
    return err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_delay is not None


def _deadline_error(what: str, last: AiprodError | None) -> AiprodError:
    why = f" (last error {last.code.name}: {last.message})" if last is not None else ""
    return AiprodError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded: {what}{why}")


class UnaryRetry:
    """The retry state of one unary call: attempt count and the call's absolute deadline."""

    def __init__(self, method: Method, policy: RetryPolicy, timeout: float | None) -> None:
        self.method = method
        self.policy = policy
        self.attempt = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last: AiprodError | None = None

    def start(self) -> float | None:
        """Begins the next attempt; returns its timeout (what is left of the call's deadline)."""
        self.attempt += 1
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _deadline_error(self.method.name, self.last)
        return left

    def failed(self, err: AiprodError) -> float | None:
        """The wait before the next attempt, or None to raise ``err`` (not retryable, budget or time)."""
        self.last = err
        retryable = _throttled(err) or (err.code == grpc.StatusCode.UNAVAILABLE and self.method.idempotent)
        if not retryable or self.attempt >= self.policy.max_attempts:
            return None
        wait = self.policy.backoff(self.attempt, err.retry_delay)
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None  # the retry could not finish in time: surface this error now
        return wait


def report(hook: AttemptHook | None, attempt: Attempt) -> None:
    """Logs an attempt on the "aiprod" logger (DEBUG) and passes it to the hook."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s attempt %d: %s in %.3fs%s",
            attempt.method,
            attempt.attempt,
            attempt.code.name,
            attempt.duration,
            "" if attempt.retry_in is None else f", retry in {attempt.retry_in:.3f}s",
        )
    if hook is not None:
        hook(attempt)


def stream_resumable(err: AiprodError) -> bool:
    """Whether a stream failure is a transport problem or a throttle to resume from."""
    if err.code == grpc.StatusCode.UNAVAILABLE or _throttled(err):
        return True
    text = err.message.lower()
    # A reset HTTP/2 stream or a torn connection surfaces as INTERNAL/UNKNOWN/CANCELLED in grpc-core.
    if err.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
        return any(s in text for s in ("rst_stream", "stream removed", "socket closed", "connection reset", "goaway"))
    return False


class Outage:
    """Resumption bookkeeping of a stream (watch or download): continuous failure time and deadline."""

    def __init__(self, what: str, policy: RetryPolicy, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 seconds, or None for no deadline")
        self.what = what
        self.policy = policy
        self.failures = 0
        self.since: float | None = None  # when the current run of failures began
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left of the whole operation's deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def progressed(self) -> None:
        """An event or bytes arrived: the failure clock restarts."""
        self.failures = 0
        self.since = None

    def failed(self, err: AiprodError | None, where: str) -> float:
        """Records a failure (None: the stream ended early); returns the wait, or raises to give up."""
        if err is not None and not stream_resumable(err):
            raise err
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.failures += 1
        why = err.message if err is not None else "the stream ended early"
        wait = self.policy.backoff(self.failures, err.retry_delay if err is not None else None)
        if now + wait - self.since > self.policy.watch_resume_timeout:
            raise AiprodError(
                err.code if err is not None else grpc.StatusCode.UNAVAILABLE,
                f"{self.what} gave up after {now - self.since:.1f} s of failures ({self.failures} attempts, "
                f"watch_resume_timeout {self.policy.watch_resume_timeout:g} s, {where}): {why}",
                err.details if err is not None else (),
            )
        left = self.remaining()
        if left is not None and wait >= left:
            # The resumed stream could not start before the deadline: surface the last error now
            # (as unary calls do), or DEADLINE_EXCEEDED when the stream merely ended early.
            if err is not None:
                raise err
            raise AiprodError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.what} ran out of time before resuming ({where})"
            )
        return wait
