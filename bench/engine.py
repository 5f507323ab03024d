"""Alarm engine throughput: 1M readings over 10k sensors with every rule kind on.

The feed is a seeded, time-ordered stream (every sensor reports once a second, as a busy
deployment would deliver it) of a mixed city: CO and combustible-gas detectors (thresholds,
deadband, delays, red at once, rate, trend, stale, quality), pipeline pressures (high and low
sides), holder levels with a derived piston speed, flow pairs with a derived imbalance,
electric-field mills (magnitude), lightning distance (an event stream with a hold), and votes
over detector rings. About 3 % of sensors cross thresholds during the run, 0.2 % of readings
are bad, 0.1 % flagged. The engine is fed in batches of `--batch` rows; the reference
(`alerting.reference`) runs on a 50k-reading slice of the same stream in the same process.

The machine's own limit is measured in the same run: a bare 4-tier threshold comparison over
the same readings (ENVIRONMENT.md quotes about 17 ms per 1M here).

Last line: {"readings_per_s", "reference_per_s", "speedup", "p99_batch_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from alerting import engine
from alerting.reference import Reference
from alerting.rules import (
    CompiledRules,
    DeriveRule,
    SensorRules,
    VoteSpec,
    compile_rules,
    sensor_rules,
)
from alerting.state import EngineState
from hazwatch.catalog import kind_spec
from hazwatch.domain import US_PER_S, ReadingBatch

T0 = 1_790_000_000 * US_PER_S

# (kind, params, share of sensors, normal value, noise)
MIX = [
    ("co", {}, 0.30, 5.0, 1.0),
    ("combustible_gas", {}, 0.15, 2.0, 0.5),
    ("pipeline_pressure", {"setpoint_mpa": 0.3, "mop_mpa": 0.4, "min_supply_mpa": 0.2}, 0.15, 0.3, 0.004),
    ("holder_level", {}, 0.05, 50.0, 0.2),
    ("flow", {}, 0.10, 1000.0, 5.0),
    ("electric_field", {}, 0.10, 0.2, 0.1),
    ("piston_tilt", {"design_allowable_mm": 100.0}, 0.05, 20.0, 1.0),
    ("lightning_distance", {}, 0.05, 80.0, 10.0),
]  # fmt: skip


def build_city(
    n_sensors: int, seed: int
) -> tuple[CompiledRules, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rules for n sensors and, per measured sensor, its normal value, noise, whether it
    crosses its limits during the run, and its period."""
    rng = np.random.default_rng(seed)
    sensors: list[SensorRules] = []
    normal, noise, kinds, periods = [], [], [], []
    for kind, params, share, base, sd in MIX:
        spec = kind_spec(kind)
        rules = spec.default_rules(params)
        for _ in range(int(round(share * n_sensors))):
            sid = len(sensors) + 1
            sensors.append(sensor_rules(sid, rules, spec.period_s))
            normal.append(base)
            noise.append(sd)
            kinds.append(kind)
            periods.append(spec.period_s or 30.0)  # lightning: a flash report every 30 s
    measured = len(sensors)
    derives: list[DeriveRule] = []
    kind_arr = np.array(kinds)
    # Piston speed from each holder level; imbalance of consecutive flow pairs.
    speed_rules = kind_spec("piston_speed").default_rules({"design_max_m_per_min": 1.5})
    for i in np.flatnonzero(kind_arr == "holder_level"):
        derives.append(
            DeriveRule(len(sensors), "rate", (int(i),), scale=0.6, window_us=30 * US_PER_S)
        )
        sensors.append(sensor_rules(len(sensors) + 1, speed_rules, periods[int(i)]))
    balance_rules = kind_spec("flow_balance").default_rules({})
    flows = np.flatnonzero(kind_arr == "flow")
    for a, b in zip(flows[0::2], flows[1::2], strict=False):
        derives.append(DeriveRule(len(sensors), "imbalance", (int(a), int(b))))
        sensors.append(sensor_rules(len(sensors) + 1, balance_rules, 10.0))
    votes = []
    co = np.flatnonzero(kind_arr == "co")
    for v, start in enumerate(range(0, len(co) - 2, 3)):
        votes.append(VoteSpec(f"ring{v}", 1, tuple(int(x) for x in co[start : start + 3]), 2, 2))
    rules = compile_rules(sensors, derives=derives, votes=votes)
    crossing = rng.random(measured) < 0.03
    return rules, np.array(normal), np.array(noise), crossing, np.array(periods)


