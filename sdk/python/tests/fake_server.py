"""An in-process fake AIPROD server (grpcio) for the SDK's unit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import google.rpc.code_pb2 as code_pb2
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2, duration_pb2
from grpc_status import rpc_status

from aiprod.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    preset_pb2,
    preset_service_pb2,
    preset_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
)

API_KEY = "aiprod_test_unit"
ADMIN_TOKEN = "admin-unit"

STATES = [
    job_pb2.JOB_STATE_QUEUED,
    job_pb2.JOB_STATE_PLANNING,
    job_pb2.JOB_STATE_AWAITING_APPROVAL,
    job_pb2.JOB_STATE_RENDERING,
    job_pb2.JOB_STATE_QUALITY_CHECK,
    job_pb2.JOB_STATE_DELIVERED,
]


def event(job_id: str, seq: int) -> job_pb2.JobEvent:
    return job_pb2.JobEvent(job_id=job_id, sequence=seq, state=STATES[seq - 1])


def pack(*msgs: Any) -> list[any_pb2.Any]:
    out = []
    for m in msgs:
        a = any_pb2.Any()
        a.Pack(m)
        out.append(a)
    return out


@dataclass
class Recorder:
    """What the fake saw: per-method metadata, deadlines and WatchJob resume points."""

    auth: dict[str, str] = field(default_factory=dict)
    time_remaining: dict[str, float | None] = field(default_factory=dict)
    watch_after: list[int] = field(default_factory=list)
    watch_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _record(rec: Recorder, method: str, context: grpc.ServicerContext) -> None:
    md = dict(context.invocation_metadata())
    with rec.lock:
        rec.auth[method] = str(md.get("authorization", ""))
        rec.time_remaining[method] = context.time_remaining()


def _check(context: grpc.ServicerContext, token: str) -> None:
    md = dict(context.invocation_metadata())
    if md.get("authorization") != f"Bearer {token}":
        context.abort_with_status(
            rpc_status.to_status(
                status_pb2.Status(
                    code=code_pb2.UNAUTHENTICATED,
                    message="missing or invalid bearer token",
                    details=pack(error_details_pb2.ErrorInfo(reason="API_KEY_INVALID", domain="aiprod.dev")),
                )
            )
        )


class Presets(preset_service_pb2_grpc.PresetServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def ListPresets(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "ListPresets", context)
        _check(context, API_KEY)
        return preset_service_pb2.ListPresetsResponse(
            presets=[preset_pb2.Preset(preset_id=p) for p in ("quick_social", "brand_campaign", "premium_spot")]
        )

    def GetPreset(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "GetPreset", context)
        _check(context, API_KEY)
        if request.preset_id == "slow":
            time.sleep(2)
        return preset_service_pb2.GetPresetResponse(preset=preset_pb2.Preset(preset_id=request.preset_id))


class Render(render_service_pb2_grpc.RenderServiceServicer):
    """Jobs job-0..job-6 (newest first in ListJobs); WatchJob behaviours keyed by job id."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.jobs = [job_pb2.Job(job_id=f"job-{i}") for i in range(7)]

    def CreateJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "CreateJob", context)
        _check(context, API_KEY)
        violations = []
        if not request.request_id:
            violations.append(("request_id", "is required"))
        if len(request.brief) < 10:
            violations.append(("brief", "must be 10-10000 characters"))
        if request.HasField("duration_s") and not 5 <= request.duration_s <= 300:
            violations.append(("duration_s", "must be 5-300"))
        if violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
            context.abort_with_status(
                rpc_status.to_status(
                    status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="invalid CreateJob", details=pack(bad))
                )
            )
        return render_service_pb2.CreateJobResponse(
            job=job_pb2.Job(job_id="job-new", request_id=request.request_id, state=job_pb2.JOB_STATE_QUEUED)
        )

    def GetJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "GetJob", context)
        _check(context, API_KEY)
        if request.job_id == "busy":
            context.abort_with_status(
                rpc_status.to_status(
                    status_pb2.Status(
                        code=code_pb2.RESOURCE_EXHAUSTED,
                        message="rate limited",
                        details=pack(
                            error_details_pb2.QuotaFailure(
                                violations=[
                                    error_details_pb2.QuotaFailure.Violation(subject="tenant:acme", description="rps")
                                ]
                            ),
                            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)),
                        ),
                    )
                )
            )
        if request.job_id == "late":
            context.abort_with_status(
                rpc_status.to_status(
                    status_pb2.Status(
                        code=code_pb2.FAILED_PRECONDITION,
                        message="job is DELIVERED",
                        details=pack(
                            error_details_pb2.PreconditionFailure(
                                violations=[
                                    error_details_pb2.PreconditionFailure.Violation(
                                        type="STATE", subject="job:late", description="already delivered"
                                    )
                                ]
                            )
                        ),
                    )
                )
            )
        if request.job_id == "flaky":
            return render_service_pb2.GetJobResponse(
                job=job_pb2.Job(job_id="flaky", state=job_pb2.JOB_STATE_RENDERING, last_sequence=4)
            )
        if request.job_id in ("done", "ok"):
            return render_service_pb2.GetJobResponse(
                job=job_pb2.Job(job_id=request.job_id, state=job_pb2.JOB_STATE_DELIVERED, last_sequence=6)
            )
        for j in self.jobs:
            if j.job_id == request.job_id:
                return render_service_pb2.GetJobResponse(job=j)
        context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")

    def ListJobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "ListJobs", context)
        _check(context, API_KEY)
        size = request.page_size or 3
        start = int(request.page_token or "0")
        page = self.jobs[start : start + size]
        nxt = str(start + size) if start + size < len(self.jobs) else ""
        return render_service_pb2.ListJobsResponse(jobs=page, next_page_token=nxt)

    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _check(context, API_KEY)
        with self.rec.lock:
            self.rec.watch_after.append(request.after_sequence)
            self.rec.watch_connections += 1
            n = self.rec.watch_connections
        job, after = request.job_id, request.after_sequence
        if job == "gone":
            context.abort(grpc.StatusCode.NOT_FOUND, "job gone not found")
        if job == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        if job == "flaky":
            # 1st connection: events 1..3 then UNAVAILABLE; 2nd: replays one old event (the SDK
            # must drop it), sends 4 then ends without the terminal event; 3rd: the rest.
            if n == 1:
                for s in range(after + 1, 4):
                    yield render_service_pb2.WatchJobResponse(event=event(job, s))
                context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
            if n == 2:
                yield render_service_pb2.WatchJobResponse(event=event(job, after))
                yield render_service_pb2.WatchJobResponse(event=event(job, after + 1))
                return
        if job == "done":
            return  # delivered long ago: nothing after after_sequence=6, the stream ends at once
        if job == "hang":
            yield render_service_pb2.WatchJobResponse(event=event(job, 1))
            while context.is_active():
                time.sleep(0.05)
            return
        if job == "slow":
            for s in range(after + 1, 7):
                time.sleep(0.05)
                yield render_service_pb2.WatchJobResponse(event=event(job, s))
            return
        for s in range(after + 1, 7):
            yield render_service_pb2.WatchJobResponse(event=event(job, s))
        # an event after the terminal one must never be yielded
        yield render_service_pb2.WatchJobResponse(event=event(job, 6))


class Admin(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def ListTenants(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "ListTenants", context)
        _check(context, ADMIN_TOKEN)
        tenants = [admin_service_pb2.Tenant(tenant_id=f"ten_{i}") for i in range(5)]
        size = request.page_size or 2
        start = int(request.page_token or "0")
        nxt = str(start + size) if start + size < len(tenants) else ""
        return admin_service_pb2.ListTenantsResponse(tenants=tenants[start : start + size], next_page_token=nxt)


class FakeServer:
    def __init__(self) -> None:
        self.rec = Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        preset_service_pb2_grpc.add_PresetServiceServicer_to_server(Presets(self.rec), self.server)
        render_service_pb2_grpc.add_RenderServiceServicer_to_server(Render(self.rec), self.server)
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(Admin(self.rec), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)
