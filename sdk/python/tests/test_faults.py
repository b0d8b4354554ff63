"""Fault tests against a real server (scripts/test-server.sh): a restart mid-call and mid-watch, the
Bronze tenant's rate limit, and deadlines shorter than the retry wait (sdk/PRODUCTION.md).

Needs AIPROD_ENV_FILE (the env file in the server's directory, which `test-server.sh restart` takes);
skipped otherwise, unless AIPROD_REQUIRE_CONFORMANCE=1 (set by test.sh) makes it fail.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import aiprod
from aiprod.v1 import JOB_STATE_AWAITING_APPROVAL, JOB_STATE_DELIVERED

ROOT = Path(__file__).resolve().parents[3]
TEST_SERVER = ROOT / "scripts" / "test-server.sh"
BRIEF = "A 30-second spot: the new acme running shoe on a wet track at dawn."
# brand_campaign jobs wait at AWAITING_APPROVAL (no auto-approve): they stay open as long as a test needs.
PRESET, DURATION = "brand_campaign", 30


@dataclass
class Server:
    dir: Path
    env: dict[str, str]

    def restart(self, down_ms: int) -> subprocess.Popen[bytes]:
        """Starts a graceful restart on the same port and database, down for ``down_ms``."""
        env = {**os.environ, "AIPROD_RESTART_DOWN_MS": str(down_ms)}
        return subprocess.Popen([str(TEST_SERVER), "restart", str(self.dir)], env=env, stdout=subprocess.DEVNULL)

    def client(self, key: str = "AIPROD_API_KEY", **kw: object) -> aiprod.Client:
        return aiprod.Client(self.env["AIPROD_ENDPOINT"], self.env[key], **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    path = os.environ.get("AIPROD_ENV_FILE")
    if not path:
        if os.environ.get("AIPROD_REQUIRE_CONFORMANCE") == "1":
            pytest.fail("AIPROD_ENV_FILE is not set: no server to run the fault tests against")
        pytest.skip("no server: set AIPROD_ENV_FILE to the env file of scripts/test-server.sh")
    env = dict(line.strip().split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)
    yield Server(Path(path).parent, env)


class Hook:
    """An on_attempt hook that records every attempt (called from several threads)."""

    def __init__(self) -> None:
        self.attempts: list[aiprod.Attempt] = []
        self.lock = threading.Lock()

    def __call__(self, attempt: aiprod.Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def failed(self, code: grpc.StatusCode, method: str = "") -> int:
        return sum(1 for a in self.attempts if a.code == code and a.method.endswith(method))


# The default budget (5 attempts: at most 1.5 s of waits) is shorter than this restart's outage
# (1.5 s down plus the stop and start, ~3 s): 15 attempts keep retrying until the deadline (20 s)
# bounds the call, as a partner riding out restarts would configure it.
RIDE_OUT = aiprod.RetryPolicy(max_attempts=15)


def test_restart_mid_call_loses_no_call(server: Server) -> None:
    hook = Hook()
    with server.client(retry=RIDE_OUT, on_attempt=hook, timeout=20.0) as client:
        client.presets.list_presets()
        restart = server.restart(down_ms=1500)
        calls, failures, jobs = 0, [], set()
        after: float | None = None
        # Calls run back to back through the whole restart and for 1 s after it.
        while after is None or time.monotonic() - after < 1.0:
            if after is None and restart.poll() is not None:
                after = time.monotonic()
            calls += 1
            try:
                if calls % 10 == 0:
                    job = client.render.create_job(preset_id=PRESET, brief=BRIEF, duration_s=DURATION).job
                    jobs.add(job.job_id)
                    client.render.get_job(job_id=job.job_id)
                    client.render.cancel_job(job_id=job.job_id, reason="fault test")
                elif calls % 2 == 0:
                    client.cost_estimator.estimate_cost(preset_id="quick_social", duration_s=15)
                else:
                    client.presets.list_presets()
            except aiprod.AiprodError as err:
                failures.append(err)
    assert restart.returncode == 0
    assert failures == [], f"{len(failures)} of {calls} calls failed"
    retried = hook.failed(grpc.StatusCode.UNAVAILABLE)
    assert retried > 0, "no attempt failed: the restart happened between calls"
    assert len(jobs) == calls // 10  # one job per CreateJob, none duplicated by its retries
    print(f"restart mid-call: {calls} calls, 0 failed, {retried} UNAVAILABLE attempts retried")


def test_restart_mid_watch_resumes_without_gap(server: Server) -> None:
    hook = Hook()
    with server.client(on_attempt=hook) as client:
        job = client.render.create_job(preset_id=PRESET, brief=BRIEF, duration_s=DURATION).job
        restart: subprocess.Popen[bytes] | None = None

        def approve_after_restart(etag: str) -> None:
            assert restart is not None
            restart.wait()
            # ApproveManifest is not retried on UNAVAILABLE (not safe to repeat), and grpc may still be
            # backing off its reconnect: a read (retried) first waits until the server is reachable.
            with server.client(retry=RIDE_OUT) as other:
                other.icc.get_manifest(job_id=job.job_id)
                other.icc.approve_manifest(job_id=job.job_id, etag=etag)

        seqs: list[int] = []
        approver: threading.Thread | None = None
        # The job waits at AWAITING_APPROVAL (no auto-approve): the restart happens while the watch
        # is open, and the approval after the restart lets the job finish.
        for event in client.watch_job(job.job_id, timeout=60):
            seqs.append(event.sequence)
            if event.state == JOB_STATE_AWAITING_APPROVAL and approver is None:
                etag = client.icc.get_manifest(job_id=job.job_id).manifest.etag
                restart = server.restart(down_ms=1500)
                approver = threading.Thread(target=approve_after_restart, args=(etag,))
                approver.start()
        assert approver is not None
        approver.join()
        assert restart is not None and restart.returncode == 0
        assert event.state == JOB_STATE_DELIVERED
        final = client.render.get_job(job_id=job.job_id).job
    assert seqs == list(range(1, final.last_sequence + 1)), f"gap or duplicate: {seqs}"
    watch = [a for a in hook.attempts if a.method.endswith("WatchJob")]
    assert len(watch) >= 2 and watch[0].code != grpc.StatusCode.OK, "the watch did not reconnect"
    print(f"restart mid-watch: {len(seqs)} events, {len(watch)} connections")


def test_bronze_burst_is_paced_by_retry_info(server: Server) -> None:
    hook = Hook()
    with server.client("AIPROD_BRONZE_API_KEY", on_attempt=hook) as client:
        for _ in range(15):  # Bronze allows 10 a minute: the last ~5 wait for RetryInfo
            client.presets.list_presets(timeout=20)
    throttled = hook.failed(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert throttled >= 4, f"only {throttled} throttled attempts"
    for a in hook.attempts:
        if a.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # each wait honoured the server's RetryInfo delay (seconds here, not the 100 ms backoff)
            assert a.error is not None and a.error.retry_delay is not None and a.retry_in is not None
            assert a.retry_in >= a.error.retry_delay

    # Without retries the same burst fails on RESOURCE_EXHAUSTED that carries RetryInfo.
    with server.client("AIPROD_BRONZE_API_KEY", retry=aiprod.RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(aiprod.AiprodError) as info:
            for _ in range(15):
                client.presets.list_presets(timeout=20)
    err = info.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retryable
    assert err.retry_delay is not None and err.retry_delay > 0
    print(f"bronze burst: 15 calls, {throttled} RESOURCE_EXHAUSTED attempts retried")

    # A deadline shorter than the RetryInfo wait surfaces the error at once instead of sleeping.
    with server.client("AIPROD_BRONZE_API_KEY", on_attempt=hook) as client:
        started = time.monotonic()
        with pytest.raises(aiprod.AiprodError) as info:
            client.presets.list_presets(timeout=1.0)
        elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.retry_delay is not None
    assert info.value.retry_delay > 1.0 and elapsed < 0.9


def test_an_expired_deadline_is_deadline_exceeded(server: Server) -> None:
    with server.client() as client:
        job = client.render.create_job(preset_id=PRESET, brief=BRIEF, duration_s=DURATION).job
        started = time.monotonic()
        with pytest.raises(aiprod.AiprodError) as info:
            for _ in client.watch_job(job.job_id, timeout=0.5):  # waits at AWAITING_APPROVAL
                pass
        elapsed = time.monotonic() - started
        client.render.cancel_job(job_id=job.job_id)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and info.value.is_transient()
    assert 0.4 < elapsed < 2.0
