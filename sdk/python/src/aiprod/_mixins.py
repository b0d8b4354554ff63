"""Hand-written parts of the service wrappers: the resuming WatchJob stream and list iterators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

import grpc
import grpc.aio

from aiprod._call import DEFAULT_TIMEOUT, AsyncCaller, Caller, Metadata, Method, Timeout, build_request
from aiprod._errors import AiprodError, from_rpc_error
from aiprod._retry import Outage, RetryPolicy
from aiprod.v1 import admin_service_pb2, job_pb2, render_service_pb2

if TYPE_CHECKING:
    from aiprod.v1 import admin_service_pb2_grpc, render_service_pb2_grpc

__all__ = [
    "TERMINAL_STATES",
    "AdminServiceMixin",
    "AsyncAdminServiceMixin",
    "AsyncRenderServiceMixin",
    "RenderServiceMixin",
]

TERMINAL_STATES: Final = frozenset({job_pb2.JOB_STATE_DELIVERED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_FAILED})
"""The job states after which WatchJob ends (DELIVERED, CANCELLED, FAILED)."""


_WATCH = "/aiprod.v1.RenderService/WatchJob"
# The RPCs the hand-written helpers call directly (same retry classes as the generated wrappers).
_GET_JOB = Method("/aiprod.v1.RenderService/GetJob", idempotent=True)
_LIST_JOBS = Method("/aiprod.v1.RenderService/ListJobs", idempotent=True)
_LIST_TENANTS = Method("/aiprod.v1.AdminService/ListTenants", idempotent=True)


class _Resume:
    """The bookkeeping shared by the sync and async watchers: resume point, outage clock, deadline."""

    def __init__(self, job_id: str, after_sequence: int, policy: RetryPolicy, timeout: float | None) -> None:
        if not job_id:
            raise ValueError("job_id is required")
        self.job_id = job_id
        self.last = after_sequence
        self.connections = 0
        self.outage = Outage(f"watch of {job_id}", policy, timeout)

    def remaining(self) -> float | None:
        return self.outage.remaining()

    def call_timeout(self) -> Timeout:
        """The deadline of a unary call made by the watch: the client's default, or what is left."""
        left = self.remaining()
        return DEFAULT_TIMEOUT if left is None else left

    def finished(self, job: job_pb2.Job) -> bool:
        """Whether the job is terminal and every one of its events was seen (nothing to resume)."""
        return job.state in TERMINAL_STATES and self.last >= job.last_sequence

    def request(self) -> render_service_pb2.WatchJobRequest:
        self.connections += 1
        return render_service_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.last)

    def accept(self, event: job_pb2.JobEvent) -> bool:
        """Whether to yield the event (it is new); records it as the resume point."""
        if event.sequence <= self.last:
            return False  # already yielded before a reconnect: never duplicate
        self.last = event.sequence
        self.outage.progressed()
        return True

    def failed(self, err: AiprodError | None) -> float:
        """Records a broken stream (err None: it ended before the terminal event); returns the wait."""
        return self.outage.failed(err, f"last sequence {self.last}")


def _list_jobs_request(
    request: render_service_pb2.ListJobsRequest | None,
    page_size: int | None,
    states: Iterable[job_pb2.JobState.ValueType] | None,
    preset_id: str | None,
    labels: Mapping[str, str] | None,
) -> render_service_pb2.ListJobsRequest:
    req = render_service_pb2.ListJobsRequest()
    built = build_request(
        render_service_pb2.ListJobsRequest,
        request,
        page_size=page_size,
        states=states,
        preset_id=preset_id,
        labels=labels,
    )
    req.CopyFrom(built)  # a copy: the caller's message is not modified by paging
    return req


