"""ReadingStore across a dropped connection: the whole transaction, hook included, is retried."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
from ingest_support import TcpProxy
from test_ingest_faults import _via

from bench.broker import free_port
from hazwatch.config import DatabaseSettings
from hazwatch.domain import ReadingBatch
from ingest.dbsession import Backoff, DbSession
from ingest.store import ReadingStore

T0 = 1_764_300_000_000_000


async def test_connection_lost_inside_the_transaction_is_retried_once_committed(
    db_url: str, db: asyncpg.Connection
) -> None:
    target = urlsplit(db_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432, free_port())
    await proxy.start()
    errors: list[BaseException] = []
    session = DbSession(
        DatabaseSettings(url=_via(db_url, proxy.port), connect_timeout_s=2, command_timeout_s=5),
        name="test",
        backoff=Backoff(0.05, 0.2),
        on_connect=ReadingStore.prepare,
        on_error=errors.append,
    )
    store = ReadingStore(session)
    calls: list[int] = []
    committed: list[int] = []

    async def hook(conn: asyncpg.Connection, inserted: ReadingBatch):
        calls.append(len(inserted))
        if len(calls) == 1:
            await proxy.cut()  # the connection dies in the middle of the transaction
            asyncio.get_running_loop().call_later(0.5, lambda: asyncio.ensure_future(proxy.start()))
            await conn.execute("SELECT 1")  # fails: nothing of this attempt commits
        return lambda: committed.append(len(inserted))

    batch = ReadingBatch.from_columns([1, 2, 3], [T0, T0, T0], [1.0, 2.0, 3.0], [0, 0, 0])
    try:
        result = await asyncio.wait_for(store.write(batch, hook), 30)
    finally:
        await store.close()
        await proxy.close()
    assert result.attempts >= 2
    assert result.inserted == 3
    assert calls[:2] == [3, 3]  # called again on the retry, with the same rows
    assert committed == [3]  # the after-commit callback ran once
    assert errors
    assert await db.fetchval("SELECT count(*) FROM readings") == 3
    assert await db.fetchval("SELECT sum(count) FROM readings_1m") == 3
