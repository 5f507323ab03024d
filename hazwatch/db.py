"""Database connections: one place that opens them, with timeouts, and names the failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from hazwatch.config import DatabaseSettings
from hazwatch.errors import DatabaseUnavailable

# What asyncpg and the OS raise when the server is down, restarting or unreachable.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
)


async def connect(settings: DatabaseSettings, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            settings.url,
            timeout=settings.connect_timeout_s,
            command_timeout=settings.command_timeout_s,
            **kwargs,
        )
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(settings.url)}: {exc}") from exc


async def create_pool(settings: DatabaseSettings, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            settings.url,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            timeout=settings.connect_timeout_s,
            command_timeout=settings.command_timeout_s,
            **kwargs,
        )
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(settings.url)}: {exc}") from exc
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(settings: DatabaseSettings) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(settings)
    try:
        yield conn
    finally:
        await conn.close()


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, _, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if _password else ''}@{host}"
