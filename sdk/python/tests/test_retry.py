"""Unit tests of the production semantics (sdk/PRODUCTION.md) against the in-process fake server:
which unary calls are retried, the backoff and its deadline, the attempt hook, the user-agent."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from fake_server import ADMIN_TOKEN, API_KEY, FakeServer

import aiprod
from aiprod.v1 import CreateJobRequest, Tier

QUICK = aiprod.RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


class Hook:
    """An on_attempt hook that records every attempt."""

    def __init__(self) -> None:
        self.attempts: list[aiprod.Attempt] = []

    def __call__(self, attempt: aiprod.Attempt) -> None:
        self.attempts.append(attempt)

    def codes(self, method: str) -> list[grpc.StatusCode]:
        return [a.code for a in self.attempts if a.method.endswith(method)]


def client(fake: FakeServer, hook: Hook, retry: aiprod.RetryPolicy = QUICK) -> aiprod.Client:
    return aiprod.Client(fake.endpoint, API_KEY, admin_token=ADMIN_TOKEN, retry=retry, on_attempt=hook)


def test_backoff_is_full_jitter_capped_and_floored() -> None:
    policy = aiprod.RetryPolicy()
    random.seed(7)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (20, 5.0)]:
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert all(0.0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2  # spread over the whole range
    assert all(policy.backoff(1, floor=1.5) >= 1.5 for _ in range(50))
    with pytest.raises(ValueError):
        aiprod.RetryPolicy(max_attempts=0)


def test_unavailable_read_is_retried_and_hooked(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c:
        c.presets.get_preset(preset_id="unavailable-2")
    assert hook.codes("GetPreset") == [grpc.StatusCode.UNAVAILABLE] * 2 + [grpc.StatusCode.OK]
    assert [a.attempt for a in hook.attempts] == [1, 2, 3]
    assert hook.attempts[0].method == "/aiprod.v1.PresetService/GetPreset"
    assert hook.attempts[0].retry_in is not None and hook.attempts[-1].retry_in is None
    assert hook.attempts[0].error is not None and hook.attempts[-1].error is None
    assert all(a.duration >= 0 for a in hook.attempts)


def test_attempt_budget(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c, pytest.raises(aiprod.AiprodError) as info:
        c.presets.get_preset(preset_id="unavailable-9")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.is_transient()
    assert len(hook.codes("GetPreset")) == 5  # the default max_attempts, the first included
    with client(fake, hook, aiprod.RetryPolicy(max_attempts=1)) as c, pytest.raises(aiprod.AiprodError):
        c.presets.get_preset(preset_id="unavailable-1")
    assert len(hook.codes("GetPreset")) == 6  # max_attempts=1: no retry


def test_create_job_fills_one_request_id_for_every_attempt(fake: FakeServer) -> None:
    hook = Hook()
    request = CreateJobRequest(preset_id="quick_social", brief="flaky brief for a retry")
    with client(fake, hook) as c:
        job = c.render.create_job(request).job
    assert hook.codes("CreateJob") == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK]
    first, second = fake.rec.request_ids
    assert first == second == job.request_id and len(first) == 36  # a UUID, the same on the retry
    assert request.request_id == ""  # the caller's message is left alone
    with client(fake, hook) as c:
        c.render.create_job(request_id="mine-1", preset_id="quick_social", brief="a brief of ten+")
    assert fake.rec.request_ids[-1] == "mine-1"


def test_unsafe_call_is_not_retried_on_unavailable(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c, pytest.raises(aiprod.AiprodError) as info:
        c.admin.create_tenant(name="unavailable", tier=Tier.TIER_BRONZE)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert hook.codes("CreateTenant") == [grpc.StatusCode.UNAVAILABLE]


def test_resource_exhausted_with_retry_info_is_retried_for_any_call(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c:
        c.admin.create_tenant(name="throttled", tier=Tier.TIER_BRONZE)  # not idempotent, still retried
        c.presets.get_preset(preset_id="throttled")
    for method in ("CreateTenant", "GetPreset"):
        assert hook.codes(method) == [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK]
    retry_in = [a.retry_in for a in hook.attempts if a.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all(r is not None and r >= 0.05 for r in retry_in)  # RetryInfo is a floor


def test_quota_without_retry_info_and_other_codes_are_not_retried(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c:
        for preset, code in [("quota", grpc.StatusCode.RESOURCE_EXHAUSTED), ("internal", grpc.StatusCode.INTERNAL)]:
            with pytest.raises(aiprod.AiprodError) as info:
                c.presets.get_preset(preset_id=preset)
            assert info.value.code == code and not info.value.is_transient()
    assert len(hook.codes("GetPreset")) == 2


def test_deadline_shorter_than_the_retry_wait_surfaces_the_error_at_once(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook, aiprod.RetryPolicy()) as c:
        started = time.monotonic()
        with pytest.raises(aiprod.AiprodError) as info:
            c.presets.get_preset(preset_id="throttled-long", timeout=0.5)  # RetryInfo: 1.5 s
        elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.retryable
    assert info.value.retry_delay == pytest.approx(1.5)
    assert elapsed < 0.4  # no sleeping towards a retry that could not finish in time
    assert hook.codes("GetPreset") == [grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_deadline_bounds_the_attempts_and_is_reported_as_deadline_exceeded(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c, pytest.raises(aiprod.AiprodError) as info:
        c.presets.get_preset(preset_id="slow", timeout=0.3)  # the server takes 2 s
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and info.value.is_transient()
    assert hook.codes("GetPreset") == [grpc.StatusCode.DEADLINE_EXCEEDED]


async def test_async_client_retries_and_hooks(fake: FakeServer) -> None:
    hook = Hook()
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=QUICK, on_attempt=hook) as c:
        await c.presets.get_preset(preset_id="unavailable-1")
        await c.render.create_job(preset_id="quick_social", brief="flaky async brief")
        with pytest.raises(aiprod.AiprodError) as info:
            await c.presets.get_preset(preset_id="throttled-long", timeout=0.5)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert hook.codes("GetPreset") == [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]
    assert hook.codes("CreateJob") == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK]
    assert fake.rec.request_ids[0] == fake.rec.request_ids[1] != ""


def test_user_agent_names_the_sdk_and_version(fake: FakeServer) -> None:
    with client(fake, Hook()) as c:
        c.presets.list_presets()
    ua = fake.rec.user_agent["ListPresets"]
    assert ua.startswith(f"aiprod-sdk-python/{aiprod.__version__} ") and "grpc-python" in ua
    assert aiprod.USER_AGENT == f"aiprod-sdk-python/{aiprod.__version__}"


def test_watch_reconnects_are_hooked(fake: FakeServer) -> None:
    hook = Hook()
    with client(fake, hook) as c:
        assert [e.sequence for e in c.watch_job("flaky")] == [1, 2, 3, 4, 5, 6]
    watch = [a for a in hook.attempts if a.method.endswith("WatchJob")]
    assert [(a.attempt, a.code) for a in watch] == [
        (1, grpc.StatusCode.UNAVAILABLE),
        (2, grpc.StatusCode.OK),  # ended early; GetJob says RENDERING, so it resumes
        (3, grpc.StatusCode.OK),
    ]


def test_channel_keepalive_and_user_agent_options() -> None:
    from aiprod._client import _channel_options

    options = dict(_channel_options([("grpc.keepalive_time_ms", 60_000)]))
    assert options["grpc.keepalive_time_ms"] == 60_000  # the caller's options win
    defaults = dict(_channel_options(()))
    assert defaults["grpc.keepalive_time_ms"] == 30_000 and defaults["grpc.keepalive_timeout_ms"] == 10_000
    assert defaults["grpc.keepalive_permit_without_calls"] == 0  # pings only while calls are open
    assert defaults["grpc.primary_user_agent"] == aiprod.USER_AGENT
