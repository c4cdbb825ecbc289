"""The one exception hierarchy: every error carries its HTTP status and machine-readable code.

    ExecFlowError                   500 INTERNAL_ERROR
    ├── BadRequest                  400 VALIDATION_ERROR (with ``fields``)
    ├── Unauthorized                401 UNAUTHORIZED
    ├── Forbidden                   403 FORBIDDEN
    │   └── PolicyDenied            403 POLICY_DENIED
    ├── NotFound                    404 NOT_FOUND
    ├── Conflict                    409 CONFLICT
    ├── PayloadTooLarge             413 PAYLOAD_TOO_LARGE
    ├── RateLimited                 429 RATE_LIMITED
    ├── UpstreamError               502 UPSTREAM_ERROR
    └── ServiceUnavailable          503 UNAVAILABLE

Services raise these; the API renders them as ``{"success": false, "message", "code"}``.
Subclasses or call sites may pass a more specific ``code`` (``TIMEOUT``, ``SSRF_BLOCKED``...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class ExecFlowError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status_code = status or self.status
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return {"success": False, "message": self.message, "code": self.code, **self.extra}


class BadRequest(ExecFlowError):
    status = 400
    default_code = "VALIDATION_ERROR"

    def __init__(
        self,
        message: str,
        *,
        fields: Sequence[Mapping[str, Any]] | Sequence[str] = (),
        code: str | None = None,
    ) -> None:
        normalised = [f if isinstance(f, Mapping) else {"field": f} for f in fields]
        super().__init__(message, code=code, extra={"fields": normalised} if normalised else None)
        self.fields = normalised


class Unauthorized(ExecFlowError):
    status = 401
    default_code = "UNAUTHORIZED"

    def __init__(self, message: str = "Invalid or missing API key", *, code: str | None = None):
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ExecFlowError):
    status = 403
    default_code = "FORBIDDEN"


class PolicyDenied(Forbidden):
    default_code = "POLICY_DENIED"


class NotFound(ExecFlowError):
    status = 404
    default_code = "NOT_FOUND"


class Conflict(ExecFlowError):
    status = 409
    default_code = "CONFLICT"


class PayloadTooLarge(ExecFlowError):
    status = 413
    default_code = "PAYLOAD_TOO_LARGE"


class RateLimited(ExecFlowError):
    status = 429
    default_code = "RATE_LIMITED"


class UpstreamError(ExecFlowError):
    status = 502
    default_code = "UPSTREAM_ERROR"


class ServiceUnavailable(ExecFlowError):
    status = 503
    default_code = "UNAVAILABLE"