class RenderServiceMixin:
    """Sync RenderService extras: watch_job (resuming) and iter_jobs."""

    _caller: Caller
    _stub: render_service_pb2_grpc.RenderServiceStub

    def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[job_pb2.JobEvent, None, None]:
        """Yields the job's events with a sequence > after_sequence, until the terminal event.

        Reconnects transparently on UNAVAILABLE, a lost connection or a reset stream, resuming
        after the last sequence it yielded: no event is skipped or yielded twice. If the stream ends
        cleanly before a terminal event, it asks GetJob: a terminal job whose events were all seen
        ends the watch (e.g. after_sequence was already past the terminal event), else it resumes.
        Reconnects back off like unary retries (``retry``, the client's RetryPolicy by default) and
        go on for ``watch_resume_timeout`` (120 s) of continuous failure, a clock that restarts
        whenever an event arrives; then the last error is raised. Any other error (NOT_FOUND,
        INVALID_ARGUMENT, ...) is raised at once as AiprodError. ``timeout`` bounds the whole watch,
        reconnects included (DEADLINE_EXCEEDED when it runs out); by default there is none. Closing
        the iterator cancels the underlying call.
        """
        state = _Resume(job_id, after_sequence, retry or self._caller.policy, timeout)
        while True:
            call = self._stub.WatchJob(
                state.request(), timeout=state.remaining(), metadata=self._caller.metadata(metadata)
            )
            started = time.monotonic()
            err: AiprodError | None = None
            try:
                for response in call:
                    event = response.event
                    if not state.accept(event):
                        continue
                    yield event
                    if event.state in TERMINAL_STATES:
                        self._caller.report(_WATCH, state.connections, started)
                        return
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                # A clean end without a terminal event: the watch may have started after it.
                try:
                    job = self._caller.unary(
                        self._stub.GetJob,
                        _GET_JOB,
                        render_service_pb2.GetJobRequest(job_id=job_id),
                        state.call_timeout(),
                        metadata,
                        retry,
                    ).job
                except AiprodError as e:
                    err = e
                else:
                    if state.finished(job):
                        self._caller.report(_WATCH, state.connections, started)
                        return
            try:
                wait = state.failed(err)
            except AiprodError as final:
                self._caller.report(_WATCH, state.connections, started, final)
                raise
            self._caller.report(_WATCH, state.connections, started, err, wait)
            time.sleep(wait)

    def iter_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        states: Iterable[job_pb2.JobState.ValueType] | None = None,
        preset_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
    ) -> Iterator[job_pb2.Job]:
        """Yields every job matching the filter, newest first, following next_page_token.

        Takes a ListJobsRequest or its fields (page_size, states, preset_id, labels).
        """
        req = _list_jobs_request(request, page_size, states, preset_id, labels)
        while True:
            page = self._caller.unary(self._stub.ListJobs, _LIST_JOBS, req, timeout, metadata, None)
            yield from page.jobs
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AsyncRenderServiceMixin:
    """Asyncio RenderService extras: watch_job (resuming) and iter_jobs."""

    _caller: AsyncCaller
    _stub: render_service_pb2_grpc.RenderServiceAsyncStub

    async def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """Yields the job's events with a sequence > after_sequence, until the terminal event.

        Same contract as the sync RenderService.watch_job: transparent, gap-free and duplicate-free
        resumption on UNAVAILABLE, lost connections and reset streams, for ``watch_resume_timeout``
        of continuous failure.
        """
        state = _Resume(job_id, after_sequence, retry or self._caller.policy, timeout)
        while True:
            call = self._stub.WatchJob(
                state.request(), timeout=state.remaining(), metadata=self._caller.metadata(metadata)
            )
            started = time.monotonic()
            err: AiprodError | None = None
            try:
                async for response in call:
                    event = response.event
                    if not state.accept(event):
                        continue
                    yield event
                    if event.state in TERMINAL_STATES:
                        self._caller.report(_WATCH, state.connections, started)
                        return
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                # A clean end without a terminal event: the watch may have started after it.
                try:
                    got = await self._caller.unary(
                        self._stub.GetJob,
                        _GET_JOB,
                        render_service_pb2.GetJobRequest(job_id=job_id),
                        state.call_timeout(),
                        metadata,
                        retry,
                    )
                except AiprodError as e:
                    err = e
                else:
                    if state.finished(got.job):
                        self._caller.report(_WATCH, state.connections, started)
                        return
            try:
                wait = state.failed(err)
            except AiprodError as final:
                self._caller.report(_WATCH, state.connections, started, final)
                raise
            self._caller.report(_WATCH, state.connections, started, err, wait)
            await asyncio.sleep(wait)

    async def iter_jobs(
        self,
        request: render_service_pb2.ListJobsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        states: Iterable[job_pb2.JobState.ValueType] | None = None,
        preset_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
    ) -> AsyncIterator[job_pb2.Job]:
        """Yields every job matching the filter, newest first, following next_page_token."""
        req = _list_jobs_request(request, page_size, states, preset_id, labels)
        while True:
            page = await self._caller.unary(self._stub.ListJobs, _LIST_JOBS, req, timeout, metadata, None)
            for job in page.jobs:
                yield job
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AdminServiceMixin:
    """Sync AdminService extras: iter_tenants."""

    _caller: Caller
    _stub: admin_service_pb2_grpc.AdminServiceStub

    def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> Iterator[admin_service_pb2.Tenant]:
        """Yields every tenant, oldest first, following next_page_token."""
        req = admin_service_pb2.ListTenantsRequest(page_size=page_size)
        while True:
            page = self._caller.unary(self._stub.ListTenants, _LIST_TENANTS, req, timeout, metadata, None)
            yield from page.tenants
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token


class AsyncAdminServiceMixin:
    """Asyncio AdminService extras: iter_tenants."""

    _caller: AsyncCaller
    _stub: admin_service_pb2_grpc.AdminServiceAsyncStub

    async def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> AsyncIterator[admin_service_pb2.Tenant]:
        """Yields every tenant, oldest first, following next_page_token."""
        req = admin_service_pb2.ListTenantsRequest(page_size=page_size)
        while True:
            page = await self._caller.unary(self._stub.ListTenants, _LIST_TENANTS, req, timeout, metadata, None)
            for tenant in page.tenants:
                yield tenant
            if not page.next_page_token:
                return
            req.page_token = page.next_page_token
