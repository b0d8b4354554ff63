"""An in-process fake AIPROD server (grpcio) for the SDK's unit tests."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import google.rpc.code_pb2 as code_pb2
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2, duration_pb2
from grpc_status import rpc_status

from aiprod._google.bytestream import bytestream_pb2, bytestream_pb2_grpc
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


CHUNK = 64 * 1024
"""The fake's ByteStream chunk size (the real server sends 256 KiB)."""


def blob(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (an MP4-looking header, so bytes 4..8 are ``ftyp``)."""
    head = b"\x00\x00\x00\x18ftypisom"
    return (head + random.Random(seed).randbytes(size))[:size]


@dataclass
class File:
    """A stored artifact: ``data`` is what Read serves; ``sha256`` what GetJob and the pin check use."""

    data: bytes
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.data).hexdigest()


@dataclass
class Fault:
    """What the n-th Read call does after sending ``after_chunks`` chunks.

    ``code`` aborts the stream with that status (UNAVAILABLE by default; None ends it cleanly);
    ``drop`` cuts the TCP connection instead (FakeServer.drop must be set, e.g. to a DropProxy's
    drop_connections); ``replace`` stores new bytes under the resource first, as a revision would.
    """

    after_chunks: int = 0
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE
    retry_delay: float | None = None
    drop: bool = False
    replace: bytes | None = None


@dataclass
class Recorder:
    """What the fake saw: per-method metadata, deadlines and WatchJob resume points."""

    auth: dict[str, str] = field(default_factory=dict)
    time_remaining: dict[str, float | None] = field(default_factory=dict)
    watch_after: list[int] = field(default_factory=list)
    watch_connections: int = 0
    reads: list[tuple[str, int]] = field(default_factory=list)
    user_agent: dict[str, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    """Calls per (method, key): e.g. ("GetPreset", "unavailable-2"), to fail the first n of them."""
    request_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, key: str) -> int:
        """Counts one call of ``method`` for ``key``; returns how many there were, this one included."""
        with self.lock:
            n = self.calls.get(f"{method}:{key}", 0) + 1
            self.calls[f"{method}:{key}"] = n
            return n


def _record(rec: Recorder, method: str, context: grpc.ServicerContext) -> None:
    md = dict(context.invocation_metadata())
    with rec.lock:
        rec.auth[method] = str(md.get("authorization", ""))
        rec.time_remaining[method] = context.time_remaining()
        rec.user_agent[method] = str(md.get("user-agent", ""))


def _throttle(context: grpc.ServicerContext, delay: float | None) -> None:
    """Aborts with RESOURCE_EXHAUSTED: a rate limit (with RetryInfo) or a used-up quota (without)."""
    details = []
    if delay is not None:
        secs = int(delay)
        wait = duration_pb2.Duration(seconds=secs, nanos=int((delay - secs) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=wait))
    context.abort_with_status(
        rpc_status.to_status(
            status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down", details=pack(*details))
        )
    )


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
        n = self.rec.count("GetPreset", request.preset_id)
        # "unavailable-N": the first N calls fail with UNAVAILABLE, as during a server restart
        if request.preset_id.startswith("unavailable-") and n <= int(request.preset_id.split("-")[1]):
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")
        if request.preset_id == "throttled" and n == 1:
            _throttle(context, 0.05)
        if request.preset_id == "quota":
            _throttle(context, None)
        if request.preset_id == "throttled-long":
            _throttle(context, 1.5)
        if request.preset_id == "internal":
            context.abort(grpc.StatusCode.INTERNAL, "boom")
        return preset_service_pb2.GetPresetResponse(preset=preset_pb2.Preset(preset_id=request.preset_id))


class Render(render_service_pb2_grpc.RenderServiceServicer):
    """Jobs job-0..job-6 (newest first in ListJobs); WatchJob behaviours keyed by job id."""

    def __init__(self, rec: Recorder, files: dict[str, File]) -> None:
        self.rec = rec
        self.files = files
        self.jobs = [job_pb2.Job(job_id=f"job-{i}") for i in range(7)]

    def CreateJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "CreateJob", context)
        _check(context, API_KEY)
        with self.rec.lock:
            self.rec.request_ids.append(request.request_id)
        if request.brief.startswith("flaky") and self.rec.count("CreateJob", request.brief) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
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
                            error_details_pb2.RetryInfo(
                                retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
                            ),
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
        artifact_job = self.artifact_job(request.job_id)
        if artifact_job is not None:
            return render_service_pb2.GetJobResponse(job=artifact_job)
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

    def artifact_job(self, job_id: str) -> job_pb2.Job | None:
        """Jobs with artifacts in the fake's store: ``cut``/``badhash``/``revised`` (DELIVERED, with a
        video), ``rendering`` (shot s1 rendered, s2 not, no video yet) and ``planning`` (no shots)."""
        files = self.files
        if job_id == "planning":
            return job_pb2.Job(job_id=job_id, state=job_pb2.JOB_STATE_PLANNING)
        if job_id not in ("cut", "badhash", "revised", "rendering"):
            return None
        shots = []
        for sid in ("s1", "s2"):
            shot = job_pb2.ShotStatus(shot_id=sid, duration_s=4)
            name = f"jobs/{job_id}/shots/{sid}/clip"
            if name in files and not (job_id == "rendering" and sid == "s2"):
                shot.rendered = True
                shot.clip.CopyFrom(artifact(name, files[name]))
            shots.append(shot)
        if job_id == "rendering":
            return job_pb2.Job(job_id=job_id, state=job_pb2.JOB_STATE_RENDERING, shots=shots)
        video = f"jobs/{job_id}/video"
        return job_pb2.Job(
            job_id=job_id, state=job_pb2.JOB_STATE_DELIVERED, video=artifact(video, files[video]), shots=shots
        )

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


def artifact(name: str, f: File) -> job_pb2.VideoArtifact:
    return job_pb2.VideoArtifact(
        uri=name,
        resource_name=name,
        size_bytes=len(f.data),
        sha256=f.sha256,
        width=1280,
        height=720,
        frame_rate=24.0,
        frame_count=96,
        codec="avc1.42c01f",
        mime_type="video/mp4",
        poster_resource_name=(name.removesuffix("/clip") if name.endswith("/clip") else name) + "/poster",
    )


class ByteStream(bytestream_pb2_grpc.ByteStreamServicer):
    """google.bytestream Read over the fake's files, with scripted faults (``script``: one Fault or
    None per Read call, in order; later calls behave)."""

    def __init__(self, rec: Recorder, files: dict[str, File], server: FakeServer) -> None:
        self.rec = rec
        self.files = files
        self.server = server
        self.script: list[Fault | None] = []

    def Read(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _check(context, API_KEY)
        with self.rec.lock:
            self.rec.reads.append((request.resource_name, request.read_offset))
            fault = self.script.pop(0) if self.script else None
        name, _, pin = request.resource_name.partition("@")
        f = self.files.get(name)
        if f is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"resource {name} not found")
        if pin and pin != f.sha256:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{name} was replaced: {pin} is not its version")
        size = len(f.data)
        if not 0 <= request.read_offset <= size or request.read_limit < 0:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"read_offset {request.read_offset} outside 0..{size}")
        end = size if request.read_limit == 0 else min(size, request.read_offset + request.read_limit)
        pos, sent = request.read_offset, 0
        while pos < end:
            if fault is not None and sent == fault.after_chunks:
                yield from self.fail(fault, name, context)
                return
            chunk = f.data[pos : min(pos + CHUNK, end)]
            yield bytestream_pb2.ReadResponse(data=chunk)
            pos += len(chunk)
            sent += 1

    def fail(self, fault: Fault, name: str, context: grpc.ServicerContext) -> Iterator[Any]:
        if fault.replace is not None:
            self.files[name] = File(fault.replace)
        if fault.drop:
            time.sleep(0.3)  # let the chunks sent so far reach the client
            assert self.server.drop is not None, "set FakeServer.drop to cut connections"
            self.server.drop()
            while context.is_active():
                time.sleep(0.01)
            return
        if fault.code is None:
            return
        if fault.retry_delay is not None:
            secs = int(fault.retry_delay)
            context.abort_with_status(
                rpc_status.to_status(
                    status_pb2.Status(
                        code=fault.code.value[0],
                        message="slow down",
                        details=pack(
                            error_details_pb2.RetryInfo(
                                retry_delay=duration_pb2.Duration(
                                    seconds=secs, nanos=int((fault.retry_delay - secs) * 1e9)
                                )
                            )
                        ),
                    )
                )
            )
        context.abort(fault.code, "server shutting down")
        yield from ()


class Admin(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def CreateTenant(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "CreateTenant", context)
        _check(context, ADMIN_TOKEN)
        n = self.rec.count("CreateTenant", request.name)
        if request.name == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")  # not safe to repeat
        if request.name == "throttled" and n == 1:
            _throttle(context, 0.05)  # refused before doing anything: safe to repeat
        return admin_service_pb2.CreateTenantResponse(tenant=admin_service_pb2.Tenant(name=request.name))

    def ListTenants(self, request: Any, context: grpc.ServicerContext) -> Any:
        _record(self.rec, "ListTenants", context)
        _check(context, ADMIN_TOKEN)
        tenants = [admin_service_pb2.Tenant(tenant_id=f"ten_{i}") for i in range(5)]
        size = request.page_size or 2
        start = int(request.page_token or "0")
        nxt = str(start + size) if start + size < len(tenants) else ""
        return admin_service_pb2.ListTenantsResponse(tenants=tenants[start : start + size], next_page_token=nxt)


VIDEO_SIZE = 1_000_003
"""Size of the fake final cuts: 15 full chunks and a partial one."""


class FakeServer:
    def __init__(self, tls: tuple[bytes, bytes] | None = None) -> None:
        """``tls``: (private key, certificate chain) in PEM to serve TLS on https://localhost:PORT."""
        self.rec = Recorder()
        self.drop: Callable[[], object] | None = None
        self.files: dict[str, File] = {}
        for job in ("cut", "badhash", "revised", "rendering"):
            if job != "rendering":
                self.files[f"jobs/{job}/video"] = File(blob(f"{job}/video", VIDEO_SIZE))
            for sid in ("s1", "s2"):
                self.files[f"jobs/{job}/shots/{sid}/clip"] = File(blob(f"{job}/{sid}", 200_000))
        # badhash: the store serves one flipped byte; GetJob and the pin still say the original hash
        good = self.files["jobs/badhash/video"]
        bad = bytearray(good.data)
        bad[500_000] ^= 0xFF
        self.files["jobs/badhash/video"] = File(bytes(bad), sha256=good.sha256)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        preset_service_pb2_grpc.add_PresetServiceServicer_to_server(Presets(self.rec), self.server)
        render_service_pb2_grpc.add_RenderServiceServicer_to_server(Render(self.rec, self.files), self.server)
        self.bytestream = ByteStream(self.rec, self.files, self)
        bytestream_pb2_grpc.add_ByteStreamServicer_to_server(self.bytestream, self.server)
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(Admin(self.rec), self.server)
        if tls is None:
            port = self.server.add_insecure_port("127.0.0.1:0")
            self.endpoint = f"http://127.0.0.1:{port}"
        else:
            port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
            self.endpoint = f"https://localhost:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)
