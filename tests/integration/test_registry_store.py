"""Loading the registry into the real database: all or nothing, stable ids, deactivation."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from hazwatch.domain import Tier
from hazwatch.errors import RegistryError
from hazwatch.registry.parse import load_registry, parse_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
MINIMAL = ROOT / "tests" / "fixtures" / "registry" / "minimal.yaml"


async def test_demo_city_loads_and_reads_back(db: asyncpg.Connection) -> None:
    registry = load_registry(ROOT / "deploy" / "demo" / "anshan.yaml")
    summary = await store_registry(db, registry)
    assert summary.sensors >= 60
    snapshot = await RegistrySnapshot.load(db)
    assert len(snapshot.sensors) == summary.sensors
    assert {d.protocol for d in snapshot.devices.values()} == {"mqtt", "modbus"}
    for sensor in snapshot.sensors:
        assert snapshot.sensor(sensor.key) is sensor
        sensor.rules  # noqa: B018 - every sensor's effective rules compile


async def test_reload_keeps_ids_and_deactivates_what_was_removed(db: asyncpg.Connection) -> None:
    await store_registry(db, load_registry(MINIMAL))
    first = await RegistrySnapshot.load(db)
    lines = MINIMAL.read_text().splitlines(keepends=True)
    text = "".join(line for line in lines if "channel: co3" not in line)
    text = text.replace("[gh1-det/co1, gh1-det/co2, gh1-det/co3]", "[gh1-det/co1, gh1-det/co2]")
    summary = await store_registry(db, parse_registry(text))
    assert summary.deactivated == {"sensors": ["gh1-det/co3"]}
    second = await RegistrySnapshot.load(db)
    assert second.sensor("gh1-det/co3") is None
    for sensor in second.sensors:
        old = first.sensor(sensor.key)
        assert old is not None and old.sensor_id == sensor.sensor_id
    await store_registry(db, load_registry(MINIMAL))  # putting it back reactivates the same id
    third = await RegistrySnapshot.load(db)
    co3_before, co3_after = first.sensor("gh1-det/co3"), third.sensor("gh1-det/co3")
    assert co3_before is not None and co3_after is not None
    assert co3_after.sensor_id == co3_before.sensor_id


async def test_snapshot_carries_overrides_modbus_and_risk(db: asyncpg.Connection) -> None:
    await store_registry(db, load_registry(MINIMAL))
    snap = await RegistrySnapshot.load(db)
    co3 = snap.sensor("gh1-det/co3")
    assert co3 is not None and co3.rules.high is not None and co3.rules.high.blue == 20
    level = snap.sensor("gh1-plc/level")
    assert level is not None and level.modbus is not None and level.modbus.address == 40001
    speed = snap.sensor("gh1/piston_speed")
    assert speed is not None and speed.device_key is None and speed.derive is not None
    assert snap.assets["gh1"].static_risk is Tier.ORANGE
    assert snap.assets["gh1"].votes[0].k == 2
    plc = snap.devices["gh1-plc"]
    assert plc.modbus is not None and plc.modbus.port == 15020
    assert [s.channel for s in plc.sensors] == ["level", "pressure"]


@pytest.mark.parametrize(
    "broken",
    ["unknown_kind.yaml", "duplicate_device.yaml", "bad_register_map.yaml", "min_over_max.yaml"],
)
async def test_a_broken_file_loads_nothing(db: asyncpg.Connection, broken: str) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(ROOT / "tests" / "fixtures" / "registry" / broken)
    assert info.value.problems
    assert await db.fetchval("SELECT count(*) FROM sensors") == 0


async def test_a_failing_load_rolls_back_completely(db: asyncpg.Connection) -> None:
    await db.execute("ALTER TABLE sensors ADD CONSTRAINT no_co3 CHECK (key <> 'gh1-det/co3')")
    with pytest.raises(asyncpg.CheckViolationError):
        await store_registry(db, load_registry(MINIMAL))
    for table in ("sites", "assets", "devices", "sensors", "audit_log"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
