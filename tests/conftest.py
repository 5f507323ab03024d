"""Shared fixtures: every test run owns its databases on the real PostgreSQL + TimescaleDB.

A template database is created and migrated once per session; each test that asks for `db_url`
gets a fresh copy of it (CREATE DATABASE ... TEMPLATE is a file copy, far faster than
migrating again) and it is dropped afterwards. Set HAZWATCH_TEST_PG to point elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hazwatch.config import DatabaseSettings
from hazwatch.migrate import migrate

PG = os.environ.get("HAZWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
RUN_ID = uuid.uuid4().hex[:8]


def db_url_for(name: str) -> str:
    return f"{PG}/{name}"


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(db_url_for("postgres"))


async def create_db(name: str, *, template: str | None = None) -> None:
    admin = await _admin()
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        for attempt in range(50):
            try:
                await admin.execute(f'CREATE DATABASE "{name}"{clause}')
            except asyncpg.ObjectInUseError:
                # TimescaleDB's background-worker scheduler may still hold a session on the
                # template; it cannot reconnect once connections are disallowed (see below).
                if template is None or attempt == 49:
                    raise
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    template,
                )
                await asyncio.sleep(0.1)
            else:
                return
    finally:
        await admin.close()


async def seal_template(name: str) -> None:
    """Keep every session, TimescaleDB's scheduler included, out of the template database:
    CREATE DATABASE ... TEMPLATE fails while anyone is connected to it."""
    admin = await _admin()
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await admin.close()


async def drop_db(name: str) -> None:
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def template_db() -> AsyncIterator[str]:
    name = f"hw_tmpl_{RUN_ID}"
    await create_db(name)
    conn = await asyncpg.connect(db_url_for(name))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await seal_template(name)
    yield name
    await drop_db(name)


@pytest.fixture
async def db_url(template_db: str) -> AsyncIterator[str]:
    """A freshly migrated database of this test's own, dropped afterwards."""
    name = f"hw_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    await create_db(name, template=template_db)
    yield db_url_for(name)
    await drop_db(name)


@pytest.fixture
def db_settings(db_url: str) -> DatabaseSettings:
    return DatabaseSettings(url=db_url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()
