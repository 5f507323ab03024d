"""API test fixtures: a database with the two-site registry, users of every role with tokens, and
the app served in-process (httpx over ASGI, lifespan run by hand) with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api import accounts
from api.app import create_app
from api.auth import Role
from hazwatch.config import ApiSettings, DatabaseSettings, Settings
from hazwatch.registry.parse import load_registry
from hazwatch.registry.store import store_registry

ROOT = Path(__file__).parents[2]
TWO_SITES = ROOT / "tests" / "fixtures" / "registry" / "two_sites.yaml"
T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)

# Users the tests act as: one per role with every site, and site-scoped ones.
USERS: dict[str, tuple[Role, list[str] | None]] = {
    "viewer": (Role.VIEWER, None),
    "crew": (Role.CREW, None),
    "operator": (Role.OPERATOR, None),
    "engineer": (Role.ENGINEER, None),
    "admin": (Role.ADMIN, None),
    "north_op": (Role.OPERATOR, ["north"]),
    "south_viewer": (Role.VIEWER, ["south"]),
}


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Api:
    """A running app, a client for it, and a token per test user."""

    app: FastAPI
    client: httpx.AsyncClient
    conn: asyncpg.Connection
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, user: str | None) -> dict[str, str]:
        return {} if user is None else {"Authorization": f"Bearer {self.tokens[user]}"}

    async def get(self, path: str, user: str | None = "viewer", **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(user), **kw)

    async def post(
        self, path: str, user: str | None = "operator", json: Any = None, **kw: Any
    ) -> httpx.Response:
        return await self.client.post(path, headers=self.auth(user), json=json, **kw)

    async def put(self, path: str, user: str | None, json: Any = None) -> httpx.Response:
        return await self.client.put(path, headers=self.auth(user), json=json)

    async def sensor_id(self, key: str) -> int:
        found: int = await self.conn.fetchval("SELECT sensor_id FROM sensors WHERE key = $1", key)
        return found


def settings_for(db_url: str, **api: Any) -> Settings:
    return Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=4, connect_timeout_s=2.0),
        api=ApiSettings(stream_latest_interval_s=0.05, metrics_refresh_s=0.1, **api),
    )


async def seed(conn: asyncpg.Connection) -> dict[str, str]:
    """Load the two-site registry and create the test users; returns their tokens."""
    await store_registry(conn, load_registry(TWO_SITES))
    tokens = {}
    for name, (role, sites) in USERS.items():
        await accounts.create_user(conn, name, role, sites, actor="test")
        _, tokens[name] = await accounts.create_token(
            conn, name, name="test", expires_in=None, now=T0, actor="test"
        )
    return tokens


async def insert_alarm(
    conn: asyncpg.Connection,
    sensor: str,
    *,
    state: str = "active_unacked",
    tier: int = 3,
    raised_at: datetime = T0,
    rule: str | None = None,
    shelved_until: datetime | None = None,
    out_of_service: bool = False,
) -> int:
    """An alarm episode written directly, as the engine would have opened it."""
    sensor_row = await conn.fetchrow(
        """SELECT n.sensor_id, n.asset_id, a.site_id FROM sensors n
           JOIN assets a USING (asset_id) WHERE n.key = $1""",
        sensor,
    )
    count = await conn.fetchval("SELECT count(*) FROM alarms")
    alarm_id: int = await conn.fetchval(
        """INSERT INTO alarms (sensor_id, asset_id, site_id, rule, state, tier, max_tier, value,
                               message, raised_at, cleared_at, shelved_until, out_of_service)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 42.5, 'test alarm', $8, $9, $10, $11)
           RETURNING alarm_id""",
        sensor_row["sensor_id"],
        sensor_row["asset_id"],
        sensor_row["site_id"],
        rule or f"high-{count}",  # one open episode per (sensor, rule)
        state,
        0 if state == "cleared_unacked" else tier,
        max(tier, 1),
        raised_at,
        raised_at + timedelta(minutes=1) if state in ("cleared_unacked", "closed") else None,
        shelved_until,
        out_of_service,
    )
    await conn.execute(
        """INSERT INTO alarm_events (alarm_id, ts, kind, tier, value, actor)
           VALUES ($1, $2, 'raised', $3, 42.5, 'engine')""",
        alarm_id,
        raised_at,
        max(tier, 1),
    )
    return alarm_id


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://hazwatch") as client:
            yield client


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    conn = await asyncpg.connect(db_url)
    try:
        tokens = await seed(conn)
        clock = Clock()
        app = create_app(settings_for(db_url), clock=clock)
        async with running(app) as client:
            yield Api(app=app, client=client, conn=conn, clock=clock, tokens=tokens)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn server on a free port (for WebSockets); yields host:port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        if task.done():
            task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
