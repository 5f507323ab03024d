"""The simulation is a pure function of (registry, seed, scenario, start, tick, period scale)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hazwatch.registry.parse import load_registry
from simulators.plant import Plant
from simulators.rng import stream
from simulators.scenario import load_scenario
from simulators.simulation import DeviceReading, Simulation

ROOT = Path(__file__).resolve().parents[2]
ANSHAN = ROOT / "deploy/demo/anshan.yaml"
START = 1_795_852_800_000  # 2026-11-28T08:00:00+08:00


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant.from_registry(load_registry(ANSHAN))


def run(plant: Plant, seed: int, seconds: int = 300, **kw: object) -> list[DeviceReading]:
    sim = Simulation(plant, seed=seed, start_ms=START, scenario=load_scenario("demo"), **kw)  # type: ignore[arg-type]
    return list(sim.run(seconds * 1000))


def test_same_seed_same_stream(plant: Plant) -> None:
    a, b = run(plant, 7), run(plant, 7)
    assert len(a) > 1000
    assert a == b


def test_different_seed_different_stream(plant: Plant) -> None:
    a, b = run(plant, 7), run(plant, 8)
    values_a = [r.values for r in a if r.device == "ps4"]
    values_b = [r.values for r in b if r.device == "ps4"]
    assert values_a != values_b


def test_slicing_time_changes_nothing(plant: Plant) -> None:
    whole = run(plant, 3, seconds=200)
    sim = Simulation(plant, seed=3, start_ms=START, scenario=load_scenario("demo"))
    rng = np.random.default_rng(0)
    sliced: list[DeviceReading] = []
    t = START - 1
    while t < START + 200_000 - 1:
        t = min(t + int(rng.integers(1, 5000)), START + 200_000 - 1)
        sliced += sim.advance_to(t)
    assert sliced == whole


def test_stream_is_in_time_order_with_increasing_seq(plant: Plant) -> None:
    readings = run(plant, 1)
    times = [r.ts_ms for r in readings]
    assert times == sorted(times)
    last: dict[str, int] = {}
    for r in readings:
        assert r.seq == last.get(r.device, 0) + 1, r
        last[r.device] = r.seq


def test_nothing_from_the_future(plant: Plant) -> None:
    sim = Simulation(plant, seed=1, start_ms=START)
    for t in range(START, START + 30_000, 777):
        assert all(r.ts_ms <= t for r in sim.advance_to(t))


def test_choosing_devices_does_not_change_them(plant: Plant) -> None:
    everything = [r for r in run(plant, 5) if r.device in ("ps4", "efm1", "lls")]
    chosen = run(plant, 5, devices=["ps4", "efm1", "lls"])
    assert chosen == everything


def test_period_scale_multiplies_the_rate(plant: Plant) -> None:
    normal = Simulation(plant, seed=1, start_ms=START)
    fast = Simulation(plant, seed=1, start_ms=START, period_scale=0.1)
    assert fast.readings_per_s() == pytest.approx(normal.readings_per_s() * 10, rel=0.01)
    n_normal = sum(len(r.values) for r in normal.run(60_000))
    n_fast = sum(len(r.values) for r in fast.run(60_000))
    assert n_fast == pytest.approx(n_normal * 10, rel=0.05)


def test_streams_are_stable_across_processes() -> None:
    """No Python hash(): another interpreter with another hash seed draws the same numbers."""
    code = (
        "from simulators.rng import stream;"
        "print(stream(42, 'sensor', 'ps4/pressure').standard_normal(3).tolist())"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    here = stream(42, "sensor", "ps4/pressure").standard_normal(3).tolist()
    assert outputs.pop().strip() == str(here)
