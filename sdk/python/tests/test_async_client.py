"""Unit tests of the asyncio client against the in-process fake server."""

from __future__ import annotations

import grpc
import pytest
from fake_server import ADMIN_TOKEN, API_KEY, FakeServer

import aiprod
from aiprod.testing import DropProxy

# Quick backoff, and streams give up after 0.3 s of failures in a row.
FAST = aiprod.RetryPolicy(initial_backoff=0.01, max_backoff=0.05, watch_resume_timeout=0.3)


async def test_unary_auth_deadline_and_errors(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, admin_token=ADMIN_TOKEN, timeout=7.0) as c:
        resp = await c.presets.list_presets()
        assert len(resp.presets) == 3
        assert fake.rec.auth["ListPresets"] == f"Bearer {API_KEY}"
        remaining = fake.rec.time_remaining["ListPresets"]
        assert remaining is not None and 5.0 < remaining <= 7.5
        with pytest.raises(aiprod.AiprodError) as info:
            await c.render.create_job(request_id="", preset_id="quick_social", brief="", duration_s=1000)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in info.value.field_violations} == {
            "brief",
            "duration_s",
        }  # request_id: filled by the SDK
        with pytest.raises(aiprod.AiprodError) as info:
            await c.render.get_job(job_id="busy", retry=aiprod.RetryPolicy(max_attempts=1))
        assert info.value.retry_delay == pytest.approx(1.5)
        with pytest.raises(aiprod.AiprodError) as info:
            await c.presets.get_preset(preset_id="slow", timeout=0.2)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_async_iterators(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, admin_token=ADMIN_TOKEN) as c:
        ids = [j.job_id async for j in c.iter_jobs(page_size=2)]
        assert ids == [f"job-{i}" for i in range(7)]
        tenants = [t.tenant_id async for t in c.iter_tenants(page_size=3)]
        assert tenants == [f"ten_{i}" for i in range(5)]


async def test_async_watch_resumes(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=FAST) as c:
        seqs = [e.sequence async for e in c.watch_job("flaky")]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert fake.rec.watch_after == [0, 3, 4]


async def test_async_watch_not_found_and_give_up(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=FAST) as c:
        with pytest.raises(aiprod.AiprodError) as info:
            [e async for e in c.watch_job("gone")]
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(aiprod.AiprodError) as info:
            [e async for e in c.watch_job("down")]
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_async_watch_resumes_after_real_connection_drop(fake: FakeServer) -> None:
    with DropProxy(fake.endpoint) as proxy:
        async with aiprod.AsyncClient(proxy.endpoint, API_KEY, retry=FAST) as c:
            seqs = []
            async for ev in c.watch_job("slow"):
                seqs.append(ev.sequence)
                if len(seqs) == 2:
                    assert proxy.drop_connections() >= 1
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert fake.rec.watch_after[:2] == [0, 2]


async def test_async_watch_timeout(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY) as c:
        seqs = []
        with pytest.raises(aiprod.AiprodError) as info:
            async for ev in c.watch_job("hang", timeout=0.5):
                seqs.append(ev.sequence)
    assert seqs == [1]
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_async_watch_after_the_terminal_event_ends_at_once(fake: FakeServer) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=FAST) as c:
        assert [e async for e in c.watch_job("done", 6)] == []
    assert fake.rec.watch_after == [6]
