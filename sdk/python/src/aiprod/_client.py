"""The AIPROD clients: ``Client`` (sync, grpc) and ``AsyncClient`` (asyncio, grpc.aio)."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from aiprod._call import DEFAULT_TIMEOUT, AsyncCaller, Caller, Metadata, Timeout
from aiprod._download import AsyncDownloader, Downloader, StrPath
from aiprod._retry import AttemptHook, RetryPolicy
from aiprod._services import (
    AdminService,
    AsyncAdminService,
    AsyncCostEstimatorService,
    AsyncIccService,
    AsyncPresetService,
    AsyncRenderService,
    CostEstimatorService,
    IccService,
    PresetService,
    RenderService,
)
from aiprod._version import __version__
from aiprod.v1 import admin_service_pb2, job_pb2, render_service_pb2

__all__ = ["USER_AGENT", "AsyncClient", "Client", "parse_endpoint", "system_root_certificates"]

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def parse_endpoint(endpoint: str, tls: bool | None = None) -> tuple[str, bool]:
    """Returns (grpc target, use TLS) for ``http://host:port``, ``https://host[:port]`` or ``host:port``.

    ``http://`` is plaintext and ``https://`` is TLS (port 443 by default). A bare ``host:port`` uses
    TLS unless the host is a loopback address. ``tls`` overrides the choice.
    """
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be http://host:port, https://host[:port] or host:port: {endpoint!r}")
        secure = parts.scheme == "https"
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    else:
        target = endpoint
        host = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
        secure = host not in _LOOPBACK and not host.startswith("127.")
    return target, secure if tls is None else tls


# Keepalive pings every 30 s (10 s timeout) while calls are open, so that a dead connection under a
# long watch is noticed; the channel reconnects with the SDK's backoff (100 ms doubling to 5 s) rather
# than grpc-core's default 1 s start, so that calls succeed soon after a server is back.
_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

USER_AGENT = f"aiprod-sdk-python/{__version__}"
"""Sent before grpc's own user-agent on every call."""


def _channel_options(extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    options = dict(_DEFAULT_OPTIONS)
    options["grpc.primary_user_agent"] = USER_AGENT
    options.update(dict(extra))  # the caller's options win
    return list(options.items())


_SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)


def system_root_certificates() -> bytes | None:
    """The operating system's CA bundle (PEM), or None to use the roots that ship with grpcio.

    grpcio verifies TLS against its own bundled roots unless given others; AIPROD uses the system's,
    like every other HTTPS client on the machine (``SSL_CERT_FILE`` is honoured).
    """
    paths = ssl.get_default_verify_paths()
    for path in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile, *_SYSTEM_CA_FILES):
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    return None


def _credentials(root_certificates: bytes | None) -> grpc.ChannelCredentials:
    roots = root_certificates if root_certificates is not None else system_root_certificates()
    return grpc.ssl_channel_credentials(root_certificates=roots)


class _Settings:
    def __init__(
        self,
        endpoint: str | None,
        api_key: str | None,
        admin_token: str | None,
        timeout: float | None,
        tls: bool | None,
    ) -> None:
        endpoint = endpoint or os.environ.get("AIPROD_ENDPOINT")
        if not endpoint:
            raise ValueError("endpoint is required (or set AIPROD_ENDPOINT)")
        self.target, self.secure = parse_endpoint(endpoint, tls)
        self.api_key = api_key if api_key is not None else os.environ.get("AIPROD_API_KEY")
        self.admin_token = admin_token if admin_token is not None else os.environ.get("AIPROD_ADMIN_TOKEN")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 seconds, or None for no default deadline")
        self.timeout = timeout


