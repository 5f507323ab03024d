"""Faults on Modbus devices (RELIABILITY M1-M4): each unit fails on its own, failed polls give
bad-quality readings and never good ones, and the collector recovers without busy loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time

import pytest
from modbus_support import ListQuarantine, ListSink, Rig, rig, snapshot
from prometheus_client import CollectorRegistry

from hazwatch.config import ModbusSettings
from hazwatch.domain import Quality
from ingest.modbus import ModbusCollector, Outcome
from simulators.modbus_server import FixedSource, UnitFault

PERIOD_S = 0.25
UNITS = 5


def gateway(units: int = UNITS, *, port: int = 1510, period_s: float = PERIOD_S) -> str:
    return "".join(
        f"""
      - key: u{unit}
        asset: a
        protocol: modbus
        modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, word_order: CDAB,
                 timeout_s: 0.1, poll_groups: {{default: {period_s}}}}}
        sensors:
          - {{channel: lel, kind: combustible_gas, modbus: {{address: 0, scale: 0.1}}}}
          - {{channel: co, kind: co, modbus: {{address: 1, type: float32}}}}
"""
        for unit in range(1, units + 1)
    )


def values(units: int = UNITS) -> FixedSource:
    """Distinct values per unit, so a neighbour's answer can never pass for one's own."""
    return FixedSource({f"u{u}": {"lel": 10.0 + u, "co": 100.0 + u} for u in range(1, units + 1)})


def assert_no_bogus_rows(r: Rig, units: int = UNITS) -> None:
    """Every good reading carries exactly its own unit's value."""
    for u in range(1, units + 1):
        expected = {r.sensor_id(f"u{u}/lel"): 10.0 + u, r.sensor_id(f"u{u}/co"): 100.0 + u}
        for sensor_id, value in expected.items():
            for row in r.sink.of(sensor_id):
                if row.good:
                    assert row.value == pytest.approx(value), (u, row)
                else:
                    assert math.isnan(row.value), (u, row)


def on_schedule_ratio(r: Rig, device: str, start: float, end: float) -> float:
    """Successful polls that started within half a period of their slot, over the slots the
    schedule had in [start, end)."""
    slots = (end - start) / PERIOD_S
    good = [
        p
        for p in r.polls
        if p.device == device
        and start <= p.scheduled < end
        and p.outcome is Outcome.OK
        and p.started - p.scheduled < PERIOD_S / 2
    ]
    return len(good) / slots


async def test_dead_unit_behind_a_shared_gateway_does_not_disturb_its_neighbours() -> None:
    snap = snapshot(gateway())
    async with rig(snap, values()) as r:
        r.fleet.set_fault("u3", UnitFault(dead=True))
        start = time.monotonic() + 0.5
        end = start + 5.0
        await r.polls.wait_for(lambda: sum(p.scheduled >= end for p in r.polls) >= UNITS, 10)
        ratios = {f"u{u}": on_schedule_ratio(r, f"u{u}", start, end) for u in (1, 2, 4, 5)}
        assert all(ratio >= 0.99 for ratio in ratios.values()), ratios
        dead = r.collector.stats()["u3"]
        assert dead.polls_ok == 0
        assert dead.polls_failed["timeout"] >= 3
        assert dead.polls_failed["skipped"] > dead.polls_failed["timeout"]  # breaker open
        co = r.sink.of(r.sensor_id("u3/co"))
        assert co and all(row.quality == Quality.COMM_TIMEOUT for row in co)
        assert_no_bogus_rows(r)


async def test_slow_unit_late_answers_never_become_a_neighbours_readings() -> None:
    snap = snapshot(gateway())
    async with rig(snap, values(), ModbusSettings(breaker_trip_after=1000)) as r:
        r.fleet.set_fault("u2", UnitFault(delay_s=0.15))  # answers after the 0.1 s timeout
        await r.polls.wait_for(lambda: r.collector.stats()["u2"].polls_failed["timeout"] >= 10, 15)
        stats = r.collector.stats()
        assert stats["u2"].polls_ok == 0
        assert all(stats[f"u{u}"].polls_ok >= 5 for u in (1, 3, 4, 5))
        assert_no_bogus_rows(r)


async def test_exception_replies_set_the_quality_and_store_no_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest")
    snap = snapshot(gateway())
    async with rig(snap, values()) as r:
        r.fleet.set_fault("u4", UnitFault(exception=2))  # illegal data address
        await r.polls.wait_for(lambda: r.collector.stats()["u4"].polls_failed["exception"] >= 4, 10)
        rows = r.sink.of(r.sensor_id("u4/lel"))
        assert rows and all(row.quality == Quality.modbus_exception(2) for row in rows)
        assert all(math.isnan(row.value) for row in rows)
        # a fast exception costs the line nothing: the unit is not skipped, polls stay on time
        stats = r.collector.stats()["u4"]
        assert stats.polls_failed["skipped"] == 0 and stats.missed == 0
        assert_no_bogus_rows(r)
    assert any("u4" in m and "exception code 2" in m for m in caplog.messages)


