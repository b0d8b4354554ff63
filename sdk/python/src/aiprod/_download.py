"""Artifact downloads over google.bytestream.ByteStream/Read: resuming, verified, atomic.

A download asks GetJob for the artifact (the final cut, or one shot's clip), then streams
``Read(resource_name@sha256, read_offset=<bytes already written>)`` into ``<path>.part``, hashing
as it goes. A transient failure resumes from the bytes written; a file replaced by a revision
(FAILED_PRECONDITION on the pinned version) starts over once from a fresh GetJob. At the end the
size and SHA-256 are checked against the artifact, the file is fsynced and renamed onto ``path``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Union

import grpc
import grpc.aio

from aiprod._call import DEFAULT_TIMEOUT, AsyncCaller, Caller, Metadata, Timeout
from aiprod._errors import AiprodError, from_rpc_error
from aiprod._google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from aiprod._mixins import TERMINAL_STATES
from aiprod._retry import Outage, RetryPolicy
from aiprod.v1 import job_pb2

if TYPE_CHECKING:
    from aiprod._services import AsyncRenderService, RenderService

__all__ = ["ArtifactNotAvailableError", "AsyncDownloader", "Downloader", "StrPath"]

_READ = "/google.bytestream.ByteStream/Read"

StrPath = Union[str, "os.PathLike[str]"]
"""A file system path: ``str`` or ``pathlib.Path``."""


class ArtifactNotAvailableError(AiprodError):
    """The artifact cannot be downloaded (yet): the job has no final cut, or the shot no clip.

    Its code is FAILED_PRECONDITION. The final cut exists from AWAITING_FINAL_APPROVAL on; a shot's
    clip as soon as the shot renders (and not while a revision re-renders it).
    """

    job: job_pb2.Job
    """The job as GetJob returned it."""
    shot_id: str | None
    """The shot whose clip was asked for; ``None`` for the final cut."""

    def __init__(self, job: job_pb2.Job, shot_id: str | None) -> None:
        self.job = job
        self.shot_id = shot_id
        what = "the video" if shot_id is None else f"the clip of shot {shot_id}"
        when = "" if job.state in TERMINAL_STATES else " yet"
        state = job_pb2.JobState.Name(job.state)
        super().__init__(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{what} of job {job.job_id} is not available{when} (job is {state})",
        )

    @property
    def state(self) -> job_pb2.JobState.ValueType:
        """The job's state when the download was asked for."""
        return self.job.state


def _pick_video(job: job_pb2.Job) -> job_pb2.VideoArtifact:
    if not job.HasField("video") or not job.video.resource_name:
        raise ArtifactNotAvailableError(job, None)
    return job.video


def _pick_clip(shot_id: str) -> Callable[[job_pb2.Job], job_pb2.VideoArtifact]:
    def pick(job: job_pb2.Job) -> job_pb2.VideoArtifact:
        if not job.shots:
            raise ArtifactNotAvailableError(job, shot_id)  # before approval there are no shots
        for shot in job.shots:
            if shot.shot_id == shot_id:
                if not shot.HasField("clip") or not shot.clip.resource_name:
                    raise ArtifactNotAvailableError(job, shot_id)
                return shot.clip
        known = ", ".join(s.shot_id for s in job.shots)
        raise AiprodError(grpc.StatusCode.NOT_FOUND, f"job {job.job_id} has no shot {shot_id} (shots: {known})")

    return pick


class _Attempts(Outage):
    """Retry bookkeeping of one download: an Outage (failures without a new byte) with its deadline."""

    def __init__(self, what: str, policy: RetryPolicy, timeout: float | None) -> None:
        super().__init__(f"download of {what}", policy, timeout)
        self.reads = 0

    def call_timeout(self) -> Timeout:
        left = self.remaining()
        return DEFAULT_TIMEOUT if left is None else left


class _Replaced(Exception):
    """The pinned version is gone: a revision replaced the file (FAILED_PRECONDITION)."""

    def __init__(self, err: AiprodError) -> None:
        super().__init__(err.message)
        self.err = err


