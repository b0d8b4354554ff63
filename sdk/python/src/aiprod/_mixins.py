"""Hand-written parts of the service wrappers: the resuming WatchJob stream and list iterators."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
import grpc.aio

from aiprod._call import DEFAULT_TIMEOUT, AsyncCaller, Caller, Metadata, Timeout, build_request
from aiprod._errors import AiprodError, from_rpc_error
from aiprod.v1 import admin_service_pb2, job_pb2, render_service_pb2

if TYPE_CHECKING:
    from aiprod.v1 import admin_service_pb2_grpc, render_service_pb2_grpc

__all__ = [
    "TERMINAL_STATES",
    "AdminServiceMixin",
    "AsyncAdminServiceMixin",
    "AsyncRenderServiceMixin",
    "RenderServiceMixin",
    "WatchRetry",
]

TERMINAL_STATES: Final = frozenset(
    {job_pb2.JOB_STATE_DELIVERED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_FAILED}
)
"""The job states after which WatchJob ends (DELIVERED, CANCELLED, FAILED)."""


@dataclass(frozen=True)
class WatchRetry:
    """How watch_job reconnects after UNAVAILABLE, a lost connection or a reset stream.

    ``max_attempts`` bounds the reconnects in a row that deliver no event; the delay before
    reconnect n is ``min(max_backoff, initial_backoff * multiplier**(n-1))`` with ±20 % jitter,
    or the server's RetryInfo delay when that is longer.
    """

    max_attempts: int = 8
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, hint: float | None) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        base *= random.uniform(0.8, 1.2)
        return max(base, hint or 0.0)


def _resumable(err: AiprodError) -> bool:
    """Whether a WatchJob failure is a transport problem to resume from (not an answer to act on)."""
    if err.code == grpc.StatusCode.UNAVAILABLE:
        return True
    text = err.message.lower()
    # A reset HTTP/2 stream or a torn connection surfaces as INTERNAL/UNKNOWN/CANCELLED in grpc-core.
    if err.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
        return any(s in text for s in ("rst_stream", "stream removed", "socket closed", "connection reset", "goaway"))
    return False


class _Resume:
    """The bookkeeping shared by the sync and async watchers."""

    def __init__(self, job_id: str, after_sequence: int, retry: WatchRetry, timeout: float | None) -> None:
        if not job_id:
            raise ValueError("job_id is required")
        self.job_id = job_id
        self.last = after_sequence
        self.retry = retry
        self.failures = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left of the whole watch's deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def call_timeout(self) -> Timeout:
        """The deadline of a unary call made by the watch: the client's default, or what is left."""
        left = self.remaining()
        return DEFAULT_TIMEOUT if left is None else left

    def finished(self, job: job_pb2.Job) -> bool:
        """Whether the job is terminal and every one of its events was seen (nothing to resume)."""
        return job.state in TERMINAL_STATES and self.last >= job.last_sequence

    def request(self) -> render_service_pb2.WatchJobRequest:
        return render_service_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.last)

    def accept(self, event: job_pb2.JobEvent) -> bool:
        """Whether to yield the event (it is new); records it as the resume point."""
        if event.sequence <= self.last:
            return False  # already yielded before a reconnect: never duplicate
        self.last = event.sequence
        self.failures = 0
        return True

    def failed(self, err: AiprodError | None) -> float:
        """Records a broken stream (err None: it ended before the terminal event); returns the delay."""
        if err is not None and not _resumable(err):
            raise err
        self.failures += 1
        if self.failures > self.retry.max_attempts:
            why = err.message if err is not None else "stream ended before the terminal event"
            raise AiprodError(
                err.code if err is not None else grpc.StatusCode.UNAVAILABLE,
                f"watch of {self.job_id} gave up after {self.retry.max_attempts} reconnects "
                f"(last sequence {self.last}): {why}",
                err.details if err is not None else (),
            )
        delay = self.retry.delay(self.failures, err.retry_delay if err is not None else None)
        left = self.remaining()
        if left is not None and delay >= left:
            raise AiprodError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"watch of {self.job_id} ran out of time before reconnecting (last sequence {self.last})",
            )
        return delay