class Client:
    """A synchronous AIPROD client.

    >>> with aiprod.Client("http://127.0.0.1:50051", api_key="aiprod_test_...") as client:
    ...     presets = client.presets.list_presets().presets

    Every service is an attribute with one snake_case method per RPC: ``presets``
    (PresetService), ``cost_estimator`` (CostEstimatorService), ``render`` (RenderService),
    ``icc`` (IccService) and ``admin`` (AdminService, authenticated with ``admin_token``).
    Methods take the request message or its fields as keyword arguments, plus ``timeout``
    (seconds; ``None`` for no deadline) and ``metadata``; they return the response message and
    raise :class:`aiprod.AiprodError` on failure. ``download_video`` and ``download_shot_clip``
    save a job's artifacts to disk (google.bytestream Read: resumed on drops, SHA-256 verified);
    ``read_resource`` streams any ByteStream resource's raw bytes.

    Arguments default to the environment: AIPROD_ENDPOINT, AIPROD_API_KEY, AIPROD_ADMIN_TOKEN.
    ``timeout`` is the default deadline of unary calls (30 s; ``None`` for none), retries included.
    ``tls`` forces TLS on or off (see :func:`parse_endpoint`); TLS verifies the server against the
    system's CA roots, or ``root_certificates`` (PEM) when given. ``retry`` is the
    :class:`RetryPolicy` of unary calls, ``watch_job`` and the downloads; ``on_attempt`` is called
    with an :class:`Attempt` for every attempt of every call (for logging or metrics).
    ``channel_options`` are extra grpc channel options (they override the SDK's).
    """

    presets: PresetService
    cost_estimator: CostEstimatorService
    render: RenderService
    icc: IccService
    admin: AdminService

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        admin_token: str | None = None,
        timeout: float | None = 30.0,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        retry: RetryPolicy | None = None,
        on_attempt: AttemptHook | None = None,
    ) -> None:
        s = _Settings(endpoint, api_key, admin_token, timeout, tls)
        options = _channel_options(channel_options)
        if s.secure:
            creds = _credentials(root_certificates)
            self._channel = grpc.secure_channel(s.target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(s.target, options=options)
        self.target = s.target
        policy = retry or RetryPolicy()
        tenant = Caller(self._channel, s.api_key, s.timeout, policy, on_attempt)
        self.presets = PresetService(tenant)
        self.cost_estimator = CostEstimatorService(tenant)
        self.render = RenderService(tenant)
        self.icc = IccService(tenant)
        self.admin = AdminService(Caller(self._channel, s.admin_token, s.timeout, policy, on_attempt))
        self._downloads = Downloader(tenant, self.render)

    def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[job_pb2.JobEvent, None, None]:
        """Same as ``client.render.watch_job``: resuming event stream until the terminal event."""
        return self.render.watch_job(job_id, after_sequence, retry=retry, timeout=timeout, metadata=metadata)

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
        """Same as ``client.render.iter_jobs``: every job, following next_page_token."""
        return self.render.iter_jobs(
            request,
            page_size=page_size,
            states=states,
            preset_id=preset_id,
            labels=labels,
            timeout=timeout,
            metadata=metadata,
        )

    def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> Iterator[admin_service_pb2.Tenant]:
        """Same as ``client.admin.iter_tenants``: every tenant, following next_page_token."""
        return self.admin.iter_tenants(page_size=page_size, timeout=timeout, metadata=metadata)

    def download_video(
        self,
        job_id: str,
        path: StrPath,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> job_pb2.VideoArtifact:
        """Downloads the job's final cut to ``path``; returns its VideoArtifact (size, sha256, format...).

        GetJob gives the artifact; its bytes are streamed with ByteStream.Read, pinned to that version
        (``resource_name@sha256``), into ``path + ".part"`` and hashed as they arrive (never held in
        memory). A transient failure (UNAVAILABLE, a dropped connection or reset stream,
        RESOURCE_EXHAUSTED with RetryInfo) resumes from the bytes already written, with the backoff of
        ``retry`` (the client's RetryPolicy by default); it gives up after ``watch_resume_timeout``
        of failures without a new byte. If a revision replaced the file meanwhile
        (FAILED_PRECONDITION), it starts over once from a fresh GetJob. The size and SHA-256 are
        verified (DATA_LOSS on a mismatch), then the file is fsynced and renamed onto ``path``
        atomically; on any failure the ``.part`` file is deleted and ``path`` is left untouched.

        Raises :class:`aiprod.ArtifactNotAvailableError` if the job has no final cut yet (it exists
        from AWAITING_FINAL_APPROVAL on) and :class:`aiprod.AiprodError` on any other failure.
        ``timeout`` bounds the whole download, retries included; by default there is none.
        """
        return self._downloads.download(job_id, None, path, retry, timeout, metadata)

    def download_shot_clip(
        self,
        job_id: str,
        shot_id: str,
        path: StrPath,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> job_pb2.VideoArtifact:
        """Downloads the clip of one shot (``Job.shots[i].clip``) to ``path``, like download_video.

        The clip is readable as soon as the shot renders. ArtifactNotAvailableError if it has no clip
        yet (or is being re-rendered); NOT_FOUND if the job has no such shot.
        """
        return self._downloads.download(job_id, shot_id, path, retry, timeout, metadata)

    def read_resource(
        self,
        resource_name: str,
        *,
        read_offset: int = 0,
        read_limit: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[bytes, None, None]:
        """Yields the bytes of a ByteStream resource (e.g. ``job.video.poster_resource_name``) in chunks.

        One ByteStream.Read call from ``read_offset``, at most ``read_limit`` bytes (0: to the end);
        no retries or verification (use download_video for those). Errors raise AiprodError:
        NOT_FOUND (missing or another tenant's), OUT_OF_RANGE, FAILED_PRECONDITION (a pinned
        ``name@sha256`` that was replaced). Closing the generator cancels the call.
        """
        return self._downloads.read_resource(
            resource_name, read_offset=read_offset, read_limit=read_limit, timeout=timeout, metadata=metadata
        )

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """An asyncio AIPROD client (grpc.aio); same surface as :class:`Client` with ``await``.

    >>> async with aiprod.AsyncClient("http://127.0.0.1:50051", api_key="aiprod_test_...") as client:
    ...     presets = (await client.presets.list_presets()).presets
    ...     async for event in client.watch_job(job_id):
    ...         print(event.sequence)

    Create it inside a running event loop.
    """

    presets: AsyncPresetService
    cost_estimator: AsyncCostEstimatorService
    render: AsyncRenderService
    icc: AsyncIccService
    admin: AsyncAdminService

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        admin_token: str | None = None,
        timeout: float | None = 30.0,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        retry: RetryPolicy | None = None,
        on_attempt: AttemptHook | None = None,
    ) -> None:
        s = _Settings(endpoint, api_key, admin_token, timeout, tls)
        options = _channel_options(channel_options)
        if s.secure:
            creds = _credentials(root_certificates)
            self._channel = grpc.aio.secure_channel(s.target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(s.target, options=options)
        self.target = s.target
        policy = retry or RetryPolicy()
        tenant = AsyncCaller(self._channel, s.api_key, s.timeout, policy, on_attempt)
        self.presets = AsyncPresetService(tenant)
        self.cost_estimator = AsyncCostEstimatorService(tenant)
        self.render = AsyncRenderService(tenant)
        self.icc = AsyncIccService(tenant)
        self.admin = AsyncAdminService(AsyncCaller(self._channel, s.admin_token, s.timeout, policy, on_attempt))
        self._downloads = AsyncDownloader(tenant, self.render)

    def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """Same as ``client.render.watch_job``: resuming event stream until the terminal event."""
        return self.render.watch_job(job_id, after_sequence, retry=retry, timeout=timeout, metadata=metadata)

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
    ) -> AsyncIterator[job_pb2.Job]:
        """Same as ``client.render.iter_jobs``."""
        return self.render.iter_jobs(
            request,
            page_size=page_size,
            states=states,
            preset_id=preset_id,
            labels=labels,
            timeout=timeout,
            metadata=metadata,
        )

    def iter_tenants(
        self, *, page_size: int = 0, timeout: Timeout = DEFAULT_TIMEOUT, metadata: Metadata = ()
    ) -> AsyncIterator[admin_service_pb2.Tenant]:
        """Same as ``client.admin.iter_tenants``."""
        return self.admin.iter_tenants(page_size=page_size, timeout=timeout, metadata=metadata)

    async def download_video(
        self,
        job_id: str,
        path: StrPath,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> job_pb2.VideoArtifact:
        """Same as :meth:`Client.download_video`: resuming, verified, atomic download of the final cut."""
        return await self._downloads.download(job_id, None, path, retry, timeout, metadata)

    async def download_shot_clip(
        self,
        job_id: str,
        shot_id: str,
        path: StrPath,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> job_pb2.VideoArtifact:
        """Same as :meth:`Client.download_shot_clip`."""
        return await self._downloads.download(job_id, shot_id, path, retry, timeout, metadata)

    def read_resource(
        self,
        resource_name: str,
        *,
        read_offset: int = 0,
        read_limit: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[bytes, None]:
        """Same as :meth:`Client.read_resource`: ``async for chunk in client.read_resource(name)``."""
        return self._downloads.read_resource(
            resource_name, read_offset=read_offset, read_limit=read_limit, timeout=timeout, metadata=metadata
        )

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
