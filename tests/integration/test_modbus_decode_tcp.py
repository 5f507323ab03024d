"""End to end over TCP: every data type in every word order, coils, discrete inputs, input
registers, status words and decimals registers decode to the values the simulator serves."""

from __future__ import annotations

import math

import pytest
from modbus_support import rig, snapshot

from hazwatch.domain import Quality
from hazwatch.registry.modbus_map import WordOrder
from simulators.modbus_server import FixedSource

KNOWN = {
    "i16": -1234.0,
    "u16": 54321.0,
    "i32": -123456789.0,
    "u32": 3_000_000_000.0,
    "f32": 12.5,
    "f64": -1234.5678,
}
TYPES = {"i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32", "f32": "float32",
         "f64": "float64"}  # fmt: skip
ADDRESS = {"i16": 0, "u16": 1, "i32": 2, "u32": 4, "f32": 6, "f64": 8}
WIDE = "range: [-1.0e10, 1.0e10]"


def word_order_device(unit: int, order: WordOrder) -> str:
    sensors = "\n".join(
        f"          - {{channel: {ch}, kind: temperature, {WIDE}, "
        f"modbus: {{address: {ADDRESS[ch]}, type: {TYPES[ch]}}}}}"
        for ch in KNOWN
    )
    return f"""
      - key: wo-{order.value.lower()}
        asset: a
        protocol: modbus
        modbus: {{host: 127.0.0.1, port: 1502, unit: {unit}, word_order: {order.value},
                 poll_groups: {{default: 0.2}}}}
        sensors:
{sensors}
"""


MIXED = """
      - key: mixed
        asset: a
        protocol: modbus
        modbus:
          host: 127.0.0.1
          port: 1503
          unit: 7
          addressing: base1
          word_order: CDAB
          poll_groups: {default: 0.2}
          status: [{address: 40001, fault_mask: 0x0030, applies_to: [co]}]
        sensors:
          - {channel: co, kind: co, modbus: {address: 40003, type: float32}}
          - {channel: high_alarm, kind: detector_alarm,
             modbus: {address: 40001, type: bits, mask: 0x0080}}
          - {channel: pressure, kind: temperature,
             modbus: {address: 40011, type: int16, decimals_address: 40021}}
          - {channel: flow, kind: flow, range: [0, 200000],
             modbus: {address: 40013, type: uint32, scale: 0.1, word_order: ABCD}}
          - {channel: ir, kind: temperature, modbus: {fc: 4, address: 30001, type: float32}}
          - {channel: coil, kind: detector_alarm, modbus: {fc: 1, address: 6, type: bool}}
          - {channel: di, kind: detector_alarm, modbus: {fc: 2, address: 3, type: bool}}
"""


async def test_every_type_in_every_word_order_decodes_over_tcp() -> None:
    devices = "".join(word_order_device(i + 1, order) for i, order in enumerate(WordOrder))
    snap = snapshot(devices)
    source = FixedSource({f"wo-{o.value.lower()}": KNOWN for o in WordOrder})
    async with rig(snap, source) as r:
        ids = {
            (o, ch): r.sensor_id(f"wo-{o.value.lower()}/{ch}") for o in WordOrder for ch in KNOWN
        }
        await r.sink.wait_for(lambda _: all(r.sink.of(i) for i in ids.values()), 10)
        for (order, channel), sensor_id in ids.items():
            row = r.sink.of(sensor_id)[0]
            assert row.quality == Quality.GOOD, (order, channel)
            assert row.value == KNOWN[channel], (order, channel)
        # four units on one gateway port, all read in one request each
        assert len(r.fleet.servers) == 1
        assert all(len(g.reads) == 1 for p in r.collector.plans.values() for g in p.groups)


async def test_bits_coils_input_registers_status_and_decimals_over_tcp() -> None:
    snap = snapshot(MIXED)
    values = {"co": 37.25, "high_alarm": 1.0, "pressure": 12.34, "flow": 123456.7,
              "ir": -5.5, "coil": 1.0, "di": 0.0}  # fmt: skip
    source = FixedSource({"mixed": values})
    async with rig(snap, source) as r:
        ids = {ch: r.sensor_id(f"mixed/{ch}") for ch in values}
        await r.sink.wait_for(lambda _: all(r.sink.of(i) for i in ids.values()), 10)
        for channel, sensor_id in ids.items():
            row = r.sink.of(sensor_id)[0]
            assert row.quality == Quality.GOOD, channel
            assert row.value == pytest.approx(values[channel], abs=1e-9), channel
        # the detector reports a fault: its CO reading turns bad, its alarm bit stays good
        source.set_fault("mixed", True)
        n = len(r.sink.of(ids["co"]))
        await r.sink.wait_for(lambda _: len(r.sink.of(ids["co"])) > n + 1, 10)
        faulted = r.sink.latest(ids["co"])
        assert faulted is not None and faulted.quality == Quality.SENSOR_FAULT
        assert faulted.value == 37.25  # the value is kept for diagnosis, marked bad
        alarm = r.sink.latest(ids["high_alarm"])
        assert alarm is not None and alarm.quality == Quality.GOOD and alarm.value == 1.0


async def test_out_of_range_and_nan_go_to_quarantine_not_readings() -> None:
    snap = snapshot("""
      - key: odd
        asset: a
        protocol: modbus
        modbus: {host: 127.0.0.1, port: 1504, poll_groups: {default: 0.2}}
        sensors:
          - {channel: co, kind: co, modbus: {address: 0, type: float32}}
          - {channel: lel, kind: combustible_gas, modbus: {address: 2, type: uint16, scale: 0.1}}
    """)
    source = FixedSource({"odd": {"co": math.nan, "lel": 250.0}})  # LEL range is 0-100
    async with rig(snap, source) as r:
        co, lel = r.sensor_id("odd/co"), r.sensor_id("odd/lel")
        await r.sink.wait_for(lambda _: len(r.sink.of(co)) >= 2, 10)
        assert all(math.isnan(row.value) and row.quality == Quality.BAD for row in r.sink.of(co))
        assert all(math.isnan(row.value) and row.quality == Quality.BAD for row in r.sink.of(lel))
        reasons = {item[2] for item in r.quarantine.items}
        assert reasons == {"not_finite", "out_of_range"}
        assert all(item[0] == "modbus" for item in r.quarantine.items)
        assert r.collector.stats()["odd"].rejected == len(r.quarantine.items)


async def test_rtu_frames_over_tcp() -> None:
    snap = snapshot("""
      - key: rtu
        asset: a
        protocol: modbus
        modbus: {host: 127.0.0.1, port: 1505, unit: 3, framer: rtu, word_order: DCBA,
                 poll_groups: {default: 0.2}}
        sensors:
          - {channel: co, kind: co, modbus: {address: 4, type: float32}}
          - {channel: lel, kind: combustible_gas, modbus: {address: 0, scale: 0.1}}
    """)
    source = FixedSource({"rtu": {"co": 42.5, "lel": 12.3}})
    async with rig(snap, source) as r:
        co, lel = r.sensor_id("rtu/co"), r.sensor_id("rtu/lel")
        await r.sink.wait_for(lambda _: bool(r.sink.of(co)), 10)
        assert r.sink.of(co)[0].value == 42.5 and r.sink.of(co)[0].quality == Quality.GOOD
        assert r.sink.of(lel)[0].value == pytest.approx(12.3)
