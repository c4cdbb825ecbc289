"""Routes that authenticate, authorize and rate-limit before anything else runs.

Every domain router is made with ``make_router``. Its routes run the security checks before the
body is parsed, so an unauthenticated request gets 401, not a validation error, and each route's
required scope is published in the OpenAPI document as ``x-scope``. Routes declare a stricter
scope than their method implies with ``openapi_extra=ADMIN_ONLY``; public ones with ``PUBLIC``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from api.errors import AUTH_ERROR_RESPONSES
from api.security import authenticate, authorize, charge, required_scope
from models.errors import BadRequest

# A JSON \u0000 escape: its backslash is not itself escaped (an even run of backslashes before it).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
ADMIN_ONLY: dict[str, Any] = {"x-scope": "admin"}
PUBLIC: dict[str, Any] = {"x-scope": "public"}


class ScopedRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = dict(kwargs.get("openapi_extra") or {})
        method = next(iter(kwargs.get("methods") or ["GET"]))
        extra.setdefault("x-scope", required_scope(method, None))
        kwargs["openapi_extra"] = extra
        if extra["x-scope"] != "public":
            kwargs["responses"] = {**AUTH_ERROR_RESPONSES, **(kwargs.get("responses") or {})}
        self.scope_required: str = extra["x-scope"]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.scope_required == "public":
            return handler
        scope = self.scope_required

        async def secured(request: Request) -> Response:
            app_state = request.app.state
            principal = await authenticate(request, app_state.key_cache)
            request.state.principal = principal
            authorize(principal, scope)
            request.state.ratelimit = await charge(principal, app_state.limiter)
            await refuse_nul_characters(request)
            return await handler(request)

        return secured


async def refuse_nul_characters(request: Request) -> None:
    """NUL is never meaningful in this API's text (names, commands, hosts, reasons) and
    PostgreSQL cannot store it in a text column: refuse it in the path, the query and the body
    alike, so both backends answer the same clear 400."""
    query = (text for item in request.query_params.multi_items() for text in item)
    if "\x00" in request.scope["path"] or any("\x00" in text for text in query):
        raise BadRequest("NUL characters are not allowed in the path or query")
    if request.method in {"POST", "PUT", "PATCH"} and _JSON_NUL.search(await request.body()):
        raise BadRequest("NUL characters (\\u0000) are not allowed in text fields")


def make_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes are all secured (see module docstring)."""
    return APIRouter(route_class=ScopedRoute, **kwargs)
