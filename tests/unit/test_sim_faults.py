"""Each fault does what it says, and nothing else: a faulted run differs from the clean run of
the same seed only where the fault acts (faults draw from their own streams)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hazwatch.domain import Quality
from hazwatch.registry.parse import load_registry
from simulators.delivery import Delivery
from simulators.plant import Plant
from simulators.scenario import parse_scenario
from simulators.simulation import DeviceReading, Simulation

ROOT = Path(__file__).resolve().parents[2]
START = 1_795_852_800_000


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant.from_registry(load_registry(ROOT / "deploy/demo/anshan.yaml"))


def run(plant: Plant, events: str, seconds: int = 300) -> tuple[Simulation, list[DeviceReading]]:
    sim = Simulation(
        plant, seed=2, start_ms=START, scenario=parse_scenario(f"name: f\nevents: [{events}]")
    )
    return sim, list(sim.run(seconds * 1000))


@pytest.fixture(scope="module")
def clean(plant: Plant) -> list[DeviceReading]:
    return list(Simulation(plant, seed=2, start_ms=START).run(300_000))


def channel(readings: list[DeviceReading], key: str) -> list[tuple[float, float | None]]:
    device, name = key.split("/")
    return [
        ((r.ts_ms - START) / 1000, r.values[name])
        for r in readings
        if r.device == device and name in r.values
    ]


def test_spike_offsets_exactly_the_given_samples(plant: Plant, clean: list[DeviceReading]) -> None:
    _, faulted = run(
        plant, "{kind: spike, at_s: 50, sensors: [ps4/pressure], magnitude: 5, samples: 2}"
    )
    a, b = channel(clean, "ps4/pressure"), channel(faulted, "ps4/pressure")
    diffs = [(t, y - x) for (t, x), (_, y) in zip(a, b, strict=True) if x != y]  # type: ignore[operator]
    assert len(diffs) == 2
    assert all(t >= 50 and d == pytest.approx(5) for t, d in diffs)


def test_stuck_repeats_the_first_value_then_recovers(
    plant: Plant, clean: list[DeviceReading]
) -> None:
    _, faulted = run(plant, "{kind: stuck, at_s: 60, duration_s: 100, sensors: [ps4/pressure]}")
    a, b = channel(clean, "ps4/pressure"), channel(faulted, "ps4/pressure")
    during = {v for t, v in b if 60 <= t < 160}
    assert len(during) == 1
    assert [v for t, v in b if t >= 160] == [v for t, v in a if t >= 160]
    assert len({v for t, v in a if 60 <= t < 160}) > 5


def test_drift_adds_rate_times_elapsed(plant: Plant, clean: list[DeviceReading]) -> None:
    _, faulted = run(
        plant, "{kind: drift, at_s: 60, duration_s: 120, sensors: [vr2-co/co], rate_per_min: 6}"
    )
    for (t, x), (_, y) in zip(
        channel(clean, "vr2-co/co"), channel(faulted, "vr2-co/co"), strict=True
    ):
        assert x is not None
        assert y is not None
        expected = 6 * (t - 60) / 60 if 60 <= t < 180 else 0.0
        assert y - x == pytest.approx(expected, abs=0.11)  # reported to 0.1 ppm


def test_garbage_is_out_of_range_or_not_finite(plant: Plant) -> None:
    _, faulted = run(plant, "{kind: garbage, at_s: 60, duration_s: 100, sensors: [ps4/flow_in]}")
    modes = set()
    for t, v in channel(faulted, "ps4/flow_in"):
        assert v is not None
        inside = 0 <= v <= 200_000
        if 60 <= t < 160:
            assert not inside
            modes.add(
                "nan" if math.isnan(v) else "inf" if math.isinf(v) else "high" if v > 0 else "low"
            )
        else:
            assert inside
    assert modes == {"nan", "inf", "high", "low"}


def test_detector_fault_reports_code_and_bad_quality(plant: Plant) -> None:
    sim, faulted = run(
        plant, "{kind: fault, at_s: 60, duration_s: 60, devices: [gh1-co-n], code: 9}", 100
    )
    during = [r for r in faulted if r.device == "gh1-co-n" and r.ts_ms >= START + 60_000]
    assert during
    for r in during:
        assert r.values["co"] is None
        assert r.quality["co"] == Quality.SENSOR_FAULT
        assert r.values["fault"] == 9
        assert r.values["low_alarm"] == 0
        assert r.values["high_alarm"] == 0
    before = [r for r in faulted if r.device == "gh1-co-n" and r.ts_ms < START + 60_000]
    assert all(r.values["fault"] == 0 and not r.quality for r in before)
    status = sim.device_state("gh1-co-n").status
    assert status.fault
    assert status.fault_code == 9
    assert status.state == 2


def test_dropout_silences_a_sensor_without_gaps_in_seq(plant: Plant) -> None:
    _, faulted = run(plant, "{kind: dropout, at_s: 60, duration_s: 60, sensors: [ps4/flow_out]}")
    ps4 = [r for r in faulted if r.device == "ps4"]
    assert [r.seq for r in ps4] == list(range(1, len(ps4) + 1))
    silent = [r for r in ps4 if START + 60_000 <= r.ts_ms < START + 120_000]
    assert silent
    assert all("flow_out" not in r.values and "pressure" in r.values for r in silent)


def test_silence_stops_a_device_and_reports_it_offline(plant: Plant) -> None:
    sim, faulted = run(
        plant, "{kind: silence, at_s: 60, duration_s: 60, devices: [ps6], disconnect: true}", 90
    )
    ps6 = [r for r in faulted if r.device == "ps6"]
    assert not [r for r in ps6 if START + 60_000 <= r.ts_ms < START + 120_000]
    assert [r.seq for r in ps6] == list(range(1, len(ps6) + 1))
    assert sim.link_down("ps6")
    assert not sim.device_state("ps6").status.online
    sim.advance_to(START + 125_000)
    assert not sim.link_down("ps6")
    assert sim.device_state("ps6").status.online


def test_ramp_moves_the_true_value_and_returns(plant: Plant, clean: list[DeviceReading]) -> None:
    _, faulted = run(
        plant,
        "{kind: ramp, at_s: 30, duration_s: 150, sensors: [lpg-dcs/t1_level], to: 90, ramp_s: 60}",
    )
    a, b = channel(clean, "lpg-dcs/t1_level"), channel(faulted, "lpg-dcs/t1_level")
    held = [y for t, y in b if 100 <= t < 180]
    assert held
    assert all(y is not None and abs(y - 90) < 1.5 for y in held)
    assert [y for t, y in b if t >= 245] == [x for t, x in a if t >= 245]


def test_duplicate_publishes_copies_with_the_same_seq(plant: Plant) -> None:
    plan = parse_scenario(
        "name: d\nevents: [{kind: duplicate, at_s: 10, duration_s: 20, devices: [ps4], copies: 3}]"
    )
    sim = Simulation(plant, seed=1, start_ms=START, scenario=plan, devices=["ps4"])
    delivery = Delivery(plan, seed=1, start_ms=START)
    published = delivery.feed(sim.advance_to(START + 60_000), START + 60_000)
    seqs = [r.seq for r in published]
    in_window = [r for r in published if START + 10_000 <= r.ts_ms < START + 30_000]
    assert len(in_window) == 3 * len({r.seq for r in in_window}) == 30
    assert len(seqs) - len(set(seqs)) == delivery.duplicated == 20


def test_reorder_delays_some_readings_but_loses_none(plant: Plant) -> None:
    plan = parse_scenario(
        "name: r\nevents: [{kind: reorder, at_s: 0, devices: [efm1], probability: 0.3, "
        "max_delay_s: 5}]"
    )
    sim = Simulation(plant, seed=1, start_ms=START, scenario=plan, devices=["efm1"])
    delivery = Delivery(plan, seed=1, start_ms=START)
    produced: list[DeviceReading] = []
    published: list[DeviceReading] = []
    for t in range(START, START + 120_000, 1000):
        new = sim.advance_to(t)
        produced += new
        published += delivery.feed(new, t)
    published += delivery.flush()
    assert sorted(published, key=lambda r: r.seq) == produced
    seqs = [r.seq for r in published]
    assert seqs != sorted(seqs)
    assert 0.15 < delivery.delayed / len(produced) < 0.45
