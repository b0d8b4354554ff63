"""Unit tests of the sync client against the in-process fake server."""

from __future__ import annotations

import time

import grpc
import pytest
from fake_server import ADMIN_TOKEN, API_KEY, FakeServer

import aiprod
from aiprod.testing import DropProxy
from aiprod.v1 import JOB_STATE_DELIVERED, GetPresetRequest, ListJobsRequest

# Quick backoff, and streams give up after 0.3 s of failures in a row.
FAST = aiprod.RetryPolicy(initial_backoff=0.01, max_backoff=0.05, watch_resume_timeout=0.3)


def client(fake: FakeServer, **kw: object) -> aiprod.Client:
    return aiprod.Client(fake.endpoint, API_KEY, admin_token=ADMIN_TOKEN, **kw)  # type: ignore[arg-type]


def test_bearer_token_and_default_deadline(fake: FakeServer) -> None:
    with client(fake, timeout=12.0) as c:
        presets = c.presets.list_presets().presets
        assert [p.preset_id for p in presets] == ["quick_social", "brand_campaign", "premium_spot"]
        c.admin.list_tenants()
    assert fake.rec.auth["ListPresets"] == f"Bearer {API_KEY}"
    assert fake.rec.auth["ListTenants"] == f"Bearer {ADMIN_TOKEN}"
    remaining = fake.rec.time_remaining["ListPresets"]
    assert remaining is not None and 10.0 < remaining <= 12.5


def test_per_call_timeout_overrides_default(fake: FakeServer) -> None:
    with client(fake, timeout=12.0) as c:
        c.presets.get_preset(preset_id="x", timeout=3.0)
        assert (r := fake.rec.time_remaining["GetPreset"]) is not None and r <= 3.5
        c.presets.get_preset(GetPresetRequest(preset_id="x"), timeout=None)
        assert (r := fake.rec.time_remaining["GetPreset"]) is None or r > 1e6  # no deadline
        with pytest.raises(aiprod.AiprodError) as info:
            c.presets.get_preset(preset_id="slow", timeout=0.2)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_request_or_fields_not_both(fake: FakeServer) -> None:
    with client(fake) as c, pytest.raises(TypeError):
        c.presets.get_preset(GetPresetRequest(preset_id="x"), preset_id="y")


def test_missing_key_is_unauthenticated_with_error_info(fake: FakeServer) -> None:
    with aiprod.Client(fake.endpoint, "") as c, pytest.raises(aiprod.AiprodError) as info:
        c.presets.list_presets()
    err = info.value
    assert err.code == aiprod.StatusCode.UNAUTHENTICATED
    assert err.reason == "API_KEY_INVALID"
    assert err.error_info is not None and err.error_info.domain == "aiprod.dev"


def test_invalid_argument_field_violations(fake: FakeServer) -> None:
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        c.render.create_job(request_id="", preset_id="quick_social", brief="", duration_s=1000)
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "invalid CreateJob"
    assert [v.field for v in err.field_violations] == ["brief", "duration_s"]  # request_id: filled by the SDK
    assert "brief: must be 10-10000 characters" in str(err)


def test_quota_retry_and_precondition_details(fake: FakeServer) -> None:
    with client(fake) as c:
        with pytest.raises(aiprod.AiprodError) as info:
            c.render.get_job(job_id="busy", retry=aiprod.RetryPolicy(max_attempts=1))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.quota_violations == [aiprod.QuotaViolation("tenant:acme", "rps")]
        assert info.value.retry_delay == pytest.approx(1.5)
        with pytest.raises(aiprod.AiprodError) as info:
            c.render.get_job(job_id="late")
        assert info.value.precondition_violations == [
            aiprod.PreconditionViolation("STATE", "job:late", "already delivered")
        ]
        with pytest.raises(aiprod.AiprodError) as info:
            c.render.get_job(job_id="nope")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert info.value.details == [] and info.value.field_violations == []


