"""How the operator console is served: public static files with a strict Content-Security-Policy,
kept out of the OpenAPI schema, nothing fetched from another host, no inline script or style.
What the page does is tested in a real browser (tests/browser/test_console.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from api.routes.console import ASSETS
from tests.api.conftest import Api

pytestmark = pytest.mark.integration


def static_text(name: str) -> str:
    return resources.files("api").joinpath("static", name).read_text(encoding="utf-8")


async def test_the_page_and_its_files_are_served_with_security_headers(api: Api) -> None:
    for path, media in (
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ):
        r = await api.get(path, user=None)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(media), path
        csp = r.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "script-src" not in directives  # falls back to 'self': no inline script
        assert "style-src" not in directives
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"


async def test_only_the_console_files_are_served(api: Api) -> None:
    for path in ("/console/app.py", "/console/..%2F..%2Fapp.py", "/console/py.typed"):
        r = await api.get(path, user=None)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    r = await api.get("/console/", user=None, follow_redirects=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")


async def test_console_routes_stay_out_of_the_schema(api: Api) -> None:
    paths = (await api.get("/openapi.json", user=None)).json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_the_page_loads_only_its_own_files() -> None:
    html = static_text("console.html")
    for name in ASSETS:
        assert resources.files("api").joinpath("static", name).is_file(), name
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(referenced) == ["/console/console.css", "/console/console.js", "data:,"]
    # no inline script, style element or style attribute (the CSP would block them anyway)
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/console/console.js" defer>']
    assert "<style" not in html
    assert " style=" not in html
    assert not re.findall(r"<[^>]*\son[a-z]+\s*=", html)  # no inline event handlers
    for name in ASSETS:
        text = static_text(name)
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    script = static_text("console.js")
    assert "innerHTML" not in script  # data goes in as text only
    assert "eval(" not in script
