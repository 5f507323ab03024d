"""The alarm engine: readings and state in, tier transitions and a state delta out. Pure numpy.

`evaluate(rules, state, batch)` applies a batch (any order, several readings per sensor) and
`tick(rules, state, now_us)` fires timers without new data (`alerting.timers`). Neither changes
`state`: the new rows come back in `Step.delta`. The semantics are docs/alarms.md;
`alerting.reference` is the same thing one reading at a time, and the property tests hold the
two equal.

How a batch goes through (each step a handful of whole-array operations):

1. sort by (sensor, time), mark late readings and duplicates (`ts <= eval_ts`):
   `alerting.batch`;
2. quality and stale tiers per accepted reading (stale timers between readings:
   `alerting.stale`);
3. per side (high, low), only for sensors whose readings or carried latches are not all at
   rest: latches, runs, delays and holds (`alerting.levels`);
4. rate and trend over each sensor's remembered readings plus the batch (`alerting.windows`);
5. derived signals (`alerting.derived`), evaluated as a second pass; 6. votes over the
   members' tier changes (`alerting.votes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.batch import BatchRows
from alerting.derived import derived_batch, imbalance
from alerting.levels import (
    LevelEvents,
    Segments,
    SideTransitions,
    delayed_latch,
    held_latch,
    side_transitions,
)
from alerting.rules import CompiledRules, Rule
from alerting.segments import (
    BoolArray,
    IntArray,
    first_of_segment,
    last_of_segment,
    shift_in_segment,
)
from alerting.stale import stale_on_readings
from alerting.state import NEVER, EngineState, Rows, StateDelta
from alerting.step import Step, compact_changed, note_member_changes
from alerting.timers import tick
from alerting.transitions import Transitions
from alerting.votes import MemberChanges, member_changes, vote_transitions
from alerting.windows import History, rate_tier, trend_tier
from hazwatch.domain import ReadingBatch

__all__ = ["Step", "evaluate", "tick"]

FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]
PosArray = npt.NDArray[np.int32]


def evaluate(
    rules: CompiledRules, state: EngineState, batch: ReadingBatch, now_us: int | None = None
) -> Step:
    """Apply a batch of readings; with `now_us`, tick the timers afterwards."""
    first = _readings(rules, state, batch, overlay=None, derive=True)
    parts = [first]
    if len(first.derived):
        parts.append(_readings(rules, state, first.derived, overlay=first.delta, derive=False))
    delta = first.delta
    changes = [first.changes]
    for part in parts[1:]:
        delta = delta.then(part.delta)
        changes.append(part.changes)
    votes = vote_transitions(rules, state.rows, MemberChanges.concat(changes))
    step = Step(
        transitions=Transitions.concat([p.transitions for p in parts] + [votes]).sorted(),
        delta=delta,
        derived=first.derived,
        accepted=sum(p.accepted for p in parts),
        late=sum(p.late for p in parts),
        unknown=first.unknown,
    )
    if now_us is None:
        return step
    later = tick(rules, state.updated(delta), now_us)
    return Step(
        transitions=Transitions.concat([step.transitions, later.transitions]),
        delta=delta.then(later.delta),
        derived=step.derived,
        accepted=step.accepted,
        late=step.late,
        unknown=step.unknown,
    )


@dataclass(frozen=True, slots=True)
class _Pass:
    transitions: Transitions
    delta: StateDelta
    derived: ReadingBatch
    changes: MemberChanges
    accepted: int
    late: int
    unknown: int


def _readings(
    rules: CompiledRules,
    state: EngineState,
    batch: ReadingBatch,
    *,
    overlay: StateDelta | None,
    derive: bool,
) -> _Pass:
    b = BatchRows(rules, state, batch, overlay)
    parts = [_quality(b), stale_on_readings(b)]
    sides = [_side(b, side) for side in (0, 1)]
    parts += [s[1] for s in sides if s is not None]
    derived_rows: list[tuple[PosArray, IntArray, FloatArray]] = []
    parts.append(_windows(b, derived_rows if derive else None))
    if derive:
        derived_rows += imbalance(b)
    changes = member_changes(
        b.spos,
        b.before.tier[:, Rule.HIGH],
        b.before.tier[:, Rule.LOW],
        {side: s[0] for side, s in enumerate(sides) if s is not None},
    )
    note_member_changes(b.spos, b.work, changes)
    index = b.spos.astype(np.intp)
    persist = compact_changed(b.before, b.work)
    return _Pass(
        transitions=Transitions.concat(parts),
        delta=StateDelta(index, b.work, persist),
        derived=derived_batch(rules, derived_rows),
        changes=changes,
        accepted=b.n_accepted,
        late=b.late,
        unknown=b.unknown,
    )


# Quality ---------------------------------------------------------------------------------


def _quality(b: BatchRows) -> Transitions:
    qt = b.rules.quality_tier[b.spos]
    if not qt.any():
        return Transitions.empty()
    tier = np.where(b.a_bad, qt[b.a_seg], 0).astype(np.int8)
    before = shift_in_segment(tier, b.a_first, b.before.tier[b.a_seg, Rule.QUALITY])
    moved = tier != before
    if len(tier):
        last = last_of_segment(b.a_first)
        b.work.tier[b.a_seg[last], Rule.QUALITY] = tier[last]
    return Transitions.build(
        Rule.QUALITY, b.spos[b.a_seg[moved]], b.a_t[moved],
        tiers=(before[moved], tier[moved]), value=b.a_v[moved],
    )  # fmt: skip


# High and low thresholds ----------------------------------------------------------------


def _side(b: BatchRows, side: int) -> tuple[SideTransitions, Transitions] | None:
    rules = b.rules
    latches = slice(side * 4, side * 4 + 4)
    on = rules.side_on[side][b.spos]
    if not on.any():
        return None
    rest = rules.rest[side][b.spos]
    hot = b.a_x >= rest[b.a_seg] if side == 0 else b.a_x <= rest[b.a_seg]
    seg_hot = np.zeros(b.m, dtype=np.bool_)
    seg_hot[b.a_seg[hot]] = True
    carried = b.before.raw[:, latches].any(axis=1) | b.before.delayed[:, latches].any(axis=1)
    active = on & b.has_acc & (seg_hot | carried)
    if not active.any():
        return None
    segs = Segments(
        pos=b.spos,
        horizon=b.horizon,
        raw=b.before.raw,
        delayed=b.before.delayed,
        since=b.before.since,
        row_seg=b.a_seg,
        row_t=b.a_t,
        row_x=b.a_x,
        row_first=b.a_first,
    )
    events = _side_events(rules, side, segs, active, b.work)
    st = side_transitions(side, events, b.before.delayed, b.before.tier[:, Rule.HIGH + side])
    b.work.tier[:, Rule.HIGH + side] = st.tier_end
    value = b.value_at(st.seg, st.ts)
    rule = Rule.HIGH if side == 0 else Rule.LOW
    return st, Transitions.build(
        rule, b.spos[st.seg], st.ts, tiers=(st.from_tier, st.to_tier), value=value
    )


def _side_events(
    rules: CompiledRules, side: int, segs: Segments, active: BoolArray, work: Rows
) -> LevelEvents:
    """Run every level of a side over the active segments; write their end states into
    `work` and return their D changes (segment numbers of `segs`)."""
    parts = []
    hold = rules.hold_us[segs.pos] > 0
    for kind_mask, run in ((active & ~hold, delayed_latch), (active & hold, held_latch)):
        if not kind_mask.any():
            continue
        sub = segs.subset(kind_mask)
        back = np.flatnonzero(kind_mask)
        for level in range(4):
            index = side * 4 + level
            if np.isnan(rules.limit[index][sub.pos]).all():
                continue
            end = run(rules, index, sub)
            work.raw[back, index] = end.raw
            work.delayed[back, index] = end.delayed
            work.since[back, index] = end.since
            ev = end.events
            parts.append(LevelEvents(back[ev.seg], ev.ts, ev.latch, ev.new, ev.seq))
    return LevelEvents.concat(parts)


# Rate, trend and derived rates -------------------------------------------------------------


def _windows(
    b: BatchRows, derived: list[tuple[PosArray, IntArray, FloatArray]] | None
) -> Transitions:
    """Rate and trend tiers, and derived rates (when `derived` collects them)."""
    built = _history(b)
    if built is None:
        return Transitions.empty()
    history, hseg, at = built
    rules = b.rules
    hpos = b.spos[hseg]
    out = []
    eval_pos = hpos[history.seg[at]]
    for rule, windows in ((Rule.RATE, rules.rate_window_us), (Rule.TREND, rules.trend_window_us)):
        mine = windows[eval_pos] > 0
        if not mine.any():
            continue
        at_r, pos_r = (at, eval_pos) if mine.all() else (at[mine], eval_pos[mine])
        window = windows[pos_r]
        start = history.window_start(at_r, window)
        if rule is Rule.RATE:
            per_min = history.rate_per_min(at_r, start, window, history.x)
            tier = rate_tier(rules, pos_r, per_min)
        else:
            tier = _trend(rules, history, at=at_r, start=start, window=window, pos=pos_r)
        m_seg = hseg[history.seg[at_r]]
        first = first_of_segment(m_seg)
        out.append(_tier_moves(b, rule, m_seg=m_seg, first=first, tier=tier,
                               value=history.v[at_r], ts=history.t[at_r]))  # fmt: skip
    if derived is not None:
        for k in range(rules.rate_out.shape[0]):
            out_pos = rules.rate_out[k][eval_pos]
            mine = out_pos >= 0
            if not mine.any():
                continue
            at_d = at[mine]
            window = rules.rate_window_us_of[k][eval_pos[mine]]
            start = history.window_start(at_d, window)
            per_min = history.rate_per_min(at_d, start, window, history.v)
            value = per_min * rules.rate_scale[k][eval_pos[mine]]
            ok = ~np.isnan(value)
            derived.append((out_pos[mine][ok], history.t[at_d][ok], value[ok]))
    return Transitions.concat(out)


def _history(b: BatchRows) -> tuple[History, IntArray, IntArray] | None:
    """The remembered and new valid readings of sensors with windows, the segments they
    belong to (indices into the batch's segments), and the entries to evaluate (accepted
    readings). Writes the new remembered history into the working rows."""
    rules = b.rules
    need = rules.needs_history[b.spos]
    if not need.any():
        return None
    rows = np.flatnonzero(b.valid_all & need[b.seg])
    if not len(rows):
        return None
    row_seg_m = b.seg[rows]
    hseg = np.flatnonzero(need & (np.bincount(row_seg_m, minlength=b.m) > 0))
    to_h = np.full(b.m, -1, dtype=np.int64)
    to_h[hseg] = np.arange(len(hseg))
    hpos = b.spos[hseg]
    widest = np.maximum(
        np.maximum(rules.rate_window_us[hpos], rules.trend_window_us[hpos]),
        rules.derive_window_us[hpos],
    )
    accepted_rows = b.accepted[rows]
    # Per segment, the oldest time any window of this batch reaches back to (none: keep all).
    acc_h = to_h[row_seg_m[accepted_rows]]
    acc_t = b.t[rows[accepted_rows]]
    firsts = first_of_segment(acc_h)
    cutoff = np.full(len(hseg), NEVER, dtype=np.int64)
    cutoff[acc_h[firsts]] = acc_t[firsts] - widest[acc_h[firsts]]
    before = b.before
    history = History.build(
        rules, hpos, hist_t=before.hist_t[hseg], hist_v=before.hist_v[hseg],
        hist_n=before.hist_n[hseg], row_seg=to_h[row_seg_m], row_t=b.t[rows], row_v=b.v[rows],
        cutoff=cutoff, all_new=bool(accepted_rows.all()),
    )  # fmt: skip
    hist_t, hist_v, hist_n = history.remembered()
    b.work.hist_t[hseg] = hist_t
    b.work.hist_v[hseg] = hist_v
    b.work.hist_n[hseg] = hist_n
    return history, hseg, history.batch_at[accepted_rows]


def _trend(
    rules: CompiledRules,
    history: History,
    *,
    at: IntArray,
    start: IntArray,
    window: IntArray,
    pos: PosArray,
) -> Int8Array:
    """The trend tier at each evaluated entry. Only entries whose projection passes a side's
    first limit (the lowest high or the highest low) can predict a tier: the full test runs
    on those alone."""
    slope, n = history.slope(at, start)
    x = history.x[at]
    projected = x + slope * rules.trend_horizon_s[pos]
    candidate = history.covered(at, start, window) & (
        (projected >= rules.first_limit[0][pos]) | (projected <= rules.first_limit[1][pos])
    )
    tier = np.zeros(len(at), dtype=np.int8)
    c = np.flatnonzero(candidate)
    if len(c):
        tier[c] = trend_tier(rules, pos[c], x[c], slope[c], n[c])
    return tier


def _tier_moves(
    b: BatchRows,
    rule: Rule,
    *,
    m_seg: IntArray,
    first: BoolArray,
    tier: Int8Array,
    value: FloatArray,
    ts: IntArray,
) -> Transitions:
    """Transitions of a tier evaluated at readings, against the carried tier."""
    before = shift_in_segment(tier, first, b.before.tier[m_seg, rule])
    moved = tier != before
    last = last_of_segment(first)
    b.work.tier[m_seg[last], rule] = tier[last]
    return Transitions.build(rule, b.spos[m_seg[moved]], ts[moved],
                             tiers=(before[moved], tier[moved]), value=value[moved])  # fmt: skip
