"""AIPROD Python SDK: a typed gRPC client for the AIPROD video production API.

>>> import aiprod
>>> client = aiprod.Client("http://127.0.0.1:50051", api_key="aiprod_test_...")
>>> quote = client.cost_estimator.estimate_cost(preset_id="brand_campaign", duration_s=60)
>>> video = client.download_video(job_id, "video.mp4")  # resumed on drops, SHA-256 verified

Messages and enums live in :mod:`aiprod.v1` (``from aiprod.v1 import CreateJobRequest``).
"""

from grpc import StatusCode

from aiprod._call import DEFAULT_TIMEOUT, Metadata, Timeout
from aiprod._client import USER_AGENT, AsyncClient, Client, parse_endpoint, system_root_certificates
from aiprod._download import ArtifactNotAvailableError
from aiprod._errors import AiprodError, FieldViolation, PreconditionViolation, QuotaViolation
from aiprod._mixins import TERMINAL_STATES
from aiprod._retry import Attempt, AttemptHook, RetryPolicy
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

__all__ = [
    "DEFAULT_TIMEOUT",
    "TERMINAL_STATES",
    "USER_AGENT",
    "AdminService",
    "AiprodError",
    "Attempt",
    "AttemptHook",
    "ArtifactNotAvailableError",
    "AsyncAdminService",
    "AsyncClient",
    "AsyncCostEstimatorService",
    "AsyncIccService",
    "AsyncPresetService",
    "AsyncRenderService",
    "Client",
    "CostEstimatorService",
    "FieldViolation",
    "IccService",
    "Metadata",
    "PreconditionViolation",
    "PresetService",
    "QuotaViolation",
    "RenderService",
    "RetryPolicy",
    "StatusCode",
    "Timeout",
    "__version__",
    "parse_endpoint",
    "system_root_certificates",
]
