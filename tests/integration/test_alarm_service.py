"""The alarm service on the real database: episodes, events, notifications, actions, votes,
derived signals, shelving, and a flood of 10k sensors crossing at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from alerting import actions
from alerting.service import AlarmService
from hazwatch.errors import AlarmActionRefused
from hazwatch.registry.parse import load_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry
from tests.alarm_harness import EPOCH_T0, S, T0, ingest, readings, tick

pytestmark = pytest.mark.integration

MINIMAL = Path(__file__).parents[1] / "fixtures" / "registry" / "minimal.yaml"


async def _minimal(db: asyncpg.Connection) -> tuple[RegistrySnapshot, AlarmService]:
    await store_registry(db, load_registry(MINIMAL))
    snapshot = await RegistrySnapshot.load(db)
    return snapshot, await AlarmService.start(db, snapshot, now_us=T0)


def _hear(heard: list[dict[str, object]], payload: str, rule: str = "high") -> None:
    event = orjson.loads(payload)
    if event["rule"] == rule:
        heard.append(event)


def _id(snapshot: RegistrySnapshot, key: str) -> int:
    sensor = snapshot.sensor(key)
    assert sensor is not None
    return sensor.sensor_id


async def _events(db: asyncpg.Connection, rule: str = "high") -> list[tuple[object, ...]]:
    rows = await db.fetch(
        """SELECT coalesce(n.key, x.key) AS subject, a.rule, e.kind, e.tier,
                  hazwatch_ts_to_us(e.ts) AS ts_us, a.state
           FROM alarm_events e JOIN alarms a USING (alarm_id)
           JOIN assets x ON x.asset_id = a.asset_id
           LEFT JOIN sensors n ON n.sensor_id = a.sensor_id
           WHERE a.rule = $1 ORDER BY e.event_id""",
        rule,
    )
    return [(r["subject"], r["rule"], r["kind"], r["tier"], (r["ts_us"] - T0) / S) for r in rows]


async def test_co_episode_raises_escalates_clears_and_notifies(
    db: asyncpg.Connection, db_url: str
) -> None:
    snapshot, service = await _minimal(db)
    co1 = _id(snapshot, "gh1-det/co1")
    heard: list[dict[str, object]] = []
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("hazwatch_alarm_events", lambda *args: _hear(heard, args[3]))
    try:
        # CO defaults: 24/40/80/160 ppm, deadband 2, on-delay 10 s, off-delay 300 s, red at once.
        await ingest(db, service, readings([(co1, t, 30.0) for t in range(0, 15, 5)]))
        await ingest(db, service, readings([(co1, 15, 45.0), (co1, 20, 45.0), (co1, 25, 45.0)]))
        await ingest(db, service, readings([(co1, 30, 170.0)]))
        await ingest(db, service, readings([(co1, 35, 5.0), (co1, 40, 5.0)]))
        await tick(db, service, T0 + 345 * S)  # 300 s after the value fell, plus the grace
        deadline = asyncio.get_running_loop().time() + 5
        while len(heard) < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await listener.close()
    assert await _events(db) == [
        ("gh1-det/co1", "high", "raised", 1, 10.0),
        ("gh1-det/co1", "high", "escalated", 2, 25.0),
        ("gh1-det/co1", "high", "escalated", 4, 30.0),
        ("gh1-det/co1", "high", "cleared", 0, 335.0),
    ]
    alarm = await db.fetchrow("SELECT * FROM alarms WHERE rule = 'high'")
    assert alarm is not None
    assert alarm["state"] == "cleared_unacked"
    assert alarm["max_tier"] == 4
    assert [h["kind"] for h in heard] == ["raised", "escalated", "escalated", "cleared"]
    assert heard[2]["colour"] == "red"
    assert heard[2]["sensor"] == "gh1-det/co1"
    assert heard[2]["suppressed"] is False
    assert all(len(orjson.dumps(h)) < 8000 for h in heard)


async def test_acknowledge_then_clear_closes_and_double_ack_is_refused(
    db: asyncpg.Connection, db_url: str
) -> None:
    snapshot, service = await _minimal(db)
    co2 = _id(snapshot, "gh1-det/co2")
    await ingest(db, service, readings([(co2, 0, 200.0)]))
    alarm_id = await db.fetchval(
        "SELECT alarm_id FROM alarms WHERE sensor_id = $1 AND rule = 'high'", co2
    )
    # Two operators acknowledge at once: one event, one refusal.
    other = await asyncpg.connect(db_url)
    try:

        async def ack(conn: asyncpg.Connection, who: str) -> str:
            async with conn.transaction():
                try:
                    await actions.acknowledge(conn, alarm_id, actor=who, at=EPOCH_T0)
                except AlarmActionRefused:
                    return "refused"
                await asyncio.sleep(0.05)  # hold the row lock a moment
                return "acked"

        results = await asyncio.gather(ack(db, "ann"), ack(other, "bob"))
    finally:
        await other.close()
    assert sorted(results) == ["acked", "refused"]
    assert await db.fetchval("SELECT state FROM alarms WHERE alarm_id = $1", alarm_id) == (
        "active_acked"
    )
    await ingest(db, service, readings([(co2, t, 1.0) for t in range(5, 400, 10)]))
    row = await db.fetchrow("SELECT state, closed_at FROM alarms WHERE alarm_id = $1", alarm_id)
    assert row["state"] == "closed"
    kinds = [e[2] for e in await _events(db)]
    assert kinds == ["raised", "acknowledged", "cleared"]
    with pytest.raises(AlarmActionRefused, match="closed"):
        async with db.transaction():
            await actions.acknowledge(db, alarm_id, actor="ann", at=EPOCH_T0)
    # A new excursion opens a new episode.
    await ingest(db, service, readings([(co2, 500, 200.0)]))
    count = "SELECT count(*) FROM alarms WHERE sensor_id = $1 AND rule = 'high'"
    assert await db.fetchval(count, co2) == 2


async def test_cleared_unacked_episode_reopens_on_a_new_excursion(db: asyncpg.Connection) -> None:
    snapshot, service = await _minimal(db)
    co1 = _id(snapshot, "gh1-det/co1")
    await ingest(db, service, readings([(co1, 0, 200.0)]))
    await ingest(db, service, readings([(co1, t, 1.0) for t in range(10, 400, 10)]))
    await ingest(db, service, readings([(co1, 400, 200.0)]))
    rows = await db.fetch(
        "SELECT state, tier FROM alarms WHERE sensor_id = $1 AND rule = 'high'", co1
    )
    assert [(r["state"], r["tier"]) for r in rows] == [("active_unacked", 4)]
    assert [e[2] for e in await _events(db)] == ["raised", "cleared", "raised"]


async def test_vote_raises_an_asset_alarm(db: asyncpg.Connection) -> None:
    snapshot, service = await _minimal(db)
    co1, co2 = _id(snapshot, "gh1-det/co1"), _id(snapshot, "gh1-det/co2")
    # co-ring: 2 of 3 at yellow or above raise the holder to orange.
    batch = [(co1, t, 45.0) for t in range(0, 30, 5)] + [(co2, t, 50.0) for t in range(2, 30, 5)]
    await ingest(db, service, readings(batch))
    vote = await db.fetchrow("SELECT * FROM alarms WHERE rule = 'vote:co-ring'")
    assert vote["sensor_id"] is None
    assert vote["tier"] == 3
    gh1 = snapshot.assets["gh1"].asset_id
    assert vote["asset_id"] == gh1
    events = await _events(db, "vote:co-ring")
    assert events == [("gh1", "vote:co-ring", "raised", 3, 12.0)]  # co2 yellow 10 s after 2 s


async def test_derived_piston_speed_is_stored_and_alarmed(db: asyncpg.Connection) -> None:
    snapshot, service = await _minimal(db)
    level = _id(snapshot, "gh1-plc/level")
    speed = _id(snapshot, "gh1/piston_speed")
    # Level rising 1 % of stroke per 2 s: 30 %/min x 0.6 m per % = 18 m/min: far too fast.
    await ingest(db, service, readings([(level, t, 40.0 + t / 2) for t in range(0, 60, 2)]))
    stored = await db.fetch("SELECT value FROM readings WHERE sensor_id = $1 ORDER BY ts", speed)
    assert stored, "derived readings are written"
    assert stored[-1]["value"] == pytest.approx(18.0)
    alarm = await db.fetchrow(
        "SELECT tier FROM alarms WHERE sensor_id = $1 AND rule = 'high'", speed
    )
    assert alarm["tier"] == 4


async def test_shelved_alarm_is_recorded_but_suppressed_until_it_expires(
    db: asyncpg.Connection, db_url: str
) -> None:
    snapshot, service = await _minimal(db)
    co1 = _id(snapshot, "gh1-det/co1")
    await ingest(db, service, readings([(co1, 0, 200.0)]))
    alarm_id = await db.fetchval("SELECT alarm_id FROM alarms WHERE rule = 'high'")
    async with db.transaction():
        await actions.shelve(db, alarm_id, actor="ann", at=EPOCH_T0, duration=timedelta(minutes=10),
                             reason="detector being replaced")  # fmt: skip
    heard: list[dict[str, object]] = []
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("hazwatch_alarm_events", lambda *args: _hear(heard, args[3]))
    try:
        await ingest(db, service, readings([(co1, t, 1.0) for t in range(10, 400, 10)]))
        await tick(db, service, T0 + 700 * S)
        deadline = asyncio.get_running_loop().time() + 5
        while len(heard) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await listener.close()
    assert [(h["kind"], h["suppressed"]) for h in heard] == [
        ("cleared", True),
        ("unshelved", False),
    ]
    assert (
        await db.fetchval("SELECT shelved_until FROM alarms WHERE alarm_id = $1", alarm_id) is None
    )
