"""Stale and offline timers: when a sensor's silence raises its stale tier, between the
readings of a batch (`stale_on_readings`) and on a tick (`stale_steps` for every sensor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.batch import BatchRows
from alerting.rules import CompiledRules, Rule
from alerting.segments import BoolArray, IntArray
from alerting.state import NEVER
from alerting.transitions import Transitions

Int8Array = npt.NDArray[np.int8]
PosArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class StaleSteps:
    """Up to two stale timers per gap, in time order, and the tier after each."""

    ts_a: IntArray
    ts_b: IntArray
    fire_a: BoolArray
    fire_b: BoolArray
    same: BoolArray
    tier_a: Int8Array
    tier_b: Int8Array


def stale_steps(
    rules: CompiledRules,
    pos: PosArray,
    *,
    life: IntArray,
    clock: IntArray,
    until: IntArray,
    tier0: Int8Array,
    inclusive: bool,
) -> StaleSteps:
    """Stale timers after `life` (the last sign of life) that fire after `clock` and before
    `until` (at or before, if `inclusive`); each raises the tier to at least its target."""
    after = rules.stale_after_us[pos]
    offline = rules.offline_after_us[pos]
    known = life != NEVER
    t1 = life + after
    t2 = life + offline
    on1 = known & (after > 0)
    on2 = known & (offline > 0)
    g1 = rules.stale_tier[pos]
    g2 = rules.offline_tier[pos]
    swap = on2 & (~on1 | (t2 < t1))
    ts_a, ts_b = np.where(swap, t2, t1), np.where(swap, t1, t2)
    on_a, on_b = np.where(swap, on2, on1), np.where(swap, on1, on2)
    g_a, g_b = np.where(swap, g2, g1), np.where(swap, g1, g2)

    def due(ts: IntArray, on: BoolArray) -> BoolArray:
        upper = ts <= until if inclusive else ts < until
        result: BoolArray = on & (ts > clock) & upper
        return result

    fire_a, fire_b = due(ts_a, on_a), due(ts_b, on_b)
    tier_a = np.where(fire_a, np.maximum(tier0, g_a), tier0).astype(np.int8)
    tier_b = np.where(fire_b, np.maximum(tier_a, g_b), tier_a).astype(np.int8)
    same = fire_a & fire_b & (ts_a == ts_b)
    return StaleSteps(ts_a, ts_b, fire_a, fire_b, same, tier_a, tier_b)


def stale_transitions(
    steps: StaleSteps, subject: PosArray, tier0: Int8Array
) -> tuple[list[IntArray], list[tuple[PosArray, IntArray, Int8Array, Int8Array]]]:
    """Transitions of the timer steps: (row index, subject, ts, from, to) lists."""
    a = steps.fire_a & ~steps.same & (steps.tier_a != tier0)
    from_b = np.where(steps.same, tier0, steps.tier_a).astype(np.int8)
    bb = steps.fire_b & (steps.tier_b != from_b)
    rows_a, rows_b = np.flatnonzero(a), np.flatnonzero(bb)
    return [rows_a, rows_b], [
        (subject[rows_a], steps.ts_a[rows_a], tier0[rows_a], steps.tier_a[rows_a]),
        (subject[rows_b], steps.ts_b[rows_b], from_b[rows_b], steps.tier_b[rows_b]),
    ]


def stale_on_readings(b: BatchRows) -> Transitions:
    rules = b.rules
    if not rules.stale_after_us[b.spos].any() or not len(b.a_t):
        return Transitions.empty()
    # Only a segment's first reading (carried tier and clock) and readings after a gap of at
    # least the sensor's shortest stale delay can see a stale timer fire before them.
    shortest = rules.stale_min_us[b.spos][b.a_seg]
    gap_ok = np.ones(len(b.a_t), dtype=np.bool_)
    gap_ok[1:] = (b.a_t[1:] - b.a_t[:-1]) >= shortest[1:]
    rows = np.flatnonzero((b.a_first | gap_ok) & (shortest > 0))
    if not len(rows):
        b.work.tier[b.has_acc, Rule.STALE] = 0
        return Transitions.empty()
    seg = b.a_seg[rows]
    pos = b.spos[seg]
    first = b.a_first[rows]
    previous_t = b.a_t[np.maximum(rows - 1, 0)]
    # (The max matters only for a start time given to an empty state, later than a reading.)
    life = np.maximum(np.where(first, b.life0[seg], previous_t), b.life0[seg])
    clock = np.where(first, b.before.eval_ts[seg], previous_t)
    tier0 = np.where(first, b.before.tier[seg, Rule.STALE], 0).astype(np.int8)
    t = b.a_t[rows]
    steps = stale_steps(rules, pos, life=life, clock=clock, until=t, tier0=tier0,
                         inclusive=False)  # fmt: skip
    _, parts = stale_transitions(steps, seg.astype(np.int32), tier0)
    out = []
    for g, ts, frm, to in parts:
        value = b.value_at(g.astype(np.int64), ts)
        out.append(Transitions.build(Rule.STALE, b.spos[g], ts, tiers=(frm, to), value=value))
    # The reading itself: stale back to 0.
    tier_before = steps.tier_b
    cleared = tier_before != 0
    value = b.a_v[rows][cleared]
    out.append(Transitions.build(Rule.STALE, pos[cleared], t[cleared],
                                 tiers=(tier_before[cleared], 0), value=value))  # fmt: skip
    b.work.tier[b.has_acc, Rule.STALE] = 0
    return Transitions.concat(out)
