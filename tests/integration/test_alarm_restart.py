"""Restart recovery: kill the alarm process mid-transaction (twice), restart it, replay the
feed from the start, and compare with an uninterrupted run of the same feed: the same episodes
and the same events, none twice, none missing."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from hazwatch.registry.parse import load_registry
from hazwatch.registry.store import store_registry
from tests.conftest import RUN_ID, create_db, db_url_for, drop_db
from tests.restart_feed import run_feed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
MINIMAL = ROOT / "tests" / "fixtures" / "registry" / "minimal.yaml"


async def _history(conn: asyncpg.Connection) -> tuple[list[tuple[object, ...]], ...]:
    events = await conn.fetch(
        """SELECT coalesce(n.key, x.key) AS subject, a.rule, e.kind, e.tier,
                  hazwatch_ts_to_us(e.ts) AS ts, e.value
           FROM alarm_events e JOIN alarms a USING (alarm_id)
           JOIN assets x ON x.asset_id = a.asset_id LEFT JOIN sensors n USING (sensor_id)
           ORDER BY e.event_id"""
    )
    alarms = await conn.fetch(
        """SELECT coalesce(n.key, x.key) AS subject, a.rule, a.state, a.tier, a.max_tier,
                  a.raised_at, a.cleared_at
           FROM alarms a JOIN assets x ON x.asset_id = a.asset_id
           LEFT JOIN sensors n USING (sensor_id) ORDER BY a.alarm_id"""
    )
    return [tuple(r) for r in events], [tuple(r) for r in alarms]


async def _run_until_begin(url: str, pause_at: int) -> None:
    """Run the feed in a child process and SIGKILL it inside op `pause_at`'s transaction."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.restart_feed", url, "--pause-at", str(pause_at),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode().strip()
                assert line, "the feed process ended before the kill point"
                if line == f"begin {pause_at}":
                    break
    finally:
        proc.kill()
        await proc.wait()


async def test_killed_process_resumes_with_the_same_alarms(db_url: str, template_db: str) -> None:
    steady = await asyncpg.connect(db_url)
    try:
        await store_registry(steady, load_registry(MINIMAL))
        await run_feed(steady)
        expected = await _history(steady)
    finally:
        await steady.close()
    events, _ = expected
    kinds = {(e[1], e[2]) for e in events}
    # The feed exercises what a restart could get wrong: open episodes, delays, clears, votes.
    assert {("high", "raised"), ("high", "escalated"), ("high", "cleared")} <= kinds
    assert {("stale", "raised"), ("stale", "cleared"), ("quality", "raised")} <= kinds
    assert ("vote:co-ring", "raised") in kinds
    assert any(e[0] == "gh1/piston_speed" for e in events)

    name = f"hw_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    await create_db(name, template=template_db)
    url = db_url_for(name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await store_registry(conn, load_registry(MINIMAL))
            await _run_until_begin(url, 37)  # mid-stream, inside a batch's transaction
            await _run_until_begin(url, 80)  # again, inside a tick's transaction
            partial = await _history(conn)
            assert 0 < len(partial[0]) < len(events)
            await run_feed(conn)  # restart: replays the feed from the start
            assert await _history(conn) == expected
        finally:
            await conn.close()
    finally:
        await drop_db(name)