class _Part:
    """``<path>.part``: written and hashed chunk by chunk, verified, then renamed onto ``path``."""

    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)
        self.part = self.path + ".part"
        self.file = open(self.part, "wb")  # closed by finish() or discard()
        self.hash = hashlib.sha256()
        self.written = 0

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes, artifact: job_pb2.VideoArtifact) -> None:
        if self.written + len(data) > artifact.size_bytes:
            raise AiprodError(
                grpc.StatusCode.DATA_LOSS,
                f"{artifact.resource_name}: the server sent more than the {artifact.size_bytes} bytes GetJob announced",
            )
        self.file.write(data)
        self.hash.update(data)
        self.written += len(data)

    def finish(self, artifact: job_pb2.VideoArtifact) -> None:
        """Checks the size and SHA-256, fsyncs and renames the file onto ``path``."""
        digest = self.hash.hexdigest()
        if self.written != artifact.size_bytes or digest != artifact.sha256.lower():
            raise AiprodError(
                grpc.StatusCode.DATA_LOSS,
                f"{artifact.resource_name}: downloaded {self.written} bytes with SHA-256 {digest}, "
                f"expected {artifact.size_bytes} bytes with SHA-256 {artifact.sha256}; "
                f"the partial file was deleted",
            )
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.part, self.path)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self.part)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    """Makes a rename in ``path`` durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_artifact(artifact: job_pb2.VideoArtifact) -> str:
    """The pinned resource name of the artifact (``name@sha256``)."""
    if not artifact.sha256:
        raise AiprodError(grpc.StatusCode.INTERNAL, f"{artifact.resource_name}: GetJob gave no sha256 to verify")
    return f"{artifact.resource_name}@{artifact.sha256}"


def _short(artifact: job_pb2.VideoArtifact, written: int) -> AiprodError:
    return AiprodError(
        grpc.StatusCode.DATA_LOSS,
        f"{artifact.resource_name}: the stream ended at byte {written} of {artifact.size_bytes}; "
        f"the partial file was deleted",
    )


def _read_request(name: str, offset: int, limit: int) -> bytestream_pb2.ReadRequest:
    if offset < 0 or limit < 0:
        raise ValueError("read_offset and read_limit must be >= 0")
    return bytestream_pb2.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit)


def _failed(caller: Caller | AsyncCaller, attempts: _Attempts, err: AiprodError, offset: int, started: float) -> float:
    """Reports a failed Read to the hook; returns the wait before resuming (or raises to give up)."""
    try:
        wait = attempts.failed(err, f"at byte {offset}")
    except AiprodError as final:
        caller.report(_READ, attempts.reads, started, final)
        raise
    caller.report(_READ, attempts.reads, started, err, wait)
    return wait


class Downloader:
    """The sync ByteStream reads and downloads of :class:`aiprod.Client`."""

    def __init__(self, caller: Caller, render: RenderService) -> None:
        self._caller = caller
        self._render = render
        self._stub = bytestream_pb2_grpc.ByteStreamStub(caller.channel)

    def read_resource(
        self,
        resource_name: str,
        *,
        read_offset: int = 0,
        read_limit: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[bytes, None, None]:
        request = _read_request(resource_name, read_offset, read_limit)
        call = self._stub.Read(request, timeout=timeout, metadata=self._caller.metadata(metadata))
        try:
            for response in call:
                if response.data:
                    yield response.data
        except grpc.RpcError as raw:
            raise from_rpc_error(raw) from None
        finally:
            call.cancel()

    def download(
        self,
        job_id: str,
        shot_id: str | None,
        path: StrPath,
        retry: RetryPolicy | None,
        timeout: float | None,
        metadata: Metadata,
    ) -> job_pb2.VideoArtifact:
        if not job_id:
            raise ValueError("job_id is required")
        if shot_id is not None and not shot_id:
            raise ValueError("shot_id is required")
        pick = _pick_video if shot_id is None else _pick_clip(shot_id)
        what = f"job {job_id} " + ("video" if shot_id is None else f"shot {shot_id} clip")
        attempts = _Attempts(what, retry or self._caller.policy, timeout)
        part = _Part(path)
        try:
            restarted = False
            while True:
                artifact = self._artifact(job_id, pick, attempts, metadata)
                try:
                    self._stream(artifact, part, attempts, metadata)
                except _Replaced as replaced:
                    if restarted:
                        raise replaced.err from None
                    restarted = True
                    part.restart()
                    attempts.progressed()
                    continue
                part.finish(artifact)
                return artifact
        except BaseException:
            part.discard()
            raise

    def _artifact(
        self,
        job_id: str,
        pick: Callable[[job_pb2.Job], job_pb2.VideoArtifact],
        attempts: _Attempts,
        metadata: Metadata,
    ) -> job_pb2.VideoArtifact:
        while True:
            try:
                job = self._render.get_job(job_id=job_id, timeout=attempts.call_timeout(), metadata=metadata).job
            except AiprodError as err:
                time.sleep(attempts.failed(err, "reading GetJob"))
                continue
            return pick(job)

    def _stream(self, artifact: job_pb2.VideoArtifact, part: _Part, attempts: _Attempts, metadata: Metadata) -> None:
        name = _check_artifact(artifact)
        while True:
            before = part.written
            attempts.reads += 1
            started = time.monotonic()
            call = self._stub.Read(
                _read_request(name, part.written, 0),
                timeout=attempts.remaining(),
                metadata=self._caller.metadata(metadata),
            )
            err: AiprodError | None = None
            try:
                for response in call:
                    if response.data:
                        part.write(response.data, artifact)
                        attempts.progressed()
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                self._caller.report(_READ, attempts.reads, started)
                if part.written >= artifact.size_bytes:
                    return
                if part.written == before:
                    raise _short(artifact, part.written)
                continue  # ended early but made progress: ask for the rest
            if err.code == grpc.StatusCode.FAILED_PRECONDITION:
                self._caller.report(_READ, attempts.reads, started, err)
                raise _Replaced(err)
            time.sleep(_failed(self._caller, attempts, err, part.written, started))


class AsyncDownloader:
    """The asyncio ByteStream reads and downloads of :class:`aiprod.AsyncClient`."""

    _stub: bytestream_pb2_grpc.ByteStreamAsyncStub

    def __init__(self, caller: AsyncCaller, render: AsyncRenderService) -> None:
        self._caller = caller
        self._render = render
        self._stub = bytestream_pb2_grpc.ByteStreamStub(caller.channel)

    async def read_resource(
        self,
        resource_name: str,
        *,
        read_offset: int = 0,
        read_limit: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[bytes, None]:
        request = _read_request(resource_name, read_offset, read_limit)
        call = self._stub.Read(request, timeout=timeout, metadata=self._caller.metadata(metadata))
        try:
            async for response in call:
                if response.data:
                    yield response.data
        except grpc.RpcError as raw:
            raise from_rpc_error(raw) from None
        finally:
            call.cancel()

    async def download(
        self,
        job_id: str,
        shot_id: str | None,
        path: StrPath,
        retry: RetryPolicy | None,
        timeout: float | None,
        metadata: Metadata,
    ) -> job_pb2.VideoArtifact:
        if not job_id:
            raise ValueError("job_id is required")
        if shot_id is not None and not shot_id:
            raise ValueError("shot_id is required")
        pick = _pick_video if shot_id is None else _pick_clip(shot_id)
        what = f"job {job_id} " + ("video" if shot_id is None else f"shot {shot_id} clip")
        attempts = _Attempts(what, retry or self._caller.policy, timeout)
        part = _Part(path)
        try:
            restarted = False
            while True:
                artifact = await self._artifact(job_id, pick, attempts, metadata)
                try:
                    await self._stream(artifact, part, attempts, metadata)
                except _Replaced as replaced:
                    if restarted:
                        raise replaced.err from None
                    restarted = True
                    part.restart()
                    attempts.progressed()
                    continue
                # fsync and rename off the event loop
                await asyncio.to_thread(part.finish, artifact)
                return artifact
        except BaseException:
            part.discard()
            raise

    async def _artifact(
        self,
        job_id: str,
        pick: Callable[[job_pb2.Job], job_pb2.VideoArtifact],
        attempts: _Attempts,
        metadata: Metadata,
    ) -> job_pb2.VideoArtifact:
        while True:
            try:
                response = await self._render.get_job(job_id=job_id, timeout=attempts.call_timeout(), metadata=metadata)
            except AiprodError as err:
                await asyncio.sleep(attempts.failed(err, "reading GetJob"))
                continue
            return pick(response.job)

    async def _stream(
        self, artifact: job_pb2.VideoArtifact, part: _Part, attempts: _Attempts, metadata: Metadata
    ) -> None:
        name = _check_artifact(artifact)
        while True:
            before = part.written
            attempts.reads += 1
            started = time.monotonic()
            call = self._stub.Read(
                _read_request(name, part.written, 0),
                timeout=attempts.remaining(),
                metadata=self._caller.metadata(metadata),
            )
            err: AiprodError | None = None
            try:
                async for response in call:
                    if response.data:
                        # chunks of at most 256 KiB: written and hashed in place
                        part.write(response.data, artifact)
                        attempts.progressed()
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
            finally:
                call.cancel()
            if err is None:
                self._caller.report(_READ, attempts.reads, started)
                if part.written >= artifact.size_bytes:
                    return
                if part.written == before:
                    raise _short(artifact, part.written)
                continue
            if err.code == grpc.StatusCode.FAILED_PRECONDITION:
                self._caller.report(_READ, attempts.reads, started, err)
                raise _Replaced(err)
            await asyncio.sleep(_failed(self._caller, attempts, err, part.written, started))