def test_iter_jobs_follows_page_tokens(fake: FakeServer) -> None:
    with client(fake) as c:
        ids = [j.job_id for j in c.iter_jobs(page_size=2)]
        assert ids == [f"job-{i}" for i in range(7)]
        assert [j.job_id for j in c.render.iter_jobs(ListJobsRequest(page_size=5))] == ids
        assert [t.tenant_id for t in c.iter_tenants()] == [f"ten_{i}" for i in range(5)]


def test_watch_until_terminal(fake: FakeServer) -> None:
    with client(fake) as c:
        events = list(c.watch_job("ok"))
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].state == JOB_STATE_DELIVERED


def test_watch_resumes_without_gap_or_duplicate(fake: FakeServer) -> None:
    with client(fake, retry=FAST) as c:
        seqs = [e.sequence for e in c.watch_job("flaky", 0)]
    assert seqs == [1, 2, 3, 4, 5, 6]
    # resumed after 3 (UNAVAILABLE) and after 4 (stream ended early)
    assert fake.rec.watch_after == [0, 3, 4]


def test_watch_from_after_sequence(fake: FakeServer) -> None:
    with client(fake) as c:
        assert [e.sequence for e in c.watch_job("ok", 4)] == [5, 6]


def test_watch_not_found_is_not_retried(fake: FakeServer) -> None:
    with client(fake, retry=FAST) as c, pytest.raises(aiprod.AiprodError) as info:
        list(c.watch_job("gone"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert fake.rec.watch_connections == 1


def test_watch_gives_up_after_watch_resume_timeout(fake: FakeServer) -> None:
    started = time.monotonic()
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        list(c.watch_job("down", retry=FAST))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "gave up after" in info.value.message and "watch_resume_timeout 0.3 s" in info.value.message
    # each wait is at most 0.05 s, so 0.3 s of failures is several reconnects, and no more than 0.3 s
    assert fake.rec.watch_connections >= 4
    assert time.monotonic() - started < 2.0


def test_watch_resumes_after_real_connection_drop(fake: FakeServer) -> None:
    with DropProxy(fake.endpoint) as proxy, aiprod.Client(proxy.endpoint, API_KEY, retry=FAST) as c:
        seqs = []
        for ev in c.watch_job("slow"):
            seqs.append(ev.sequence)
            if len(seqs) == 2:
                assert proxy.drop_connections() >= 1
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert len(fake.rec.watch_after) >= 2 and fake.rec.watch_after[0] == 0
    assert fake.rec.watch_after[1] == 2


def test_closing_the_watch_cancels_the_stream(fake: FakeServer) -> None:
    with client(fake) as c:
        it = c.watch_job("slow")
        assert next(it).sequence == 1
        it.close()


def test_parse_endpoint() -> None:
    assert aiprod.parse_endpoint("http://127.0.0.1:5000") == ("127.0.0.1:5000", False)
    assert aiprod.parse_endpoint("https://api.example.com") == ("api.example.com:443", True)
    assert aiprod.parse_endpoint("api.example.com:8443") == ("api.example.com:8443", True)
    assert aiprod.parse_endpoint("localhost:50051") == ("localhost:50051", False)
    assert aiprod.parse_endpoint("localhost:50051", tls=True) == ("localhost:50051", True)
    with pytest.raises(ValueError):
        aiprod.parse_endpoint("ftp://x")


def test_watch_timeout_bounds_the_whole_watch(fake: FakeServer) -> None:
    with client(fake) as c:
        seqs = []
        with pytest.raises(aiprod.AiprodError) as info:
            for ev in c.watch_job("hang", timeout=0.5):
                seqs.append(ev.sequence)
    assert seqs == [1]
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_watch_after_the_terminal_event_ends_at_once(fake: FakeServer) -> None:
    with client(fake, retry=FAST) as c:
        assert list(c.watch_job("done", 6)) == []
        assert list(c.watch_job("ok", 6)) == []
    assert fake.rec.watch_after == [6, 6]
