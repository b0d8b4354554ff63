"""Call plumbing shared by the service wrappers: auth metadata, default deadline, error mapping."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar, Union

import grpc
import grpc.aio
from google.protobuf.message import Message

from aiprod._errors import from_rpc_error

__all__ = ["DEFAULT_TIMEOUT", "AsyncCaller", "Caller", "Metadata", "Timeout", "build_request"]


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


DEFAULT_TIMEOUT: Final = _Default.DEFAULT
"""Use the client's default deadline (the ``timeout`` given to the client)."""

Timeout = Union[float, None, _Default]
"""A per-call deadline in seconds; ``None`` means no deadline; DEFAULT_TIMEOUT the client's default."""

Metadata = Sequence[tuple[str, str]]
"""Extra request metadata (key, value) pairs."""

_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)


def build_request(cls: type[_Req], request: _Req | None, fields: Mapping[str, Any]) -> _Req:
    """Returns ``request``, or a new ``cls(**fields)``; both at once is a TypeError."""
    if request is not None:
        if fields:
            raise TypeError(f"pass either a {cls.__name__} or its fields as keyword arguments, not both")
        if not isinstance(request, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(request).__name__}")
        return request
    return cls(**fields)


class _CallerBase:
    def __init__(self, token: str | None, default_timeout: float | None) -> None:
        self._token = token
        self._default_timeout = default_timeout

    def metadata(self, extra: Metadata = ()) -> tuple[tuple[str, str], ...]:
        auth = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        return auth + tuple(extra)

    def timeout(self, timeout: Timeout) -> float | None:
        if isinstance(timeout, _Default):
            return self._default_timeout
        return timeout


class Caller(_CallerBase):
    """Runs sync calls on a grpc.Channel with the bearer token and the default deadline."""

    def __init__(self, channel: grpc.Channel, token: str | None, default_timeout: float | None) -> None:
        super().__init__(token, default_timeout)
        self.channel = channel

    def unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: Timeout,
        metadata: Metadata,
    ) -> _Resp:
        try:
            return method(request, timeout=self.timeout(timeout), metadata=self.metadata(metadata))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None


class AsyncCaller(_CallerBase):
    """Runs asyncio calls on a grpc.aio.Channel with the bearer token and the default deadline."""

    def __init__(self, channel: grpc.aio.Channel, token: str | None, default_timeout: float | None) -> None:
        super().__init__(token, default_timeout)
        self.channel = channel

    async def unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: Timeout,
        metadata: Metadata,
    ) -> _Resp:
        try:
            return await method(request, timeout=self.timeout(timeout), metadata=self.metadata(metadata))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

