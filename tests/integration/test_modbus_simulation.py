"""The Modbus servers are driven by the same plant models as the MQTT publisher: what the
collector reads over TCP is the simulation's device state, encoded and decoded per the map."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from modbus_support import rig

from hazwatch.domain import Quality
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import load_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from simulators.modbus_server import SimTime, SimulationSource
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

ANSHAN = Path(__file__).parents[2] / "deploy" / "demo" / "anshan.yaml"
HOLDER = ("gh1-plc", "gh1-co-n", "gh1-co-e", "gh1-co-s", "gh1-co-w")
START_MS = 1_795_000_000_000


def only(snapshot: RegistrySnapshot, keys: tuple[str, ...]) -> RegistrySnapshot:
    devices = [d for d in snapshot.devices.values() if d.key in keys]
    sensors = [s for d in devices for s in d.sensors]
    return RegistrySnapshot.build(
        list(snapshot.sites.values()), list(snapshot.assets.values()), devices, sensors
    )


async def test_holder_plc_and_detectors_serve_the_simulated_bleed() -> None:
    registry = load_registry(ANSHAN)
    sim = Simulation(
        registry, seed=3, start_ms=START_MS, scenario=load_scenario("bleed"), devices=HOLDER
    )
    snap = only(snapshot_from_file(registry), HOLDER)
    # virtual time held at 150 s into the scenario: the bleed is under way
    source = SimulationSource(sim)
    async with rig(snap, source, sim_time=SimTime(speed=1e-9, t0=150.0)) as r:
        keys = [s.key for d in snap.devices.values() for s in d.sensors]
        ids = {k: r.sensor_id(k) for k in keys}
        await r.sink.wait_for(lambda _: all(r.sink.of(i) for i in ids.values()), 15)
        for key, sensor_id in ids.items():
            device, channel = key.split("/")
            expected = sim.device_state(device).values[channel]
            row = r.sink.of(sensor_id)[-1]
            assert expected is not None and row.quality == Quality.GOOD, key
            assert math.isfinite(row.value)
            assert row.value == pytest.approx(expected, rel=1e-6, abs=1e-6), key  # float32
    co_top = sim.device_state("gh1-plc").values["co_top"]
    assert co_top is not None and co_top > 24  # the bleed has CO rising on the piston top
