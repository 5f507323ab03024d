"""Property: the vectorised engine and the scalar reference produce the same transitions.

Random rule sets (every rule kind, derived signals, votes, small histories) and random streams
(batches in any order, duplicates, late readings, gaps, bad and flagged quality, NaN, unknown
sensors, ticks in between). Values sit on a grid of halves and times on whole seconds, so
threshold ties happen often and least-squares sums are exact in both implementations (they add
in a different order; see docs/alarms.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
from alerting.state import EngineState, Rows, StateDelta
from alerting.transitions import Transition, transition_order
from hazwatch.domain import ReadingBatch

S = 1_000_000
T0 = 1_700_000_000 * S


@dataclass(frozen=True)
class Grid:
    """Where random cases are drawn from. `WIDE` spreads values and times out (every rule kind
    gets room to work); `DENSE` crowds them onto a few values and seconds, so limits equal each
    other and 0.0, deadbands span several tiers, readings share timestamps and timers fall due
    exactly at readings and ticks."""

    values: st.SearchStrategy[float]
    deadbands: tuple[float, ...]
    delays_s: tuple[int, ...]
    holds_s: tuple[int, ...]
    rate_windows_s: tuple[int, ...]
    trend_windows_s: tuple[int, ...]
    stale_s: tuple[int, ...]
    offline_s: tuple[int, ...]
    ts_spread_s: tuple[int, int]  # reading time relative to the stream's clock
    clock_step_s: int
    batch_size: int


WIDE = Grid(
    values=st.integers(-20, 120).map(lambda k: k / 2),
    deadbands=(0.0, 0.5, 2.0, 5.0),
    delays_s=(0, 0, 1, 3, 5, 10, 30),
    holds_s=(0, 0, 0, 5, 12),
    rate_windows_s=(3, 10, 30),
    trend_windows_s=(5, 20, 60),
    stale_s=(4, 9, 15),
    offline_s=(4, 9, 40),
    ts_spread_s=(-15, 20),
    clock_step_s=25,
    batch_size=25,
)
DENSE = Grid(
    values=st.integers(-4, 4).map(lambda k: k / 2),
    deadbands=(0.0, 0.5, 1.0, 3.0),
    delays_s=(0, 0, 1, 2, 3),
    holds_s=(0, 0, 1, 2, 3),
    rate_windows_s=(1, 2, 4),
    trend_windows_s=(2, 4, 6),
    stale_s=(1, 2, 3),
    offline_s=(1, 2, 3, 5),
    ts_spread_s=(-3, 4),
    clock_step_s=4,
    batch_size=15,
)


@st.composite
def limits(draw: st.DrawFn, grid: Grid, *, rising: bool) -> tuple[float | None, ...]:
    chosen = sorted(draw(st.lists(grid.values, min_size=4, max_size=4)), reverse=not rising)
    keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    return tuple(v if k else None for v, k in zip(chosen, keep, strict=True))


@st.composite
def sensor(draw: st.DrawFn, grid: Grid, sensor_id: int, *, derived: bool = False) -> SensorRules:
    hold = draw(st.sampled_from(grid.holds_s)) * S
    delays = st.sampled_from(grid.delays_s)
    on = 0 if hold else draw(delays) * S
    off = 0 if hold else draw(delays) * S
    red_on = 0 if draw(st.booleans()) else on
    high = draw(limits(grid, rising=True)) if draw(st.booleans()) else (None,) * 4
    low = draw(limits(grid, rising=False)) if draw(st.booleans()) else (None,) * 4
    rate = None
    if draw(st.booleans()):
        rate = RateParams(
            window_us=draw(st.sampled_from(grid.rate_windows_s)) * S,
            rise_per_min=draw(st.none() | st.sampled_from([10.0, 60.0, 150.0])),
            fall_per_min=draw(st.none() | st.sampled_from([10.0, 60.0])),
            tier=draw(st.integers(1, 4)),
        )
    trend = None
    if not derived and draw(st.booleans()):
        trend = TrendParams(
            window_us=draw(st.sampled_from(grid.trend_windows_s)) * S,
            horizon_s=float(draw(st.sampled_from([5, 30, 120]))),
            min_points=draw(st.integers(2, 5)),
        )
    stale = None
    if draw(st.booleans()):
        offline = draw(st.none() | st.sampled_from(grid.offline_s))
        stale = StaleParams(
            after_us=draw(st.sampled_from(grid.stale_s)) * S,
            tier=draw(st.integers(1, 4)),
            offline_after_us=None if offline is None else offline * S,
            offline_tier=draw(st.integers(1, 4)),
        )
    return SensorRules(
        sensor_id=sensor_id,
        high=high,  # type: ignore[arg-type]
        low=low,  # type: ignore[arg-type]
        magnitude=draw(st.booleans()),
        deadband=draw(st.sampled_from(grid.deadbands)),
        on_delay_us=(on, on, on, red_on),
        off_delay_us=off,
        hold_us=hold,
        rate=rate,
        trend=trend,
        stale=stale,
        quality_tier=draw(st.integers(0, 4)),
    )


@st.composite
def rule_sets(draw: st.DrawFn, grid: Grid = WIDE) -> CompiledRules:
    n_measured = draw(st.integers(1, 4))
    sensors = [draw(sensor(grid, 10 + i)) for i in range(n_measured)]
    derives = []
    if draw(st.booleans()):
        derives.append(DeriveRule(len(sensors), "rate", (0,), scale=0.5,
                                  window_us=draw(st.sampled_from([2, 10])) * S))  # fmt: skip
        sensors.append(draw(sensor(grid, 50, derived=True)))
    if n_measured >= 2 and draw(st.booleans()):
        derives.append(DeriveRule(len(sensors), "imbalance", (0, 1)))
        sensors.append(draw(sensor(grid, 60, derived=True)))
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
def streams(draw: st.DrawFn, ids: list[int], grid: Grid = WIDE) -> list[Op]:
    ops = []
    clock = 0
    low, high = grid.ts_spread_s
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 3)) == 0:
            clock += draw(st.integers(0, 40))
            ops.append(Op(None, T0 + clock * S))
            continue
        size = draw(st.integers(0, grid.batch_size))
        rows = []
        for _ in range(size):
            sid = draw(st.sampled_from([*ids, 999]))
            ts = clock + draw(st.integers(low, high))
            quality = draw(st.sampled_from([0, 0, 0, 0, 0, 16, 17, 64, 66]))
            value = draw(grid.values) if draw(st.integers(0, 12)) else math.nan
            rows.append((sid, T0 + ts * S, value, quality))
        if rows and draw(st.booleans()):
            rows += draw(st.lists(st.sampled_from(rows), max_size=4))  # duplicates
        clock += draw(st.integers(0, grid.clock_step_s))
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


def run_case(rules: CompiledRules, ops: list[Op], start: int | None) -> None:
    """Feed the same stream to the engine and the reference; every step must agree."""
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


def draw_and_run(data: st.DataObject, grid: Grid) -> None:
    rules = data.draw(rule_sets(grid))
    ops = data.draw(streams([s.sensor_id for s in rules.sensors], grid))
    start = T0 - 5 * S if data.draw(st.booleans()) else None
    run_case(rules, ops, start)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_equals_reference(data: st.DataObject) -> None:
    draw_and_run(data, WIDE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_equals_reference_dense(data: st.DataObject) -> None:
    draw_and_run(data, DENSE)


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


def _batch(rows: list[tuple[int, float, float]], quality: int = 0) -> ReadingBatch:
    """(sensor id, t in s, value) rows."""
    return ReadingBatch.from_columns(
        [r[0] for r in rows], [T0 + round(r[1] * S) for r in rows], [r[2] for r in rows],
        [quality] * len(rows),
    )  # fmt: skip


def _moves(rules: CompiledRules, ops: list[Op]) -> list[tuple[str, int, float, int, int]]:
    """(rule, sensor id, t in s, from, to) of the engine's transitions; the reference must
    agree."""
    run_case(rules, ops, None)
    state = EngineState.empty(rules.n, rules.history_len)
    out = []
    for op in ops:
        if op.batch is None:
            assert op.now_us is not None
            step = engine.tick(rules, state, op.now_us)
        else:
            step = engine.evaluate(rules, state, op.batch, op.now_us)
        out += [(t.rule.label, int(rules.sensor_id[t.subject]), (t.ts_us - T0) / S,
                 t.from_tier, t.to_tier) for t in step.transitions.to_list()]  # fmt: skip
        state = state.updated(step.delta)
    return out


def test_a_late_duplicate_is_remembered_once_with_its_first_value() -> None:
    """Regression (found by the property test on an earlier engine, in the API branch's
    example database): readings sharing a timestamp with an accepted one are late; the first
    of them joins the history, the others are the same reading again. The engine once kept
    the last (2.5) and saw a fall of 10/min at t=15 that the reference did not."""
    rules = compile_rules(
        [SensorRules(10, hold_us=5 * S, rate=RateParams(30 * S, None, 10.0, 1)),
         SensorRules(11)],
        history_len=2,
    )  # fmt: skip
    nan = math.nan
    rows = [(10, 0, nan)] * 4 + [(10, 0, 0.0), (10, 0, 2.5), (10, 15, 0.0)]
    assert _moves(rules, [Op(_batch(rows), T0)]) == []


def test_trend_ignores_a_second_value_at_a_remembered_time() -> None:
    """The same rule for the trend: the duplicate at t=0 (value 10) would make a falling
    slope reach the low limit within the horizon; the remembered 0 makes it flat."""
    rules = compile_rules(
        [SensorRules(1, low=(-5.0, None, None, None),
                     trend=TrendParams(window_us=10 * S, horizon_s=5.0, min_points=2))]
    )  # fmt: skip
    ops = [Op(_batch([(1, 0, 0.0), (1, 0, 10.0), (1, 5, 0.0)]), None)]
    assert _moves(rules, ops) == []
    # Without the duplicate's value winning, a real fall still predicts the tier.
    ops = [Op(_batch([(1, 0, 10.0), (1, 5, 0.0)]), None)]
    assert _moves(rules, ops) == [("trend", 1, 5.0, 0, 1)]


def test_low_limits_at_zero_on_a_magnitude_with_a_wide_deadband() -> None:
    """Low limits at exactly 0.0 (orange equal to red), magnitude, a deadband wider than the
    gaps between limits: -0.0 and 0.0 both set every level; red fires at once, the others'
    on-delays end under it; a magnitude past 0 + deadband resets orange and red (and yellow,
    0.5 + 2 < 2.6) but not blue (1 + 2 > 2.6)."""
    rules = compile_rules(
        [SensorRules(1, low=(1.0, 0.5, 0.0, 0.0), magnitude=True, deadband=2.0,
                     on_delay_us=(3 * S, 3 * S, 3 * S, 0))]
    )  # fmt: skip
    rows = [(1, 0, 0.0), (1, 5, -0.0), (1, 6, 1.5), (1, 7, -2.6), (1, 8, 3.5)]
    assert _moves(rules, [Op(_batch(rows), None)]) == [
        ("low", 1, 0.0, 0, 4),
        ("low", 1, 7.0, 4, 1),
        ("low", 1, 8.0, 1, 0),
    ]


def test_a_tick_after_derived_readings_keeps_each_sensors_row() -> None:
    """Regression (property test, WIDE seed 41): a batch carrying a reading of the derived
    imbalance sensor (low red 0.0, on-delay 1 s) and a derived rate, with `now`. The derived
    pass leaves the batch's delta out of position order; the tick's delta, chained after it,
    looked rows up as if it were sorted and gave the derived rate (50) the row of 60: its own
    red, due at t=2, never came (with other positions: an IndexError)."""
    red_at_zero = SensorRules(0, low=(None, None, None, 0.0), on_delay_us=(S, S, S, S))
    rules = compile_rules(
        [SensorRules(10), SensorRules(11), replace(red_at_zero, sensor_id=50),
         replace(red_at_zero, sensor_id=60)],
        derives=[DeriveRule(2, "rate", (0,), scale=0.5, window_us=2 * S),
                 DeriveRule(3, "imbalance", (0, 1))],
        history_len=2,
    )  # fmt: skip
    nan = math.nan
    rows = [(10, 0, nan), (10, 0, 0.0), (10, 1, 0.0), (11, 0, nan), (60, 0, 0.0)]
    ops = [Op(_batch(rows), T0 + S), Op(None, T0 + 2 * S)]
    assert _moves(rules, ops) == [("low", 60, 1.0, 0, 4), ("low", 50, 2.0, 0, 4)]


def test_chained_deltas_out_of_order_keep_their_rows() -> None:
    def delta(index: list[int], tag: float) -> StateDelta:
        rows = Rows.blank(len(index), 2)
        rows.last_valid[:] = [tag + i for i in index]
        persist = np.array([i % 2 == 0 for i in index])
        return StateDelta(np.array(index, dtype=np.intp), rows, persist)

    first = delta([0, 1, 5], 0.0).then(delta([4], 0.0))  # disjoint: index [0, 1, 5, 4]
    chained = first.then(delta([5, 2], 100.0))
    got = dict(zip(chained.index.tolist(), chained.rows.last_valid.tolist(), strict=True))
    assert got == {0: 0.0, 1: 1.0, 2: 102.0, 4: 4.0, 5: 105.0}
    persisted = dict(zip(chained.index.tolist(), chained.persist.tolist(), strict=True))
    assert persisted == {0: True, 1: False, 2: True, 4: True, 5: False}
