"""New rules for a running engine (alerting.reload): the state carried over by sensor id, and
the tier changes the new rules decide at once."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from alerting import engine
from alerting.reload import carry_state, reconcile
from alerting.rules import (
    CompiledRules,
    RateParams,
    Rule,
    SensorRules,
    VoteSpec,
    compile_rules,
)
from alerting.state import EngineState
from hazwatch.domain import ReadingBatch

S = 1_000_000
T0 = 1_790_000_000 * S
CO = SensorRules(
    1, high=(24.0, 40.0, 80.0, 160.0), deadband=2.0, on_delay_us=(10 * S, 10 * S, 10 * S, 0),
    off_delay_us=300 * S, rate=RateParams(60 * S, 10.0, None, 2),
)  # fmt: skip


def _run(rules: CompiledRules, rows: list[tuple[int, float, float]]) -> EngineState:
    state = EngineState.empty(rules.n, rules.history_len)
    batch = ReadingBatch.from_columns(
        [r[0] for r in rows], [T0 + round(r[1] * S) for r in rows], [r[2] for r in rows],
        [0] * len(rows),
    )  # fmt: skip
    return state.updated(engine.evaluate(rules, state, batch).delta)


def _moves(rules: CompiledRules, old_rules: CompiledRules, old: EngineState) -> list[object]:
    carried = carry_state(old_rules, old, rules, never_seen_since_us=None)
    settled = reconcile(old_rules, old, rules, carried, at_us=T0 + 100 * S)
    return [
        (t.rule.label, t.subject, (t.ts_us - T0) / S, t.from_tier, t.to_tier)
        for t in settled.transitions.to_list()
    ]


def test_carry_moves_rows_by_sensor_id_and_keeps_the_newest_history() -> None:
    old_rules = compile_rules([CO, replace(CO, sensor_id=2)], history_len=8)
    old = _run(old_rules, [(1, t, 45.0) for t in range(0, 30, 5)] + [(2, 0, 5.0)])
    # New order, a new sensor in front, a shorter history.
    new_rules = compile_rules(
        [SensorRules(3), replace(CO, sensor_id=2), CO], history_len=4
    )  # fmt: skip
    carried = carry_state(old_rules, old, new_rules, never_seen_since_us=T0)
    rows = carried.rows
    assert rows.tier[2, Rule.HIGH] == 2  # sensor 1: yellow after its on-delay
    assert rows.raw[2].tolist() == old.rows.raw[0].tolist()
    assert rows.last_ts[0] == T0  # the new sensor's stale timers start at the reload
    assert rows.hist_n[2] == 4
    assert ((rows.hist_t[2] - T0) // S).tolist() == [10, 15, 20, 25]
    assert rows.hist_v[1, -1] == 5.0


def test_a_level_switched_off_drops_its_latches_and_the_tier_follows() -> None:
    rules = compile_rules([CO])
    old = _run(rules, [(1, t, 45.0) for t in range(0, 30, 5)])
    assert old.rows.tier[0, Rule.HIGH] == 2
    no_yellow = compile_rules([replace(CO, high=(24.0, None, 80.0, 160.0))])
    assert _moves(no_yellow, rules, old) == [("high", 0, 100.0, 2, 1)]
    carried = carry_state(rules, old, no_yellow, never_seen_since_us=None)
    settled = reconcile(rules, old, no_yellow, carried, at_us=T0 + 100 * S)
    assert settled.delta.rows.delayed[0].tolist()[:4] == [True, False, False, False]
    assert settled.delta.persist.tolist() == [True]


def test_a_new_limit_keeps_the_latch_until_a_reading_meets_it() -> None:
    rules = compile_rules([CO])
    old = _run(rules, [(1, t, 45.0) for t in range(0, 30, 5)])
    higher = compile_rules([replace(CO, high=(24.0, 50.0, 80.0, 160.0))])
    assert _moves(higher, rules, old) == []
    carried = carry_state(rules, old, higher, never_seen_since_us=None)
    state = carried.updated(reconcile(rules, old, higher, carried, at_us=T0).delta)
    # 45 is below 50 - 2: the yellow latch resets, released after the 300 s off-delay.
    batch = ReadingBatch.from_columns([1, 1], [T0 + 30 * S, T0 + 400 * S], [45.0, 45.0], [0, 0])
    step = engine.evaluate(higher, state, batch)
    moves = [((t.ts_us - T0) / S, t.from_tier, t.to_tier) for t in step.transitions.to_list()]
    assert moves == [(330.0, 2, 1)]


def test_rules_switched_off_clear_their_tiers() -> None:
    rules = compile_rules([CO])
    # A rise of 40 ppm within 30 s: rate at yellow (2); high at yellow too.
    old = _run(rules, [(1, 0, 5.0), (1, 30, 45.0), (1, 40, 45.0)])
    assert old.rows.tier[0, Rule.RATE] == 2
    off = compile_rules([SensorRules(1)])  # `enabled: false`
    assert _moves(off, rules, old) == [("high", 0, 100.0, 2, 0), ("rate", 0, 100.0, 2, 0)]
    retiered = compile_rules([replace(CO, rate=RateParams(60 * S, 10.0, None, 3))])
    assert _moves(retiered, rules, old) == [("rate", 0, 100.0, 2, 3)]


def test_a_vote_with_a_new_k_moves_at_once_and_a_removed_sensor_clears() -> None:
    sensors = [replace(CO, sensor_id=i) for i in (1, 2, 3)]
    vote = VoteSpec("ring", 7, (0, 1, 2), k=2, at=2)
    rules = compile_rules(sensors, votes=[vote])
    old = _run(rules, [(1, t, 45.0) for t in range(0, 30, 5)])
    one_of_three = compile_rules(sensors, votes=[replace(vote, k=1)])
    assert _moves(one_of_three, rules, old) == [("vote", 0, 100.0, 0, 3)]
    # Sensor 1 leaves the registry: its tiers are dropped (they clear, by its old position).
    fewer = compile_rules(sensors[1:])
    carried = carry_state(rules, old, fewer, never_seen_since_us=None)
    settled = reconcile(rules, old, fewer, carried, at_us=T0)
    assert (Rule.HIGH, 0, 2) in settled.dropped
    assert not math.isnan(float(old.rows.last_valid[0]))


def test_unchanged_rules_change_nothing() -> None:
    rules = compile_rules([CO, replace(CO, sensor_id=2)])
    old = _run(rules, [(1, t, 200.0) for t in range(0, 30, 5)])
    carried = carry_state(rules, old, rules, never_seen_since_us=None)
    settled = reconcile(rules, old, rules, carried, at_us=T0)
    assert len(settled.transitions) == 0
    assert len(settled.delta) == 0
    for name, array in carried.rows.arrays().items():
        assert np.array_equal(array, getattr(old.rows, name), equal_nan=True), name
