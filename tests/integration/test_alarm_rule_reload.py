"""Rule changes reach the running alarm engine (alerting.bridge): a rule edit as the API
writes it and a registry load are heard on `hazwatch_rules`, the next tick reloads the rules
with the state carried over, and the open episodes go on (no restart, no duplicate)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import asyncpg
import orjson
import pytest

from alerting.bridge import IngestAlarms
from hazwatch.config import DatabaseSettings
from hazwatch.registry.parse import load_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import RULES_CHANNEL, store_registry
from tests.alarm_harness import T0, S, insert_readings, readings

pytestmark = pytest.mark.integration

MINIMAL = Path(__file__).parents[1] / "fixtures" / "registry" / "minimal.yaml"


class Clock:
    def __init__(self) -> None:
        self.t_s = T0 / S

    def __call__(self) -> float:
        return self.t_s


async def _started(
    db: asyncpg.Connection, db_settings: DatabaseSettings
) -> tuple[IngestAlarms, Clock, int]:
    await store_registry(db, load_registry(MINIMAL))
    snapshot = await RegistrySnapshot.load(db)
    clock = Clock()
    alarms = IngestAlarms(db_settings, clock=clock)
    alarms.on_registry(snapshot)
    co1 = snapshot.sensor("gh1-det/co1")
    assert co1 is not None
    return alarms, clock, co1.sensor_id


async def _batch(
    db: asyncpg.Connection, alarms: IngestAlarms, rows: list[tuple[int, float, float]]
) -> None:
    async with db.transaction():
        adopt = await alarms.hook(db, await insert_readings(db, readings(rows)))
    adopt()


async def _tick_until_reloaded(db: asyncpg.Connection, alarms: IngestAlarms, reloads: int) -> None:
    """Tick (once a second in ingest) until the bridge has heard and taken the change."""
    async with asyncio.timeout(5):
        while alarms.reloads < reloads:
            async with db.transaction():
                adopt = await alarms.tick(db)
            adopt()
            await asyncio.sleep(0.01)  # let the LISTEN connection read its notification


async def _events(db: asyncpg.Connection, rule: str) -> list[tuple[object, ...]]:
    rows = await db.fetch(
        """SELECT e.alarm_id, e.kind, e.tier FROM alarm_events e JOIN alarms a USING (alarm_id)
           WHERE a.rule = $1 ORDER BY e.event_id""",
        rule,
    )
    return [(r["alarm_id"], r["kind"], r["tier"]) for r in rows]


async def test_a_rule_edit_is_taken_at_the_next_tick_and_the_episode_goes_on(
    db: asyncpg.Connection, db_settings: DatabaseSettings
) -> None:
    alarms, clock, co1 = await _started(db, db_settings)
    try:
        # CO defaults 24/40/80/160 ppm, on-delay 10 s: yellow at t=10.
        await _batch(db, alarms, [(co1, t, 45.0) for t in range(0, 15, 5)])
        clock.t_s += 20
        async with db.transaction():
            (await alarms.tick(db))()  # opens the LISTEN connection
        assert alarms.reloads == 0
        before_edit = await RegistrySnapshot.load(db)
        # What PUT /api/v1/sensors/{id}/rules writes: yellow switched off.
        high = {"high": {"blue": 24.0, "yellow": None, "orange": 80.0, "red": 160.0}}
        async with db.transaction():
            await db.execute(
                "UPDATE sensors SET rules = $2::jsonb WHERE sensor_id = $1",
                co1, orjson.dumps(high).decode(),
            )  # fmt: skip
            await db.execute(
                "SELECT pg_notify($1, $2)", RULES_CHANNEL, orjson.dumps({"sensor_id": co1}).decode()
            )
        await _tick_until_reloaded(db, alarms, 1)
        events = await _events(db, "high")
        alarm_id = events[0][0]
        assert [e[1:] for e in events] == [("raised", 2), ("deescalated", 1)]
        assert all(e[0] == alarm_id for e in events)
        assert alarms.service is not None
        position = alarms.service.rules.position(co1)
        assert position is not None
        assert alarms.service.state.rows.tier[position, 0] == 1  # still active, at blue
        # Ingest's periodic refresh may hand over a snapshot loaded before the edit: the
        # bridge reads the registry itself and keeps the new rules.
        alarms.on_registry(before_edit)
        async with db.transaction():
            (await alarms.tick(db))()
        assert alarms.reloads == 1
        assert math.isnan(alarms.service.rules.limit[1, position])
        # The next readings go on under the new rules, in the same episode.
        await _batch(db, alarms, [(co1, t, 100.0) for t in range(15, 30, 5)])
        events = await _events(db, "high")
        assert [e[1:] for e in events][-1] == ("escalated", 3)
        assert {e[0] for e in events} == {alarm_id}
        assert await db.fetchval("SELECT count(*) FROM alarms WHERE rule = 'high'") == 1
    finally:
        await alarms.aclose()


async def test_a_registry_load_is_heard_and_a_vote_at_a_new_tier_moves_at_once(
    db: asyncpg.Connection, db_settings: DatabaseSettings, tmp_path: Path
) -> None:
    alarms, clock, co1 = await _started(db, db_settings)
    co2 = await db.fetchval("SELECT sensor_id FROM sensors WHERE key = 'gh1-det/co2'")
    try:
        # co1 at yellow, co2 at blue: the ring (2 of 3 at yellow) stays quiet.
        rows = [(co1, t, 45.0) for t in range(0, 15, 5)] + [(co2, t, 30.0) for t in range(0, 15, 5)]
        await _batch(db, alarms, rows)
        clock.t_s += 20
        async with db.transaction():
            (await alarms.tick(db))()
        assert await _events(db, "vote:co-ring") == []
        # The registry file now counts detectors at blue: 2 of 3 raise the holder to yellow.
        changed = tmp_path / "registry.yaml"
        changed.write_text(MINIMAL.read_text().replace("at: yellow", "at: blue"))
        await store_registry(db, load_registry(changed))
        await _tick_until_reloaded(db, alarms, 1)
        assert [e[1:] for e in await _events(db, "vote:co-ring")] == [("raised", 2)]
        assert [e[1:] for e in await _events(db, "high")] == [("raised", 2), ("raised", 1)]
    finally:
        await alarms.aclose()


async def test_rules_that_do_not_compile_keep_the_running_ones(
    db: asyncpg.Connection, db_settings: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    alarms, clock, co1 = await _started(db, db_settings)
    try:
        await _batch(db, alarms, [(co1, 0, 200.0)])  # red at once
        async with db.transaction():
            (await alarms.tick(db))()
        # A hold with the CO delays (the API refuses it; a hand edit of the database need not).
        await _edit(db, co1, {"hold_s": 60})
        async with asyncio.timeout(5):
            while "do not compile" not in caplog.text:  # heard, loaded, refused
                clock.t_s += 1
                async with db.transaction():
                    (await alarms.tick(db))()
                await asyncio.sleep(0.01)  # let the LISTEN connection read its notification
        assert alarms.reloads == 0
        # Still evaluating: the red clears through the old rules' 300 s off-delay.
        await _batch(db, alarms, [(co1, t, 5.0) for t in range(5, 320, 5)])
        assert [e[1:] for e in await _events(db, "high")] == [("raised", 4), ("cleared", 0)]
        # A good edit after the bad one is taken.
        await _edit(db, co1, {"deadband": 3.0})
        await _tick_until_reloaded(db, alarms, 1)
    finally:
        await alarms.aclose()


async def _edit(db: asyncpg.Connection, sensor_id: int, rules: dict[str, object]) -> None:
    async with db.transaction():
        await db.execute(
            "UPDATE sensors SET rules = $2::jsonb WHERE sensor_id = $1",
            sensor_id, orjson.dumps(rules).decode(),
        )  # fmt: skip
        await db.execute("SELECT pg_notify($1, '{}')", RULES_CHANNEL)
