"""Renders every error, ours and the framework's, as {"success": false, "message", "code"}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import ExecFlowError

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


def error_body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"success": False, "message": message, "code": code, **extra}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _execflow_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExecFlowError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"field": _field_name(tuple(err.get("loc", ()))), "message": err.get("msg", "invalid")}
        for err in exc.errors()
    ]
    names = ", ".join(dict.fromkeys(f["field"] for f in fields))
    body = error_body(f"Invalid request: {names}", "VALIDATION_ERROR", fields=fields)
    return JSONResponse(body, status_code=400)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    if exc.status_code == 404 and message == "Not Found":
        message = "Resource not found"
    return JSONResponse(error_body(message, code), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ExecFlowError, _execflow_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["success", "message"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "message": {"type": "string"},
        "code": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "object"}},
    },
}


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


# Declared on every authenticated route, so the OpenAPI document lists them.
AUTH_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_response("Bad request: missing or invalid parameters"),
    401: error_response("Missing, malformed, unknown or revoked API key"),
    403: error_response("The API key lacks the required scope"),
    429: error_response("Rate limit exceeded; see Retry-After"),
}