class RenderServiceMixin:
    """Sync RenderService extras: watch_job (resuming) and iter_jobs."""

    _caller: Caller
    _stub: render_service_pb2_grpc.RenderServiceStub
    _watch_retry: WatchRetry = WatchRetry()

    def get_job(
        self,
        request: render_service_pb2.GetJobRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> render_service_pb2.GetJobResponse:
        raise NotImplementedError  # generated

    def list_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> render_service_pb2.ListJobsResponse:
        raise NotImplementedError  # generated

    def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: WatchRetry | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[job_pb2.JobEvent, None, None]:
        """Yields the job's events with a sequence > after_sequence, until the terminal event.

        Reconnects transparently on UNAVAILABLE, a lost connection or a reset stream, resuming
        after the last sequence it yielded: no event is skipped or yielded twice. If the stream ends
        cleanly before a terminal event, it asks GetJob: a terminal job whose events were all seen
        ends the watch (e.g. after_sequence was already past the terminal event), else it resumes. Gives up with
        AiprodError after ``retry.max_attempts`` reconnects in a row without a new event; any other
        error (NOT_FOUND, INVALID_ARGUMENT, ...) is raised at once as AiprodError. ``timeout`` bounds
        the whole watch, reconnects included (DEADLINE_EXCEEDED when it runs out); by default there is
        none. Closing the iterator cancels the underlying call.
        """
        state = _Resume(job_id, after_sequence, retry or self._watch_retry, timeout)
        while True:
            call = self._stub.WatchJob(
                state.request(), timeout=state.remaining(), metadata=self._caller.metadata(metadata)
            )
            err: AiprodError | None = None
            try:
                for response in call:
                    event = response.event
                    if not state.accept(event):
                        continue
                    yield event
                    if event.state in TERMINAL_STATES:
                        return
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                # A clean end without a terminal event: the watch may have started after it.
                try:
                    job = self.get_job(job_id=job_id, timeout=state.call_timeout(), metadata=metadata).job
                except AiprodError as e:
                    err = e
                else:
                    if state.finished(job):
                        return
            time.sleep(state.failed(err))

    def iter_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> Iterator[job_pb2.Job]:
        """Yields every job matching the filter, newest first, following next_page_token.

        Takes a ListJobsRequest or its fields (page_size, states, preset_id, labels).
        """
        req = render_service_pb2.ListJobsRequest()
        req.CopyFrom(build_request(render_service_pb2.ListJobsRequest, request, fields))
        while True:
            page = self.list_jobs(req, timeout=timeout, metadata=metadata)
            yield from page.jobs
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AsyncRenderServiceMixin:
    """Asyncio RenderService extras: watch_job (resuming) and iter_jobs."""

    _caller: AsyncCaller
    _stub: render_service_pb2_grpc.RenderServiceAsyncStub
    _watch_retry: WatchRetry = WatchRetry()

    async def get_job(
        self,
        request: render_service_pb2.GetJobRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> render_service_pb2.GetJobResponse:
        raise NotImplementedError  # generated

    async def list_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> render_service_pb2.ListJobsResponse:
        raise NotImplementedError  # generated

    async def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: WatchRetry | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """Yields the job's events with a sequence > after_sequence, until the terminal event.

        Same contract as the sync RenderService.watch_job: transparent, gap-free and duplicate-free
        resumption on UNAVAILABLE, lost connections and reset streams, with bounded retries.
        """
        state = _Resume(job_id, after_sequence, retry or self._watch_retry, timeout)
        while True:
            call = self._stub.WatchJob(
                state.request(), timeout=state.remaining(), metadata=self._caller.metadata(metadata)
            )
            err: AiprodError | None = None
            try:
                async for response in call:
                    event = response.event
                    if not state.accept(event):
                        continue
                    yield event
                    if event.state in TERMINAL_STATES:
                        return
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                # A clean end without a terminal event: the watch may have started after it.
                try:
                    job = (await self.get_job(job_id=job_id, timeout=state.call_timeout(), metadata=metadata)).job
                except AiprodError as e:
                    err = e
                else:
                    if state.finished(job):
                        return
            await asyncio.sleep(state.failed(err))

    async def iter_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> AsyncIterator[job_pb2.Job]:
        """Yields every job matching the filter, newest first, following next_page_token."""
        req = render_service_pb2.ListJobsRequest()
        req.CopyFrom(build_request(render_service_pb2.ListJobsRequest, request, fields))
        while True:
            page = await self.list_jobs(req, timeout=timeout, metadata=metadata)
            for job in page.jobs:
                yield job
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AdminServiceMixin:
    """Sync AdminService extras: iter_tenants."""

    _caller: Caller
    _stub: admin_service_pb2_grpc.AdminServiceStub

    def list_tenants(
        self,
        request: admin_service_pb2.ListTenantsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> admin_service_pb2.ListTenantsResponse:
        raise NotImplementedError  # generated

    def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> Iterator[admin_service_pb2.Tenant]:
        """Yields every tenant, oldest first, following next_page_token."""
        req = admin_service_pb2.ListTenantsRequest(page_size=page_size)
        while True:
            page = self.list_tenants(req, timeout=timeout, metadata=metadata)
            yield from page.tenants
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AsyncAdminServiceMixin:
    """Asyncio AdminService extras: iter_tenants."""

    _caller: AsyncCaller
    _stub: admin_service_pb2_grpc.AdminServiceAsyncStub

    async def list_tenants(
        self,
        request: admin_service_pb2.ListTenantsRequest | None = None,
        /,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> admin_service_pb2.ListTenantsResponse:
        raise NotImplementedError  # generated

    async def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> AsyncIterator[admin_service_pb2.Tenant]:
        """Yields every tenant, oldest first, following next_page_token."""
        req = admin_service_pb2.ListTenantsRequest(page_size=page_size)
        while True:
            page = await self.list_tenants(req, timeout=timeout, metadata=metadata)
            for tenant in page.tenants:
                yield tenant
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token
