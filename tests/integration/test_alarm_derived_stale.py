"""A derived signal raises no stale alarm of its own (its inputs' stale alarms cover it)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from alerting.rules import compile_snapshot
from hazwatch.registry.parse import load_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry

pytestmark = pytest.mark.integration

MINIMAL = Path(__file__).parents[1] / "fixtures" / "registry" / "minimal.yaml"


async def test_derived_sensors_compile_without_a_stale_rule(db: asyncpg.Connection) -> None:
    await store_registry(db, load_registry(MINIMAL))
    snapshot = await RegistrySnapshot.load(db)
    compiled = compile_snapshot(snapshot)
    positions = {s.key: i for i, s in enumerate(snapshot.sensors)}
    derived, level = positions["gh1/piston_speed"], positions["gh1-plc/level"]
    assert compiled.stale_after_us[derived] == 0
    assert compiled.offline_after_us[derived] == 0
    assert compiled.stale_after_us[level] > 0  # its input keeps its own
    assert compiled.stale_after_us[positions["gh1-det/co1"]] > 0
    speed = snapshot.sensor("gh1/piston_speed")
    assert speed is not None
    assert speed.rules.stale is not None  # the registry's view is unchanged; only the engine's
    assert compiled.side_on[0, derived]  # its high limits stay
