"""The operator console: one static page (api/static/console.*) served at `/console`.

The page holds no data: it is public, like /docs, and every data call it makes carries the
bearer token the operator pasted (docs/console.md). The routes stay out of the OpenAPI schema.
The files are read from the installed package on each request (three small files, and an edit
shows on reload); any other name is a 404.

Each answer carries a Content-Security-Policy that allows only the page's own origin (no inline
script or style, no other host, not framed), nosniff, and no caching, so an upgrade reaches the
control room's open browser on its next reload.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

from api.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)

PAGE = "console.html"
ASSETS: dict[str, str] = {
    PAGE: "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data:",  # the page's empty favicon is a data: URL
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no console file {name!r}")
    body = resources.files("api").joinpath("static", name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/console")
async def console_page() -> Response:
    return _file(PAGE)


@router.get("/console/{name}")
async def console_asset(name: str) -> Response:
    return _file(name)