def feed(
    rules: CompiledRules,
    normal: np.ndarray,
    noise: np.ndarray,
    crossing: np.ndarray,
    periods: np.ndarray,
    n_readings: int,
    seed: int,
) -> ReadingBatch:
    """Time-ordered readings: every measured sensor at its own period, from a random phase."""
    rng = np.random.default_rng(seed + 1)
    measured = len(normal)
    duration_s = n_readings / float(np.sum(1.0 / periods))
    counts = np.floor(duration_s / periods).astype(np.int64) + 1
    idx = np.repeat(np.arange(measured), counts)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    phase = rng.random(measured) * periods
    t_s = phase[idx] + k * periods[idx]
    order = np.argsort(t_s, kind="stable")[:n_readings]
    idx, t_s = idx[order], t_s[order]
    value = normal[idx] + rng.normal(0, 1, len(idx)) * noise[idx]
    # Crossing sensors ramp up past their red limit and back over the run.
    ramp = crossing[idx] * np.sin(np.pi * t_s / duration_s)
    red = np.nan_to_num(rules.limit[3][idx], nan=0.0)
    value = value + ramp * np.where(red > 0, (red - normal[idx]) * 1.2, 0.0)
    quality = np.zeros(len(idx), dtype=np.int16)
    roll = rng.random(len(idx))
    quality[roll < 0.002] = 66
    value[roll < 0.002] = np.nan
    quality[(roll >= 0.002) & (roll < 0.003)] = 17
    ts = T0 + np.round(t_s * US_PER_S).astype(np.int64)
    return ReadingBatch.from_columns(rules.sensor_id[idx], ts, value, quality)


def run_engine(
    rules: CompiledRules, batch: ReadingBatch, batch_rows: int
) -> tuple[float, list[float], int]:
    state = EngineState.empty(rules.n, rules.history_len, last_ts_us=T0)
    times = []
    transitions = 0
    total = 0.0
    for start in range(0, len(batch), batch_rows):
        part = batch.take(np.arange(start, min(start + batch_rows, len(batch))))
        t = time.perf_counter()
        step = engine.evaluate(rules, state, part)
        state.apply(step.delta)
        elapsed = time.perf_counter() - t
        times.append(elapsed)
        total += elapsed
        transitions += len(step.transitions)
    return total, times, transitions


def threshold_limit(rules: CompiledRules, batch: ReadingBatch) -> float:
    """The bare 4-tier check over the batch: readings per second, best of 3."""
    pos = rules.positions(batch.sensor_id)
    limits = rules.limit[:4]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        tier = np.zeros(len(pos), dtype=np.int8)
        x = batch.value
        for level in range(4):
            tier[x >= limits[level][pos]] = level + 1
        best = min(best, time.perf_counter() - t)
    return len(pos) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per engine batch")
    parser.add_argument("--reference-readings", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rules, normal, noise, crossing, periods = build_city(args.sensors, args.seed)
    batch = feed(rules, normal, noise, crossing, periods, args.readings, args.seed)
    run_engine(rules, batch.take(np.arange(min(len(batch), args.batch))), args.batch)  # warm up
    total, times, transitions = run_engine(rules, batch, args.batch)
    engine_rate = len(batch) / total

    # The reference on a slice: the first readings of the same stream (all sensors).
    slice_ = batch.take(np.arange(min(args.reference_readings, len(batch))))
    reference = Reference(rules, last_ts_us=T0)
    t = time.perf_counter()
    ref_transitions = 0
    for start in range(0, len(slice_), 10_000):
        part = slice_.take(np.arange(start, min(start + 10_000, len(slice_))))
        ref_transitions += len(reference.evaluate(part))
    reference_rate = len(slice_) / (time.perf_counter() - t)
    limit = threshold_limit(rules, batch)
    print(
        f"engine: {len(batch):,} readings in {total:.2f} s, {transitions} transitions, "
        f"batches of {args.batch:,}; reference: {reference_rate:,.0f}/s on {len(slice_):,}"
    )
    print(json.dumps({
        "readings_per_s": round(engine_rate),
        "reference_per_s": round(reference_rate),
        "speedup": round(engine_rate / reference_rate, 1),
        "p99_batch_ms": round(float(np.percentile(times, 99)) * 1e3, 1),
        "batch_rows": args.batch,
        "sensors": rules.n,
        "transitions": transitions,
        "threshold_only_per_s": round(limit),
        "fraction_of_threshold_only": round(engine_rate / limit, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
