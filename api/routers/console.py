"""The operator console: static HTML/CSS/JS modules served at /console, no external network.

The page is public (it holds nothing secret); everything it shows comes from the authenticated
API with the key the operator types in, kept in the tab's session storage.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

ASSETS = Path(__file__).resolve().parent.parent / "console"
FILES = {"app.js", "api.js", "merkle.js", "console.css"}
# No inline scripts, nothing from other origins; connect-src 'self' for the API and streams.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA = {".js": "text/javascript", ".css": "text/css"}

root_router = APIRouter(include_in_schema=False)


@root_router.get("/console")
async def console_page() -> FileResponse:
    return FileResponse(ASSETS / "index.html", media_type="text/html", headers=HEADERS)


@root_router.get("/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console")


@root_router.get("/console/static/{name}")
async def console_asset(name: str) -> FileResponse:
    from models.errors import NotFound

    if name not in FILES:
        raise NotFound("No such console asset")
    return FileResponse(ASSETS / name, media_type=MEDIA[Path(name).suffix], headers=HEADERS)