async def test_junk_frames_reset_the_connection_and_polling_recovers() -> None:
    snap = snapshot(gateway())
    async with rig(snap, values()) as r:
        r.fleet.set_fault("u1", UnitFault(junk=True))
        await r.polls.wait_for(lambda: r.collector.stats()["u1"].polls_failed["junk"] >= 1, 10)
        r.fleet.set_fault("u1", None)
        cleared = time.monotonic()

        def recovered() -> list[float]:
            return [
                p.finished
                for p in r.polls
                if p.device == "u1" and p.outcome is Outcome.OK and p.started > cleared
            ]

        await r.polls.wait_for(lambda: bool(recovered()), 10)
        first_ok = min(recovered())
        assert first_ok - cleared <= 2 * PERIOD_S
        junk_rows = [row for row in r.sink.of(r.sensor_id("u1/co")) if not row.good]
        assert junk_rows and all(row.quality == Quality.PROTOCOL_ERROR for row in junk_rows)
        assert (
            r.metrics.get_sample_value(
                "hazwatch_modbus_connects_total",
                {"line": r.collector.lines[0].name, "result": "ok"},
            )
            >= 2
        )  # the junk reset the connection and it came back
        assert_no_bogus_rows(r)


async def test_dropped_connections_are_reported_and_reopened() -> None:
    snap = snapshot(gateway(2))
    async with rig(snap, values(2)) as r:
        r.fleet.set_fault("u2", UnitFault(drop=True, probability=0.5))
        await r.polls.wait_for(
            lambda: r.collector.stats()["u2"].polls_failed["disconnected"] >= 3, 15
        )
        r.fleet.set_fault("u2", None)
        n = r.collector.stats()["u2"].polls_ok
        # after the breaker's next probe (it may have tripped on three drops in a row)
        await r.polls.wait_for(lambda: r.collector.stats()["u2"].polls_ok >= n + 3, 20)
        rows = [row for row in r.sink.of(r.sensor_id("u2/lel")) if not row.good]
        assert {row.quality for row in rows} <= {Quality.COMM_REFUSED, Quality.COMM_TIMEOUT}
        assert_no_bogus_rows(r, 2)


async def test_power_cycle_recovers_within_two_periods() -> None:
    snap = snapshot(gateway(1, port=1511))
    async with rig(snap, values(1)) as r:
        server, _ = r.fleet.server_of("u1")
        await r.polls.wait_for(lambda: r.collector.stats()["u1"].polls_ok >= 3, 5)
        await server.power_cycle(1.5)
        back = time.monotonic()
        await r.polls.wait_for(
            lambda: any(p.outcome is Outcome.OK and p.started >= back for p in r.polls), 5
        )
        first_ok = min(p.finished for p in r.polls if p.outcome is Outcome.OK and p.started >= back)
        assert first_ok - back <= 2 * PERIOD_S
        during = [p for p in r.polls if p.outcome is not Outcome.OK]
        assert during and {p.outcome for p in during} <= {Outcome.DISCONNECTED, Outcome.REFUSED}
        rows = [row for row in r.sink.of(r.sensor_id("u1/co")) if not row.good]
        assert rows and {row.quality for row in rows} == {Quality.COMM_REFUSED}


async def test_refused_connection_backs_off_without_a_busy_loop() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = snapshot(gateway(1, port=port, period_s=1.0))
    sink, registry = ListSink(), CollectorRegistry()
    collector = ModbusCollector(dead, sink, quarantine=ListQuarantine(), registry=registry)
    async with collector:
        task = asyncio.create_task(collector.run())
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(4.0)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    attempts = registry.get_sample_value(
        "hazwatch_modbus_connects_total", {"line": f"127.0.0.1:{port}", "result": "refused"}
    )
    # 0.25 s, 0.5 s, then one attempt per poll period (1 s): never a busy loop
    assert attempts is not None and 3 <= attempts <= 7
    assert cpu < 0.2 * wall
    rows = sink.of(dead.devices["u1"].sensors[0].sensor_id)
    assert len(rows) >= 3 and all(r.quality == Quality.COMM_REFUSED for r in rows)
    assert collector.stats()["u1"].polls_failed["refused"] == len(rows)


async def test_connection_attempts_that_hang_time_out_and_back_off() -> None:
    """A port whose accept queue is full drops our SYNs, like a firewall DROP rule."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))  # fills the backlog; never accepted
        dead = snapshot(gateway(1, port=port, period_s=0.5))
        sink, registry = ListSink(), CollectorRegistry()
        settings = ModbusSettings(connect_timeout_s=0.3)
        collector = ModbusCollector(
            dead, sink, quarantine=ListQuarantine(), settings=settings, registry=registry
        )
        async with collector:
            task = asyncio.create_task(collector.run())
            await sink.wait_for(lambda rows: len(rows) >= 6, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    rows = sink.rows
    assert all(math.isnan(r.value) and r.quality == Quality.COMM_TIMEOUT for r in rows)
    attempts = registry.get_sample_value(
        "hazwatch_modbus_connects_total",
        {"line": f"127.0.0.1:{port}", "result": "connect_timeout"},
    )
    assert attempts is not None and attempts <= len(rows) // 2  # one per poll at most
