"""Unit tests of download_video / download_shot_clip / read_resource against the fake ByteStream."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import grpc
import pytest
from fake_server import API_KEY, CHUNK, VIDEO_SIZE, FakeServer, Fault, blob

import aiprod
from aiprod.testing import DropProxy
from aiprod.v1 import JOB_STATE_PLANNING, JOB_STATE_RENDERING

# Quick backoff, and streams give up after 0.3 s of failures in a row.
FAST = aiprod.RetryPolicy(initial_backoff=0.01, max_backoff=0.05, watch_resume_timeout=0.3)


def client(fake: FakeServer, **kw: object) -> aiprod.Client:
    return aiprod.Client(fake.endpoint, API_KEY, retry=FAST, **kw)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_download_video(fake: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    with client(fake) as c:
        video = c.download_video("cut", out)
    want = fake.files["jobs/cut/video"].data
    assert out.read_bytes() == want
    assert video.resource_name == "jobs/cut/video"
    assert video.size_bytes == VIDEO_SIZE and video.sha256 == sha(want)
    assert video.frame_count == 96 and video.mime_type == "video/mp4"
    assert out.read_bytes()[4:8] == b"ftyp"
    # one Read, pinned to the version GetJob announced
    assert fake.rec.reads == [(f"jobs/cut/video@{sha(want)}", 0)]
    assert leftovers(tmp_path) == ["video.mp4"]


def test_download_resumes_after_a_stream_abort(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [Fault(after_chunks=3), Fault(after_chunks=5)]
    out = tmp_path / "video.mp4"
    with client(fake) as c:
        video = c.download_video("cut", str(out))
    want = fake.files["jobs/cut/video"].data
    assert sha(out.read_bytes()) == video.sha256 == sha(want)
    # resumed exactly where each broken stream stopped
    assert [offset for _, offset in fake.rec.reads] == [0, 3 * CHUNK, 8 * CHUNK]
    assert leftovers(tmp_path) == ["video.mp4"]


def test_download_resumes_after_a_dropped_connection(fake: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    with DropProxy(fake.endpoint) as proxy, aiprod.Client(proxy.endpoint, API_KEY, retry=FAST) as c:
        fake.drop = proxy.drop_connections
        fake.bytestream.script = [Fault(after_chunks=4, drop=True)]
        video = c.download_video("cut", out)
        assert proxy.drops == 1 and proxy.accepted >= 2
    want = fake.files["jobs/cut/video"].data
    assert out.read_bytes() == want and video.sha256 == sha(want)
    offsets = [offset for _, offset in fake.rec.reads]
    assert len(offsets) == 2 and offsets[0] == 0
    # resumed from the bytes the client had written: every chunk sent before the drop (or fewer)
    assert 0 < offsets[1] <= 4 * CHUNK and offsets[1] % CHUNK == 0


def test_download_retries_resource_exhausted_with_retry_info(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [Fault(after_chunks=2, code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.05)]
    with client(fake) as c:
        c.download_video("cut", tmp_path / "v.mp4")
    assert [offset for _, offset in fake.rec.reads] == [0, 2 * CHUNK]


def test_download_resumes_a_stream_that_ended_early(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [Fault(after_chunks=2, code=None)]
    with client(fake) as c:
        video = c.download_video("cut", tmp_path / "v.mp4")
    assert sha((tmp_path / "v.mp4").read_bytes()) == video.sha256
    assert [offset for _, offset in fake.rec.reads] == [0, 2 * CHUNK]


def test_download_gives_up_after_retries_without_progress(fake: FakeServer, tmp_path: Path) -> None:
    # the first Read makes progress then breaks; the retries bring no byte for watch_resume_timeout
    fake.bytestream.script = [Fault(after_chunks=1)] + [Fault(after_chunks=0)] * 1000
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        c.download_video("cut", tmp_path / "v.mp4")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "gave up after" in info.value.message and "at byte 65536" in info.value.message
    offsets = [offset for _, offset in fake.rec.reads]
    assert offsets[0] == 0 and len(offsets) >= 4 and set(offsets[1:]) == {CHUNK}
    assert leftovers(tmp_path) == []


def test_download_starts_over_once_when_a_revision_replaced_the_file(fake: FakeServer, tmp_path: Path) -> None:
    v1 = fake.files["jobs/revised/video"]
    v2 = blob("revised/v2", 700_001)
    # the connection breaks after 2 chunks, and meanwhile a revision replaced the file
    fake.bytestream.script = [Fault(after_chunks=2, replace=v2)]
    with client(fake) as c:
        video = c.download_video("revised", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == v2
    assert video.sha256 == sha(v2) and video.size_bytes == len(v2)
    assert fake.rec.reads == [
        (f"jobs/revised/video@{v1.sha256}", 0),
        (f"jobs/revised/video@{v1.sha256}", 2 * CHUNK),  # FAILED_PRECONDITION: not that version any more
        (f"jobs/revised/video@{sha(v2)}", 0),
    ]


def test_download_replaced_twice_fails(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [
        Fault(after_chunks=1, replace=blob("v2", 300_000)),
        None,
        Fault(after_chunks=1, replace=blob("v3", 300_000)),
    ]
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        c.download_video("revised", tmp_path / "v.mp4")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not isinstance(info.value, aiprod.ArtifactNotAvailableError)
    assert leftovers(tmp_path) == []


def test_download_detects_a_hash_mismatch(fake: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    out.write_bytes(b"previous")
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        c.download_video("badhash", out)
    err = info.value
    assert err.code == grpc.StatusCode.DATA_LOSS
    assert f"expected {VIDEO_SIZE} bytes with SHA-256 {fake.files['jobs/badhash/video'].sha256}" in err.message
    assert "partial file was deleted" in err.message
    # the .part file is gone and the existing file was not touched
    assert leftovers(tmp_path) == ["video.mp4"] and out.read_bytes() == b"previous"


def test_download_not_available_yet(fake: FakeServer, tmp_path: Path) -> None:
    with client(fake) as c:
        with pytest.raises(aiprod.ArtifactNotAvailableError) as info:
            c.download_video("rendering", tmp_path / "v.mp4")
        err = info.value
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.state == JOB_STATE_RENDERING and err.shot_id is None
        assert (
            str(err)
            == "FAILED_PRECONDITION: the video of job rendering is not available yet (job is JOB_STATE_RENDERING)"
        )
        with pytest.raises(aiprod.ArtifactNotAvailableError) as info:
            c.download_shot_clip("rendering", "s2", tmp_path / "s2.mp4")
        assert "the clip of shot s2 of job rendering is not available yet" in info.value.message
        with pytest.raises(aiprod.ArtifactNotAvailableError) as info:
            c.download_shot_clip("planning", "s1", tmp_path / "s1.mp4")
        assert info.value.state == JOB_STATE_PLANNING
        with pytest.raises(aiprod.AiprodError) as info2:
            c.download_shot_clip("rendering", "s9", tmp_path / "s9.mp4")
        assert info2.value.code == grpc.StatusCode.NOT_FOUND and "shots: s1, s2" in info2.value.message
        with pytest.raises(aiprod.AiprodError) as info2:
            c.download_video("nope", tmp_path / "n.mp4")
        assert info2.value.code == grpc.StatusCode.NOT_FOUND
    assert fake.rec.reads == []
    assert leftovers(tmp_path) == []


def test_download_shot_clip_while_rendering(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [Fault(after_chunks=1)]
    with client(fake) as c:
        clip = c.download_shot_clip("rendering", "s1", tmp_path / "s1.mp4")
    want = fake.files["jobs/rendering/shots/s1/clip"].data
    assert (tmp_path / "s1.mp4").read_bytes() == want
    assert clip.resource_name == "jobs/rendering/shots/s1/clip" and clip.sha256 == sha(want)
    assert [offset for _, offset in fake.rec.reads] == [0, CHUNK]


def test_download_timeout_bounds_the_whole_download(fake: FakeServer, tmp_path: Path) -> None:
    # RetryInfo asks for 1 s, more than the 0.5 s deadline leaves: no retry, the error at once
    fake.bytestream.script = [Fault(after_chunks=1, code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=1.0)]
    started = time.monotonic()
    with client(fake) as c, pytest.raises(aiprod.AiprodError) as info:
        c.download_video("cut", tmp_path / "v.mp4", timeout=0.5, retry=aiprod.RetryPolicy())
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.retry_delay == 1.0
    assert time.monotonic() - started < 0.4
    assert leftovers(tmp_path) == []


def test_read_resource(fake: FakeServer) -> None:
    data = fake.files["jobs/cut/video"].data
    with client(fake) as c:
        assert b"".join(c.read_resource("jobs/cut/video")) == data
        part = b"".join(c.read_resource("jobs/cut/video", read_offset=100_000, read_limit=200_000))
        assert part == data[100_000:300_000]
        assert b"".join(c.read_resource("jobs/cut/video", read_offset=len(data))) == b""
        for name, offset, code in [
            ("jobs/other/video", 0, grpc.StatusCode.NOT_FOUND),
            ("jobs/cut/video", len(data) + 1, grpc.StatusCode.OUT_OF_RANGE),
            ("jobs/cut/video@" + "0" * 64, 0, grpc.StatusCode.FAILED_PRECONDITION),
        ]:
            with pytest.raises(aiprod.AiprodError) as info:
                list(c.read_resource(name, read_offset=offset))
            assert info.value.code == code
        with pytest.raises(ValueError):
            list(c.read_resource("jobs/cut/video", read_offset=-1))
    with aiprod.Client(fake.endpoint, "wrong") as c, pytest.raises(aiprod.AiprodError) as info:
        list(c.read_resource("jobs/cut/video"))
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


# asyncio


async def test_async_download_resumes_after_a_stream_abort(fake: FakeServer, tmp_path: Path) -> None:
    fake.bytestream.script = [Fault(after_chunks=3), Fault(after_chunks=5)]
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=FAST) as c:
        video = await c.download_video("cut", tmp_path / "video.mp4")
        clip = await c.download_shot_clip("cut", "s2", tmp_path / "s2.mp4")
    assert (tmp_path / "video.mp4").read_bytes() == fake.files["jobs/cut/video"].data
    assert video.sha256 == sha(fake.files["jobs/cut/video"].data)
    assert (tmp_path / "s2.mp4").read_bytes() == fake.files["jobs/cut/shots/s2/clip"].data
    assert clip.resource_name == "jobs/cut/shots/s2/clip"
    assert [offset for _, offset in fake.rec.reads] == [0, 3 * CHUNK, 8 * CHUNK, 0]
    assert leftovers(tmp_path) == ["s2.mp4", "video.mp4"]


async def test_async_download_resumes_after_a_dropped_connection(fake: FakeServer, tmp_path: Path) -> None:
    with DropProxy(fake.endpoint) as proxy:
        fake.drop = proxy.drop_connections
        fake.bytestream.script = [Fault(after_chunks=4, drop=True)]
        async with aiprod.AsyncClient(proxy.endpoint, API_KEY, retry=FAST) as c:
            video = await c.download_video("cut", tmp_path / "video.mp4")
        assert proxy.drops == 1
    assert sha((tmp_path / "video.mp4").read_bytes()) == video.sha256
    offsets = [offset for _, offset in fake.rec.reads]
    assert len(offsets) == 2 and 0 < offsets[1] <= 4 * CHUNK


async def test_async_download_errors(fake: FakeServer, tmp_path: Path) -> None:
    async with aiprod.AsyncClient(fake.endpoint, API_KEY, retry=FAST) as c:
        with pytest.raises(aiprod.AiprodError) as info:
            await c.download_video("badhash", tmp_path / "v.mp4")
        assert info.value.code == grpc.StatusCode.DATA_LOSS
        with pytest.raises(aiprod.ArtifactNotAvailableError) as info2:
            await c.download_video("rendering", tmp_path / "v.mp4")
        assert info2.value.state == JOB_STATE_RENDERING
        assert "not available yet (job is JOB_STATE_RENDERING)" in info2.value.message
    assert leftovers(tmp_path) == []


async def test_async_read_resource(fake: FakeServer) -> None:
    data = fake.files["jobs/cut/shots/s1/clip"].data
    async with aiprod.AsyncClient(fake.endpoint, API_KEY) as c:
        chunks = [chunk async for chunk in c.read_resource("jobs/cut/shots/s1/clip", read_offset=10)]
        assert b"".join(chunks) == data[10:]
        assert all(len(chunk) <= CHUNK for chunk in chunks)
        with pytest.raises(aiprod.AiprodError) as info:
            [chunk async for chunk in c.read_resource("jobs/nope/video")]
        assert info.value.code == grpc.StatusCode.NOT_FOUND
