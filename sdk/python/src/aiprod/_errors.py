"""The SDK's error type: a gRPC status with its google.rpc rich details as Python values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

__all__ = [
    "AiprodError",
    "FieldViolation",
    "PreconditionViolation",
    "QuotaViolation",
    "from_rpc_error",
]

_DETAILS_KEY = "grpc-status-details-bin"

# The google.rpc detail types the server sends (and a few more), by type URL suffix.
_DETAIL_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.QuotaFailure,
        error_details_pb2.RetryInfo,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    """The proto field path, e.g. ``"brief"`` or ``"shots[0].duration_s"``."""
    description: str
    """Why the value is invalid."""
    reason: str = ""


@dataclass(frozen=True)
class PreconditionViolation:
    """A precondition that failed (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """A quota that was exceeded (google.rpc.QuotaFailure.Violation)."""

    subject: str
    description: str


class AiprodError(Exception):
    """A failed AIPROD call: the gRPC status code, its message and its google.rpc details.

    >>> try:
    ...     client.render.create_job(request_id="r1", preset_id="quick_social", brief="")
    ... except aiprod.AiprodError as err:
    ...     print(err.code, [v.field for v in err.field_violations])
    """

    code: grpc.StatusCode
    """The status code, e.g. ``grpc.StatusCode.NOT_FOUND``."""
    message: str
    """The status message."""
    details: list[Message]
    """The decoded google.rpc detail messages (unknown types stay ``google.protobuf.Any``)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[Message] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.details = list(details)
        super().__init__(self._summary())

    def _summary(self) -> str:
        text = f"{self.code.name}: {self.message}"
        violations = self.field_violations
        if violations:
            text += " [" + "; ".join(f"{v.field}: {v.description}" for v in violations) + "]"
        return text

    def __repr__(self) -> str:
        return f"AiprodError(code={self.code.name}, message={self.message!r}, details={len(self.details)})"

    def detail(self, kind: type[_M]) -> _M | None:
        """The first detail of the given google.rpc type, e.g. ``err.detail(error_details_pb2.ErrorInfo)``."""
        for d in self.details:
            if isinstance(d, kind):
                return d
        return None

    def _all(self, kind: type[_M]) -> Iterable[_M]:
        return (d for d in self.details if isinstance(d, kind))

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every field violation of every BadRequest detail (empty if there is none)."""
        return [
            FieldViolation(v.field, v.description, v.reason)
            for d in self._all(error_details_pb2.BadRequest)
            for v in d.field_violations
        ]

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The ErrorInfo detail (reason, domain, metadata), if any."""
        return self.detail(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str | None:
        """ErrorInfo.reason, if the error carries an ErrorInfo."""
        info = self.error_info
        return info.reason if info is not None else None

    @property
    def precondition_violations(self) -> list[PreconditionViolation]:
        """Every violation of every PreconditionFailure detail."""
        return [
            PreconditionViolation(v.type, v.subject, v.description)
            for d in self._all(error_details_pb2.PreconditionFailure)
            for v in d.violations
        ]

    @property
    def quota_violations(self) -> list[QuotaViolation]:
        """Every violation of every QuotaFailure detail."""
        return [
            QuotaViolation(v.subject, v.description)
            for d in self._all(error_details_pb2.QuotaFailure)
            for v in d.violations
        ]

    @property
    def resource_info(self) -> error_details_pb2.ResourceInfo | None:
        """The ResourceInfo detail (resource type and name), if any."""
        return self.detail(error_details_pb2.ResourceInfo)

    @property
    def retry_info(self) -> error_details_pb2.RetryInfo | None:
        """The RetryInfo detail, if any (see ``retry_delay``)."""
        return self.detail(error_details_pb2.RetryInfo)

    def is_transient(self) -> bool:
        """Whether the same call may succeed later: UNAVAILABLE, DEADLINE_EXCEEDED, or
        RESOURCE_EXHAUSTED with RetryInfo (a rate limit, not a used-up quota)."""
        if self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return True
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and self.retry_delay is not None

    @property
    def retryable(self) -> bool:
        """Same as ``is_transient()``."""
        return self.is_transient()

    @property
    def retry_delay(self) -> float | None:
        """RetryInfo.retry_delay in seconds, if the server said when to retry."""
        info = self.detail(error_details_pb2.RetryInfo)
        if info is None or not info.HasField("retry_delay"):
            return None
        return float(info.retry_delay.seconds) + info.retry_delay.nanos / 1e9


def _unpack(detail: any_pb2.Any) -> Message:
    name = detail.TypeName()
    cls = _DETAIL_TYPES.get(name)
    if cls is None:
        return detail
    msg = cls()
    if not detail.Unpack(msg):
        return detail
    return msg


def decode_status_details(raw: bytes) -> list[Message]:
    """Decodes the ``grpc-status-details-bin`` trailer (a google.rpc.Status) into detail messages."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:
        return []
    return [_unpack(d) for d in status.details]


def from_rpc_error(err: grpc.RpcError) -> AiprodError:
    """Converts an error raised by grpc (sync or aio) into an AiprodError."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailers_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details_fn() if callable(details_fn) else None
    if not isinstance(message, str):
        message = str(err)
    decoded: list[Message] = []
    trailers = trailers_fn() if callable(trailers_fn) else None
    for key, value in trailers or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            decoded.extend(decode_status_details(value))
    return AiprodError(code, message, decoded)
