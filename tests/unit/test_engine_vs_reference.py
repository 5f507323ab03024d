"""Property: the vectorised engine and the scalar reference produce the same transitions.

Random rule sets (every rule kind, derived signals, votes, small histories) and random streams
(batches in any order, duplicates, late readings, gaps, bad and flagged quality, NaN, unknown
sensors, ticks in between). Values sit on a grid of halves and times on whole seconds, so
threshold ties happen often and least-squares sums are exact in both implementations (they add
in a different order; see docs/alarms.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting import engine
from alerting.reference import Reference
from alerting.rules import (
    CompiledRules,
    DeriveRule,
    RateParams,
    SensorRules,
    StaleParams,
    TrendParams,
    VoteSpec,
    compile_rules,
)
from alerting.state import EngineState
from alerting.transitions import Transition, transition_order
from hazwatch.domain import ReadingBatch

S = 1_000_000
T0 = 1_700_000_000 * S
values = st.integers(-20, 120).map(lambda k: k / 2)


@st.composite
def limits(draw: st.DrawFn, *, rising: bool) -> tuple[float | None, ...]:
    chosen = sorted(draw(st.lists(values, min_size=4, max_size=4)), reverse=not rising)
    keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    return tuple(v if k else None for v, k in zip(chosen, keep, strict=True))


@st.composite
def sensor(draw: st.DrawFn, sensor_id: int, *, derived: bool = False) -> SensorRules:
    hold = draw(st.sampled_from([0, 0, 0, 5, 12])) * S
    delays = st.sampled_from([0, 0, 1, 3, 5, 10, 30])
    on = 0 if hold else draw(delays) * S
    off = 0 if hold else draw(delays) * S
    red_on = 0 if draw(st.booleans()) else on
    high = draw(limits(rising=True)) if draw(st.booleans()) else (None,) * 4
    low = draw(limits(rising=False)) if draw(st.booleans()) else (None,) * 4
    rate = None
    if draw(st.booleans()):
        rate = RateParams(
            window_us=draw(st.sampled_from([3, 10, 30])) * S,
            rise_per_min=draw(st.none() | st.sampled_from([10.0, 60.0, 150.0])),
            fall_per_min=draw(st.none() | st.sampled_from([10.0, 60.0])),
            tier=draw(st.integers(1, 4)),
        )
    trend = None
    if not derived and draw(st.booleans()):
        trend = TrendParams(
            window_us=draw(st.sampled_from([5, 20, 60])) * S,
            horizon_s=float(draw(st.sampled_from([5, 30, 120]))),
            min_points=draw(st.integers(2, 5)),
        )
    stale = None
    if draw(st.booleans()):
        offline = draw(st.none() | st.sampled_from([4, 9, 40]))
        stale = StaleParams(
            after_us=draw(st.sampled_from([4, 9, 15])) * S,
            tier=draw(st.integers(1, 4)),
            offline_after_us=None if offline is None else offline * S,
            offline_tier=draw(st.integers(1, 4)),
        )
    return SensorRules(
        sensor_id=sensor_id,
        high=high,  # type: ignore[arg-type]
        low=low,  # type: ignore[arg-type]
        magnitude=draw(st.booleans()),
        deadband=draw(st.sampled_from([0.0, 0.5, 2.0, 5.0])),
        on_delay_us=(on, on, on, red_on),
        off_delay_us=off,
        hold_us=hold,
        rate=rate,
        trend=trend,
        stale=stale,
        quality_tier=draw(st.integers(0, 4)),
    )


@st.composite
def rule_sets(draw: st.DrawFn) -> CompiledRules:
    n_measured = draw(st.integers(1, 4))
    sensors = [draw(sensor(10 + i)) for i in range(n_measured)]
    derives = []
    if draw(st.booleans()):
        derives.append(DeriveRule(len(sensors), "rate", (0,), scale=0.5,
                                  window_us=draw(st.sampled_from([2, 10])) * S))  # fmt: skip
        sensors.append(draw(sensor(50, derived=True)))
    if n_measured >= 2 and draw(st.booleans()):
        derives.append(DeriveRule(len(sensors), "imbalance", (0, 1)))
        sensors.append(draw(sensor(60, derived=True)))
    votes = []
    if n_measured >= 2 and draw(st.booleans()):
        members = tuple(range(min(n_measured, draw(st.integers(2, 3)))))
        votes.append(VoteSpec("v", 1, members, k=2, at=draw(st.integers(1, 3))))
    return compile_rules(sensors, derives=derives, votes=votes, history_len=draw(st.integers(2, 8)))


@dataclass(frozen=True)
class Op:
    batch: ReadingBatch | None
    now_us: int | None


@st.composite
def streams(draw: st.DrawFn, ids: list[int]) -> list[Op]:
    ops = []
    clock = 0
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 3)) == 0:
            clock += draw(st.integers(0, 40))
            ops.append(Op(None, T0 + clock * S))
            continue
        size = draw(st.integers(0, 25))
        rows = []
        for _ in range(size):
            sid = draw(st.sampled_from([*ids, 999]))
            ts = clock + draw(st.integers(-15, 20))
            quality = draw(st.sampled_from([0, 0, 0, 0, 0, 16, 17, 64, 66]))
            value = draw(values) if draw(st.integers(0, 12)) else math.nan
            rows.append((sid, T0 + ts * S, value, quality))
        if rows and draw(st.booleans()):
            rows += draw(st.lists(st.sampled_from(rows), max_size=4))  # duplicates
        clock += draw(st.integers(0, 25))
        now = T0 + clock * S if draw(st.integers(0, 3)) == 0 else None
        batch = (
            ReadingBatch.from_columns(*zip(*rows, strict=True)) if rows else ReadingBatch.empty()
        )
        ops.append(Op(batch, now))
    return ops


def canonical(transitions: list[Transition]) -> list[tuple[object, ...]]:
    return [
        (*t[:5], "nan" if math.isnan(t.value) else t.value, t.predicted)
        for t in sorted(transitions, key=transition_order)
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_equals_reference(data: st.DataObject) -> None:
    rules = data.draw(rule_sets())
    ops = data.draw(streams([s.sensor_id for s in rules.sensors]))
    start = T0 - 5 * S if data.draw(st.booleans()) else None
    reference = Reference(rules, last_ts_us=start)
    state = EngineState.empty(rules.n, rules.history_len, last_ts_us=start)
    for i, op in enumerate(ops):
        if op.batch is None:
            assert op.now_us is not None
            expected = reference.tick(op.now_us)
            step = engine.tick(rules, state, op.now_us)
        else:
            expected = reference.evaluate(op.batch, op.now_us)
            step = engine.evaluate(rules, state, op.batch, op.now_us)
        got = canonical(step.transitions.to_list())
        assert got == canonical(expected), (
            f"op {i}\nengine:    {got}\nreference: {canonical(expected)}\n"
            f"case: {(rules.sensors, rules.derives, rules.votes, rules.history_len, start, ops)!r}"
        )
        state = state.updated(step.delta)


def test_a_known_timeline_matches() -> None:
    """A fixed case worth keeping: red immediate, then orange after its delay."""
    rules = compile_rules(
        [SensorRules(1, high=(24.0, 40.0, 80.0, 160.0), deadband=2.0,
                     on_delay_us=(10 * S, 10 * S, 10 * S, 0), off_delay_us=30 * S)]
    )  # fmt: skip
    ts = np.arange(12) * 5 * S + T0
    vals = [5, 30, 30, 30, 170, 170, 90, 90, 90, 5, 5, 5]
    batch = ReadingBatch.from_columns([1] * 12, ts, vals, [0] * 12)
    step = engine.evaluate(rules, EngineState.empty(1, rules.history_len), batch)
    got = [(t.ts_us - T0, t.from_tier, t.to_tier) for t in step.transitions.to_list()]
    assert got == [(15 * S, 0, 1), (20 * S, 1, 4)]
    expected = Reference(rules).evaluate(batch)
    assert canonical(step.transitions.to_list()) == canonical(expected)
