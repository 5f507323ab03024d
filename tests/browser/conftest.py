"""Browser-test fixtures: Debian's chromium driven by Playwright, and the real app under uvicorn.

The browser is Debian's `/usr/bin/chromium` (deploy/dev/install-browser.sh, run by `make
system`), never a Playwright download. One browser per module, with a fresh profile directory;
each test gets its own page, database, app and port, so origins and storage never mix.

Every page is watched: a script error, a console error (a Content-Security-Policy violation is
one) or a request to anything but the app fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from playwright.async_api import BrowserContext, Page, async_playwright

from api.app import create_app
from tests.api.conftest import free_port, seed, settings_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make system` (deploy/dev/install-browser.sh installs "
            "Debian's chromium)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[BrowserContext]:
    with tempfile.TemporaryDirectory(prefix="hw-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(chromium),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1600, "height": 1000},
            )
            try:
                yield context
            finally:
                await context.close()


class Server:
    """The app under uvicorn on a fixed port, so a test can stop it and start it again."""

    def __init__(self, db_url: str, port: int) -> None:
        self.db_url = db_url
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = create_app(settings_for(self.db_url))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(15), httpx.AsyncClient(base_url=self.base) as client:
            while True:
                if self._task.done():
                    self._task.result()  # start-up failed: raise why
                with contextlib.suppress(httpx.TransportError):
                    r = await client.get("/ready")
                    if r.status_code == 200 and r.json()["stream"] == "listening":
                        return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await asyncio.wait_for(self._task, timeout=15)
        self._server = self._task = None


@dataclass
class Console:
    """A running app, a page pointed at it, the tokens of the test users, a database connection."""

    server: Server
    page: Page
    conn: asyncpg.Connection
    tokens: dict[str, str]
    problems: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect_problem(self, text: str) -> None:
        """A console message the test provokes on purpose (Chrome logs every non-2xx fetch and
        every failed WebSocket connection as an error)."""
        self.expected.append(text)

    def unexpected_problems(self) -> list[str]:
        return [p for p in self.problems if not any(e in p for e in self.expected)]

    @property
    def base(self) -> str:
        return self.server.base

    async def sign_in(self, user: str) -> None:
        await self.page.goto(f"{self.base}/console")
        await self.page.fill("#token", self.tokens[user])
        await self.page.click("#signin-form button[type=submit]")
        await self.page.wait_for_selector("#conn[data-state=live]")


@pytest.fixture
async def console(db_url: str, browser: BrowserContext) -> AsyncIterator[Console]:
    conn = await asyncpg.connect(db_url)
    server = Server(db_url, free_port())
    page: Page | None = None
    try:
        tokens = await seed(conn)
        await server.start()
        page = await browser.new_page()
        page.set_default_timeout(10_000)
        found = Console(server=server, page=page, conn=conn, tokens=tokens)

        def on_console(message: object) -> None:
            if getattr(message, "type", "") == "error":
                found.problems.append(f"console error: {getattr(message, 'text', message)}")

        def on_request(request: object) -> None:
            url = str(getattr(request, "url", ""))
            if not (url.startswith((server.base, "data:", f"ws://127.0.0.1:{server.port}"))):
                found.problems.append(f"request outside the app: {url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: found.problems.append(f"page error: {exc}"))
        page.on("request", on_request)
        yield found
        unexpected = found.unexpected_problems()
        assert not unexpected, "\n".join(unexpected)
    finally:
        if page is not None:
            await page.close()
        await server.stop()
        await conn.close()
