"""Call plumbing shared by the service wrappers: auth metadata, deadlines, retries, error mapping."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from aiprod._errors import AiprodError, from_rpc_error
from aiprod._retry import Attempt, AttemptHook, Method, RetryPolicy, UnaryRetry, report

__all__ = ["DEFAULT_TIMEOUT", "AsyncCaller", "Caller", "Metadata", "Method", "Timeout", "build_request"]


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


DEFAULT_TIMEOUT: Final = _Default.DEFAULT
"""Use the client's default deadline (the ``timeout`` given to the client)."""

Timeout = float | None | _Default
"""A per-call deadline in seconds; ``None`` means no deadline; DEFAULT_TIMEOUT the client's default."""

Metadata = Sequence[tuple[str, str]]
"""Extra request metadata (key, value) pairs."""

_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)


def build_request(cls: type[_Req], request: _Req | None, /, **fields: Any) -> _Req:
    """Returns ``request``, or a new ``cls`` with the fields that are not None; both is a TypeError.

    The public wrappers declare every field as a typed keyword argument (checked by mypy); this only
    assembles the message.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    if request is not None:
        if given:
            raise TypeError(f"pass either a {cls.__name__} or its fields as keyword arguments, not both")
        if not isinstance(request, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(request).__name__}")
        return request
    return cls(**given)


def _with_request_id(request: _Req) -> _Req:
    """The request with a random request_id if it has none, set once before the first attempt so that
    every retry carries the same idempotency key (the caller's message is not modified)."""
    if getattr(request, "request_id", "x"):
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    setattr(filled, "request_id", str(uuid.uuid4()))  # noqa: B010 (generic _Req: no typed attribute)
    return filled


class _CallerBase:
    def __init__(
        self, token: str | None, default_timeout: float | None, policy: RetryPolicy, hook: AttemptHook | None
    ) -> None:
        self._token = token
        self._default_timeout = default_timeout
        self.policy = policy
        self.hook = hook

    def metadata(self, extra: Metadata = ()) -> tuple[tuple[str, str], ...]:
        auth = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        return auth + tuple(extra)

    def timeout(self, timeout: Timeout) -> float | None:
        if isinstance(timeout, _Default):
            return self._default_timeout
        return timeout

    def report(
        self,
        method: str,
        attempt: int,
        started: float,
        err: AiprodError | None = None,
        retry_in: float | None = None,
    ) -> None:
        """Tells the hook (and the "aiprod" logger) about one finished attempt."""
        code = grpc.StatusCode.OK if err is None else err.code
        report(self.hook, Attempt(method, attempt, code, time.monotonic() - started, err, retry_in))

    def _start(
        self, method: Method, request: _Req, timeout: Timeout, retry: RetryPolicy | None
    ) -> tuple[_Req, UnaryRetry]:
        if method.fill_request_id:
            request = _with_request_id(request)
        return request, UnaryRetry(method, retry or self.policy, self.timeout(timeout))


class Caller(_CallerBase):
    """Runs sync calls on a grpc.Channel: bearer token, default deadline, retries, the attempt hook."""

    def __init__(
        self,
        channel: grpc.Channel,
        token: str | None,
        default_timeout: float | None,
        policy: RetryPolicy,
        hook: AttemptHook | None,
    ) -> None:
        super().__init__(token, default_timeout, policy, hook)
        self.channel = channel

    def unary(
        self,
        stub_method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        method: Method,
        request: _Req,
        timeout: Timeout,
        metadata: Metadata,
        retry: RetryPolicy | None,
    ) -> _Resp:
        request, state = self._start(method, request, timeout, retry)
        md = self.metadata(metadata)
        while True:
            attempt_timeout = state.start()
            started = time.monotonic()
            try:
                response = stub_method(request, timeout=attempt_timeout, metadata=md)
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
                wait = state.failed(err)
                self.report(method.name, state.attempt, started, err, wait)
                if wait is None:
                    raise err from None
                time.sleep(wait)
                continue
            self.report(method.name, state.attempt, started)
            return response


class AsyncCaller(_CallerBase):
    """Runs asyncio calls on a grpc.aio.Channel: bearer token, default deadline, retries, the hook."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str | None,
        default_timeout: float | None,
        policy: RetryPolicy,
        hook: AttemptHook | None,
    ) -> None:
        super().__init__(token, default_timeout, policy, hook)
        self.channel = channel

    async def unary(
        self,
        stub_method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        method: Method,
        request: _Req,
        timeout: Timeout,
        metadata: Metadata,
        retry: RetryPolicy | None,
    ) -> _Resp:
        request, state = self._start(method, request, timeout, retry)
        md = self.metadata(metadata)
        while True:
            attempt_timeout = state.start()
            started = time.monotonic()
            try:
                response = await stub_method(request, timeout=attempt_timeout, metadata=md)
            except grpc.RpcError as raw:
                err = from_rpc_error(raw)
                wait = state.failed(err)
                self.report(method.name, state.attempt, started, err, wait)
                if wait is None:
                    raise err from None
                await asyncio.sleep(wait)
                continue
            self.report(method.name, state.attempt, started)
            return response
