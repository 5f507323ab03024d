"""Physics sanity: normal operation looks normal, and each story moves the right signals."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from hazwatch.registry.parse import load_registry
from simulators.plant import Plant
from simulators.scenario import Scenario, load_scenario, parse_scenario
from simulators.simulation import DeviceReading, Simulation

ROOT = Path(__file__).resolve().parents[2]
START = 1_795_852_800_000  # 2026-11-28T08:00:00+08:00
Series = dict[str, list[tuple[int, float | None]]]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant.from_registry(load_registry(ROOT / "deploy/demo/anshan.yaml"))


def series(readings: list[DeviceReading]) -> Series:
    out: Series = defaultdict(list)
    for r in readings:
        for channel, value in r.values.items():
            out[f"{r.device}/{channel}"].append((r.ts_ms, value))
    return out


def values(s: Series, key: str, after_s: float = 0, before_s: float = math.inf) -> np.ndarray:
    lo, hi = START + after_s * 1000, START + before_s * 1000
    return np.array([v for t, v in s[key] if lo <= t < hi and v is not None], dtype=float)


def simulate(
    plant: Plant, scenario: Scenario | str | None, seconds: float, seed: int = 0
) -> Series:
    plan = load_scenario(scenario) if isinstance(scenario, str) else scenario
    sim = Simulation(plant, seed=seed, start_ms=START, scenario=plan)
    return series(list(sim.run(round(seconds * 1000))))


@pytest.fixture(scope="module")
def quiet(plant: Plant) -> Series:
    return simulate(plant, None, 2 * 3600, seed=4)


def test_quiet_values_stay_in_range_and_below_every_blue_limit(plant: Plant, quiet: Series) -> None:
    for key, info in plant.sensors.items():
        v = values(quiet, key)
        if info.period_s is None:
            assert len(v) == 0, f"{key}: an event stream is silent in fair weather"
            continue
        assert len(v) > 0, key
        assert v.min() >= info.range_min, key
        assert v.max() <= info.range_max, key
        rules = info.rules
        x = np.abs(v) if rules.magnitude else v
        high = rules.high and next((t for t in rules.high.as_tuple() if t is not None), None)
        low = rules.low and next((t for t in rules.low.as_tuple() if t is not None), None)
        if high is not None:
            assert x.max() < high, f"{key} reaches {x.max()} (first high limit {high})"
        if low is not None:
            assert x.min() > low, f"{key} reaches {x.min()} (first low limit {low})"


def test_quiet_backgrounds_look_like_clean_air_and_fair_weather(quiet: Series) -> None:
    co = np.concatenate([values(quiet, f"gh1-co-{d}/co") for d in "nesw"])
    assert 2.0 <= np.median(co) <= 6.0
    assert co.max() < 10
    lel = np.concatenate([values(quiet, f"lel-gw{i}/lel") for i in range(1, 7)])
    assert np.percentile(lel, 99) <= 2.0
    field = values(quiet, "efm1/field")
    assert np.mean((field >= 0.05) & (field <= 0.25)) > 0.99
    assert values(quiet, "mh-101/ch4").max() < 2.0
    pressure = values(quiet, "gh1-plc/pressure")
    assert np.all(np.abs(pressure / 6.3 - 1) < 0.02)  # ~6.3 kPa within about 1 %
    assert values(quiet, "gh1-plc/tilt").max() < 60  # tens of mm, under half of 120 mm


def pairs(s: Series, out_key: str, in_key: str) -> np.ndarray:
    """Imbalance in % at each reading of in_key, against the latest reading of out_key."""
    outs = s[out_key]
    result, i, latest = [], 0, None
    for t, v in s[in_key]:
        while i < len(outs) and outs[i][0] <= t:
            latest = outs[i][1]
            i += 1
        if latest and v is not None:
            result.append((latest - v) / latest * 100)
    return np.array(result)


CHAIN = [("ps1-rtu", "ps2-rtu"), ("ps2-rtu", "ps3-rtu"), ("ps3-rtu", "ps4"), ("ps4", "ps5"),
         ("ps5", "ps6")]  # fmt: skip


def test_flows_balance_along_the_main_without_a_leak(quiet: Series) -> None:
    for up, down in CHAIN:
        imbalance = pairs(quiet, f"{up}/flow_out", f"{down}/flow_in")
        assert len(imbalance) > 1000
        assert np.abs(imbalance).max() < 0.3, (up, down)


def test_pressure_falls_along_the_main_and_follows_demand(quiet: Series) -> None:
    means = [values(quiet, f"{s}/pressure").mean() for s in ("ps1-rtu", "ps3-rtu", "ps6")]
    assert means[0] > means[1] > means[2]


def test_leak_opens_an_imbalance_and_drops_pressure_downstream(plant: Plant) -> None:
    s = simulate(plant, "leak", 600)
    imbalance = pairs(s, "ps3-rtu/flow_out", "ps4/flow_in")
    before = pairs(s, "ps3-rtu/flow_out", "ps4/flow_in")[:20]
    assert np.abs(before).max() < 0.3
    assert np.median(imbalance[-50:]) == pytest.approx(100 * 0.08 / 1.08, abs=0.3)
    other = pairs(s, "ps2-rtu/flow_out", "ps3-rtu/flow_in")
    assert np.abs(other).max() < 0.3  # the leak shows only on its own segment
    p4_before, p4_after = values(s, "ps4/pressure", 0, 55), values(s, "ps4/pressure", 200)
    assert p4_before.mean() - p4_after.mean() == pytest.approx(0.75, abs=0.05)  # 7.5 % of 10 kPa
    p3_drop = (
        values(s, "ps3-rtu/pressure", 0, 55).mean() - values(s, "ps3-rtu/pressure", 200).mean()
    )
    assert 0.3 < p3_drop < 0.45  # half the drop, upstream
    p2_drop = (
        values(s, "ps2-rtu/pressure", 0, 55).mean() - values(s, "ps2-rtu/pressure", 200).mean()
    )
    assert p2_drop < p3_drop


def test_regulator_leak_raises_flow_and_pulls_pressure(plant: Plant) -> None:
    s = simulate(plant, "leak", 600)
    before, after = values(s, "rs-lishan/flow", 0, 290), values(s, "rs-lishan/flow", 400)
    assert after.mean() > before.mean() * 1.1
    p_before, p_after = (
        values(s, "rs-lishan/outlet_pressure", 0, 290),
        values(s, "rs-lishan/outlet_pressure", 400),
    )
    assert p_after.mean() < p_before.mean() * 0.9


def test_bleed_drives_piston_top_co_past_red_and_the_piston_down(plant: Plant) -> None:
    s = simulate(plant, "bleed", 900)
    co = values(s, "gh1-plc/co_top")
    assert values(s, "gh1-plc/co_top", 0, 60).max() < 10
    assert co.max() > 160
    assert values(s, "gh1-plc/co_top", 870).max() < co.max() / 2  # decays after the bleed
    level = s["gh1-plc/level"]
    speed = values(s, "gh1-plc/piston_speed", 200, 600)
    assert speed.mean() == pytest.approx(-0.8, abs=0.1)
    # The PLC's speed is the level's rate times the stroke: 1 % of 55 m is 0.55 m.
    (t0, l0), (t1, l1) = (
        next(x for x in level if x[0] >= START + 300_000),
        next(x for x in level if x[0] >= START + 500_000),
    )
    assert l0 is not None
    assert l1 is not None
    rate = (l1 - l0) / ((t1 - t0) / 60_000) * 0.55
    assert rate == pytest.approx(speed.mean(), abs=0.05)
    pressure = values(s, "gh1-plc/pressure", 200, 600)
    assert pressure.mean() < values(s, "gh1-plc/pressure", 0, 60).mean()


def test_storm_raises_the_field_and_brings_flashes_close(plant: Plant) -> None:
    s = simulate(plant, "storm", 4300)
    field = values(s, "efm1/field")
    assert np.abs(values(s, "efm1/field", 0, 60)).max() < 0.3
    assert np.abs(field).max() > 8
    flashes = s["lls/nearest_km"]
    assert len(flashes) > 50
    first, last = [d for _, d in flashes[:10]], [d for t, d in flashes if t > START + 3_500_000]
    assert min(x for x in first if x is not None) > 25
    assert min(x for x in last if x is not None) < 5
    # A nearby flash reverses the field's polarity by more than 2 kV/m within a second.
    times = np.array([t for t, _ in s["efm1/field"]])
    f = np.array([v for _, v in s["efm1/field"]])
    reversals = 0
    for t, km in flashes:
        if km is None or km > 8:
            continue
        i = int(np.searchsorted(times, t))
        if 0 < i < len(f) and f[i - 1] < -2 and f[i] > 0 and f[i] - f[i - 1] > 2:
            reversals += 1
    assert reversals >= 3


def test_plume_sets_the_detector_outputs_and_status(plant: Plant) -> None:
    plan = parse_scenario(
        "name: p\nevents: [{kind: plume, at_s: 10, duration_s: 200, devices: [gh1-co-n], "
        "peak: 200, rise_s: 60}]"
    )
    sim = Simulation(plant, seed=0, start_ms=START, scenario=plan)
    s = series(sim.advance_to(START + 150_000))
    co, low, high = (s[f"gh1-co-n/{c}"] for c in ("co", "low_alarm", "high_alarm"))
    for (t, c), (_, lo), (_, hi) in zip(co, low, high, strict=True):
        assert c is not None
        assert lo == float(c >= 24), t
        assert hi == float(c >= 160), t
    assert co[-1][1] is not None
    assert co[-1][1] > 160
    status = sim.device_state("gh1-co-n").status
    assert status.high_alarm
    assert status.low_alarm
    assert status.alarm_level == 2
    assert status.state == 1
    assert sim.device_state("gh1-co-e").status.state == 0  # a neighbour sees nothing


def test_detector_response_takes_about_thirty_seconds(plant: Plant) -> None:
    plan = parse_scenario(
        "name: step\nevents: [{kind: plume, at_s: 100, devices: [vr2-co], peak: 100, "
        "rise_s: 0.001}]"
    )
    s = simulate(plant, plan, 300)
    t90 = next(t for t, v in s["vr2-co/co"] if v is not None and v >= 0.9 * 100 + 2)
    assert 20 <= (t90 - START) / 1000 - 100 <= 40
