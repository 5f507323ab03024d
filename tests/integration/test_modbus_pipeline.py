"""Modbus readings go through the same Batcher and ReadingStore as MQTT's, into TimescaleDB:
ids from the loaded registry, good values stored as read, failed polls as NULL with their
quality code, and never a good row from a failed poll."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from modbus_support import HEADER, ListQuarantine, PollLog, snapshot
from prometheus_client import CollectorRegistry

from hazwatch.config import DatabaseSettings, IngestSettings, Settings
from hazwatch.domain import Quality
from hazwatch.registry.parse import parse_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry
from ingest.batcher import Batcher, BatcherClosed
from ingest.dbsession import Backoff, DbSession
from ingest.metrics import IngestMetrics
from ingest.modbus import ModbusCollector
from ingest.service import IngestService, Pipeline
from ingest.store import ReadingStore
from simulators.modbus_server import FixedSource, SimFleet, UnitFault

DEVICES = "".join(
    f"""
      - key: det{unit}
        asset: a
        protocol: modbus
        modbus: {{host: 127.0.0.1, port: 1520, unit: {unit}, timeout_s: 0.1,
                 poll_groups: {{default: 0.2}}, status: [{{address: 1, fault_values: [2]}}]}}
        sensors:
          - {{channel: lel, kind: combustible_gas, modbus: {{address: 0, scale: 0.1}}}}
          - {{channel: alarm, kind: detector_alarm, range: [0, 2], modbus: {{address: 2}}}}
"""
    for unit in (1, 2, 3)
)


async def drain(batcher: Batcher, store: ReadingStore) -> None:
    with contextlib.suppress(BatcherClosed):
        while True:
            flush = await batcher.get()
            await store.write(flush.batch)
            flush.committed()


async def test_modbus_readings_reach_timescaledb_through_the_shared_batcher(
    db_settings: DatabaseSettings, db: asyncpg.Connection
) -> None:
    await store_registry(db, parse_registry(HEADER + DEVICES, source="test"))
    loaded = await RegistrySnapshot.load(db)
    source = FixedSource({"det1": {"lel": 12.3, "alarm": 0}, "det2": {"lel": 55.5, "alarm": 2},
                          "det3": {"lel": 1.0, "alarm": 0}})  # fmt: skip
    source.set_fault("det2", False)
    batcher = Batcher(max_rows=50, max_age_ms=50)
    session = DbSession(
        db_settings, name="modbus-test", backoff=Backoff(0.01, 0.05),
        on_connect=ReadingStore.prepare,
    )  # fmt: skip
    store = ReadingStore(session)
    # the fleet serves what the registry file describes; the collector reads the database's ids
    async with SimFleet(snapshot(DEVICES), source, any_port=True) as fleet:
        fleet.set_fault("det3", UnitFault(dead=True))
        polls = PollLog()
        collector = ModbusCollector(
            fleet.retarget(loaded), batcher, quarantine=ListQuarantine(), on_poll=polls.record
        )
        writer = asyncio.create_task(drain(batcher, store))
        async with collector:
            polling = asyncio.create_task(collector.run())
            await polls.wait_for(lambda: collector.stats()["det1"].polls_ok >= 5, 10)
            source.set_fault("det1", True)
            n = collector.stats()["det1"].polls_ok
            await polls.wait_for(lambda: collector.stats()["det1"].polls_ok >= n + 3, 10)
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        batcher.close()
        await writer
    await store.close()

    rows = await db.fetch(
        """SELECT s.key, r.value, r.quality FROM readings r JOIN sensors s USING (sensor_id)
           ORDER BY r.ts"""
    )
    by_key: dict[str, list[tuple[float | None, int]]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append((row["value"], row["quality"]))
    assert {v for v, q in by_key["det2/lel"]} == {55.5}
    assert {q for v, q in by_key["det2/alarm"]} == {Quality.GOOD}
    det1 = by_key["det1/lel"]
    assert (12.3, Quality.GOOD) in det1 and (12.3, Quality.SENSOR_FAULT) in det1
    dead = by_key["det3/lel"] + by_key["det3/alarm"]
    assert dead and all(v is None and q == Quality.COMM_TIMEOUT for v, q in dead)
    total = sum(s.polls_ok + sum(s.polls_failed.values()) for s in collector.stats().values())
    assert len(rows) == 2 * total  # every poll's readings stored, none lost, none doubled


async def test_hazwatch_ingest_service_polls_modbus_into_readings_and_quarantine(
    db_url: str, db: asyncpg.Connection
) -> None:
    """The ingest service runs the Modbus collector beside (here: instead of) MQTT, with its
    batcher, store and quarantine writer; stopping it commits everything it read."""
    source = FixedSource({"det1": {"lel": 12.3, "alarm": 0}, "det2": {"lel": 150.0, "alarm": 1},
                          "det3": {"lel": 1.0, "alarm": 0}})  # fmt: skip
    async with SimFleet(snapshot(DEVICES), source, any_port=True) as fleet:
        fleet.set_fault("det3", UnitFault(dead=True))
        port = next(iter(fleet.servers.values())).port
        text = HEADER + DEVICES.replace("port: 1520", f"port: {port}")
        await store_registry(db, parse_registry(text, source="test"))
        settings = Settings(
            database=DatabaseSettings(url=db_url), ingest=IngestSettings(db_retry_max_s=1.0)
        )
        registry = CollectorRegistry()
        polls = PollLog()

        def modbus(pipeline: Pipeline) -> ModbusCollector:
            return ModbusCollector(
                pipeline.registry, pipeline.batcher, quarantine=pipeline.quarantine,
                settings=pipeline.settings.modbus, registry=registry, on_poll=polls.record,
            )  # fmt: skip

        service = IngestService(
            settings, IngestMetrics.create(registry), mqtt=False, collectors=[modbus]
        )
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        await polls.wait_for(lambda: sum(p.device == "det2" for p in polls) >= 3, 20)
        stop.set()
        await running
    polls = registry.get_sample_value(
        "hazwatch_modbus_polls_total", {"device": "det1", "result": "ok"}
    )
    rows = await db.fetch(
        """SELECT s.key, r.value, r.quality FROM readings r JOIN sensors s USING (sensor_id)"""
    )
    det1 = [(r["value"], r["quality"]) for r in rows if r["key"] == "det1/lel"]
    assert polls and len(det1) == polls and set(det1) == {(12.3, Quality.GOOD)}
    det2 = [(r["value"], r["quality"]) for r in rows if r["key"] == "det2/lel"]
    assert det2 and set(det2) == {(None, Quality.BAD)}  # 150 %LEL is outside 0-100
    dead = [(r["value"], r["quality"]) for r in rows if r["key"].startswith("det3/")]
    assert dead and set(dead) == {(None, Quality.COMM_TIMEOUT)}
    quarantined = await db.fetch("SELECT source, topic, reason FROM quarantine")
    assert len(quarantined) == len(det2)  # every rejected value kept, with its reason
    assert {(q["source"], q["reason"]) for q in quarantined} == {("modbus", "out_of_range")}
    assert all(q["topic"].endswith("/2/det2/lel") for q in quarantined)
