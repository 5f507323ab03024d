"""The alarm engine: readings and state in, tier transitions and a state delta out. Pure numpy.

`evaluate(rules, state, batch)` applies a batch (any order, several readings per sensor) and
`tick(rules, state, now_us)` fires timers without new data. Neither changes `state`: the new
rows come back in `Step.delta`. The semantics are docs/alarms.md; `alerting.reference` is the
same thing one reading at a time, and the property tests hold the two equal.

How a batch goes through (each step a handful of whole-array operations):

1. sort by (sensor, time), mark late readings and duplicates (`ts <= eval_ts`);
2. quality and stale tiers per accepted reading (stale timers between readings);
3. per side (high, low), only for sensors whose readings or carried latches are not all at
   rest: latches, runs, delays and holds (`alerting.levels`);
4. rate and trend over each sensor's remembered readings plus the batch (`alerting.windows`);
5. derived signals, evaluated as a second pass; 6. votes over the members' tier changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

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
    last_true_index,
    segment_bounds,
    segment_ids,
    shift_in_segment,
    sort_order,
)
from alerting.state import COMPACT_FIELDS, NEVER, EngineState, Rows, StateDelta
from alerting.transitions import Transitions
from alerting.votes import MemberChanges, member_changes, vote_transitions
from alerting.windows import History, rate_tier, trend_tier
from hazwatch.domain import BAD_QUALITY_MIN, Quality, ReadingBatch

FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]
PosArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class Step:
    """What one evaluation produced. Apply `delta` to the state to move on."""

    transitions: Transitions  # in transition order (time, then sensor rules, then votes)
    delta: StateDelta
    derived: ReadingBatch  # readings of derived sensors, to be stored
    accepted: int = 0
    late: int = 0  # stored but older than the sensor's clock: no effect on alarms
    unknown: int = 0  # sensor ids the rules do not know


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


class _Batch:
    """One pass over readings: the sorted rows, their segments and the working state rows."""

    def __init__(
        self,
        rules: CompiledRules,
        state: EngineState,
        batch: ReadingBatch,
        overlay: StateDelta | None,
    ) -> None:
        self.rules = rules
        self.state = state
        self.overlay = overlay
        pos = rules.positions(batch.sensor_id)
        t, v, q = batch.ts_us, batch.value, batch.quality
        known = pos >= 0
        self.unknown = int((~known).sum())
        if self.unknown:
            pos, t, v, q = pos[known], t[known], v[known], q[known]
        order = sort_order(pos, t, rules.n)
        if order is not None:  # (the sensor ids are not needed any more: positions are)
            pos, t, v, q = pos[order], t[order], v[order], q[order]
        self.t = t
        self.v = v
        self.first = first_of_segment(pos)
        self.seg = segment_ids(self.first)
        starts, ends = segment_bounds(self.first)
        self.spos: PosArray = pos[starts]
        self.m = len(starts)
        self.before = state.gather(self.spos.astype(np.intp), overlay)
        # The rows this pass writes. The history arrays are shared with `before` (a private
        # copy already): they are read once, by `_windows`, before it overwrites them.
        self.work = replace(
            self.before.copy_without_history(),
            hist_t=self.before.hist_t,
            hist_v=self.before.hist_v,
            hist_n=self.before.hist_n,
        )
        eval0 = self.before.eval_ts
        dup = np.zeros(len(pos), dtype=np.bool_)
        dup[1:] = ~self.first[1:] & (self.t[1:] == self.t[:-1])
        self.dup = dup
        accepted = (self.t > eval0[self.seg]) & ~dup
        self.accepted = accepted
        self.n_accepted = int(accepted.sum())
        self.late = len(pos) - self.n_accepted
        bad = (q >= BAD_QUALITY_MIN) | ~np.isfinite(self.v)
        flagged = (q == Quality.UNCERTAIN) | (q == Quality.CALIBRATION)
        self.valid_all = ~bad & ~flagged
        if ends.size:
            self.work.last_ts[:] = np.maximum(self.before.last_ts, self.t[ends - 1])
        self._accepted_rows(accepted, bad, starts, ends)
        self.work.eval_ts[:] = self.horizon
        self._keys: tuple[IntArray, IntArray, int, int] | None = None
        self._valid_rows: IntArray | None = None

    def _accepted_rows(
        self, accepted: BoolArray, bad: BoolArray, starts: IntArray, ends: IntArray
    ) -> None:
        """The accepted rows and what depends on them: horizon, life, x, last valid."""
        eval0 = self.before.eval_ts
        # Accepted rows, compacted (nothing to compact in the usual case: no late rows).
        if self.late:
            a = np.flatnonzero(accepted)
            self.a_seg, self.a_t, self.a_v = self.seg[a], self.t[a], self.v[a]
            self.a_bad, self.a_valid = bad[a], self.valid_all[a]
            self.a_first = first_of_segment(self.a_seg)
            a_starts, a_ends = segment_bounds(self.a_first)
        else:
            a = None
            self.a_seg, self.a_t, self.a_v = self.seg, self.t, self.v
            self.a_bad, self.a_valid = bad, self.valid_all
            self.a_first, a_starts, a_ends = self.first, starts, ends
        acc_seg = self.a_seg[a_starts]
        self.has_acc = np.zeros(self.m, dtype=np.bool_)
        self.has_acc[acc_seg] = True
        self.horizon = eval0.copy()
        self.horizon[acc_seg] = self.a_t[a_ends - 1]
        # Life before the first accepted reading: the later of the carried last_ts and a late
        # reading just before it in this batch.
        life0 = self.before.last_ts.copy()
        if a is not None:
            prev_row = a[a_starts] - 1
            inside = (prev_row >= 0) & (prev_row >= starts[acc_seg])
            g = acc_seg[inside]
            life0[g] = np.maximum(life0[g], self.t[prev_row[inside]])
        self.life0 = life0
        # What thresholds compare: the value (or its magnitude) of valid readings, NaN for the
        # others (NaN neither sets nor resets a latch).
        mag = self.rules.magnitude[self.spos]
        x = np.abs(self.a_v) if mag.all() else self.a_v
        if mag.any() and not mag.all():
            x = np.where(mag[self.a_seg], np.abs(self.a_v), self.a_v)
        self.a_x = np.where(self.a_valid, x, np.nan)
        if len(self.a_t):
            idx = np.where(self.a_valid, np.arange(len(self.a_t)), -1)
            last = np.maximum.reduceat(idx, a_starts)
            has = last >= 0
            self.work.last_valid[acc_seg[has]] = self.a_v[last[has]]

    @property
    def valid_rows(self) -> IntArray:
        """Indices (into the accepted rows) of the valid ones."""
        if self._valid_rows is None:
            self._valid_rows = np.flatnonzero(self.a_valid)
        return self._valid_rows

    # Values carried by transitions -------------------------------------------------------

    def value_at(self, seg: IntArray, ts: IntArray) -> FloatArray:
        """The accepted reading's value at `ts` if there is one, else the last accepted valid
        value before `ts` (the carried one if none in this batch)."""
        if not len(seg):
            return np.zeros(0)
        if self._keys is None:
            times = [int(ts.min()), int(ts.max())]
            if len(self.a_t):
                times += [int(self.a_t.min()), int(self.a_t.max())]
            base = min(times) - 1
            shift = max(1, (max(times) - base + 1).bit_length())
            if shift + max(1, self.m.bit_length()) > 62:
                raise ValueError("a batch spans too long a time for one evaluation; split it")
            key_a = (self.a_seg << shift) | (self.a_t - base)
            self._keys = (key_a, key_a[self.valid_rows], base, shift)
        key_a, key_v, base, shift = self._keys
        q = (seg << shift) | (ts - base)
        out = self.before.last_valid[seg].copy()
        k = np.searchsorted(key_v, q, side="left") - 1
        ok = k >= 0
        valid = self.valid_rows
        ok[ok] = self.a_seg[valid[k[ok]]] == seg[ok]
        out[ok] = self.a_v[valid[k[ok]]]
        at = np.searchsorted(key_a, q, side="left")
        hit = at < len(key_a)
        hit[hit] = key_a[at[hit]] == q[hit]
        out[hit] = self.a_v[at[hit]]
        return out


def _readings(
    rules: CompiledRules,
    state: EngineState,
    batch: ReadingBatch,
    *,
    overlay: StateDelta | None,
    derive: bool,
) -> _Pass:
    b = _Batch(rules, state, batch, overlay)
    parts = [_quality(b), _stale(b)]
    sides = [_side(b, side) for side in (0, 1)]
    parts += [s[1] for s in sides if s is not None]
    derived_rows: list[tuple[PosArray, IntArray, FloatArray]] = []
    parts.append(_windows(b, derived_rows if derive else None))
    if derive:
        derived_rows += _imbalance(b)
    changes = member_changes(
        b.spos,
        b.before.tier[:, Rule.HIGH],
        b.before.tier[:, Rule.LOW],
        {side: s[0] for side, s in enumerate(sides) if s is not None},
    )
    _note_member_changes(b.spos, b.work, changes)
    index = b.spos.astype(np.intp)
    persist = _compact_changed(b.before, b.work)
    return _Pass(
        transitions=Transitions.concat(parts),
        delta=StateDelta(index, b.work, persist),
        derived=_derived_batch(rules, derived_rows),
        changes=changes,
        accepted=b.n_accepted,
        late=b.late,
        unknown=b.unknown,
    )


def _note_member_changes(spos: PosArray, work: Rows, changes: MemberChanges) -> None:
    """Each changed sensor's member_ts: the time of its latest change (`spos` sorted)."""
    if len(changes.pos):
        pos, ts = changes.last_per_sensor()
        work.member_ts[np.searchsorted(spos, pos)] = ts


def _compact_changed(before: Rows, after: Rows) -> BoolArray:
    changed = np.zeros(len(before), dtype=np.bool_)
    for name in COMPACT_FIELDS:
        a, b = getattr(before, name), getattr(after, name)
        diff = a != b
        changed |= diff.any(axis=1) if diff.ndim > 1 else diff
    return changed


# Quality and stale ----------------------------------------------------------------------


def _quality(b: _Batch) -> Transitions:
    qt = b.rules.quality_tier[b.spos]
    if not qt.any():
        return Transitions.empty()
    tier = np.where(b.a_bad, qt[b.a_seg], 0).astype(np.int8)
    before = shift_in_segment(tier, b.a_first, b.before.tier[b.a_seg, Rule.QUALITY])
    moved = tier != before
    if len(tier):
        last = _last_flags(b.a_first)
        b.work.tier[b.a_seg[last], Rule.QUALITY] = tier[last]
    return Transitions.build(
        Rule.QUALITY, b.spos[b.a_seg[moved]], b.a_t[moved],
        tiers=(before[moved], tier[moved]), value=b.a_v[moved],
    )  # fmt: skip


def _last_flags(first: BoolArray) -> BoolArray:
    last = np.zeros(len(first), dtype=np.bool_)
    if len(first):
        last[:-1] = first[1:]
        last[-1] = True
    return last


@dataclass(frozen=True, slots=True)
class _StaleSteps:
    """Up to two stale timers per gap, in time order, and the tier after each."""

    ts_a: IntArray
    ts_b: IntArray
    fire_a: BoolArray
    fire_b: BoolArray
    same: BoolArray
    tier_a: Int8Array
    tier_b: Int8Array


def _stale_steps(
    rules: CompiledRules,
    pos: PosArray,
    *,
    life: IntArray,
    clock: IntArray,
    until: IntArray,
    tier0: Int8Array,
    inclusive: bool,
) -> _StaleSteps:
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
    return _StaleSteps(ts_a, ts_b, fire_a, fire_b, same, tier_a, tier_b)


def _stale_transitions(
    steps: _StaleSteps, subject: PosArray, tier0: Int8Array
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


def _stale(b: _Batch) -> Transitions:
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
    steps = _stale_steps(rules, pos, life=life, clock=clock, until=t, tier0=tier0,
                         inclusive=False)  # fmt: skip
    _, parts = _stale_transitions(steps, seg.astype(np.int32), tier0)
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


# High and low thresholds ----------------------------------------------------------------


def _side(b: _Batch, side: int) -> tuple[SideTransitions, Transitions] | None:
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


def _windows(b: _Batch, derived: list[tuple[PosArray, IntArray, FloatArray]] | None) -> Transitions:
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


def _history(b: _Batch) -> tuple[History, IntArray, IntArray] | None:
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
    b: _Batch,
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
    last = _last_flags(first)
    b.work.tier[m_seg[last], rule] = tier[last]
    return Transitions.build(rule, b.spos[m_seg[moved]], ts[moved],
                             tiers=(before[moved], tier[moved]), value=value[moved])  # fmt: skip


def _imbalance(b: _Batch) -> list[tuple[PosArray, IntArray, FloatArray]]:
    """Flow imbalance readings: at each accepted valid reading of either input,
    (a - b) / a * 100 with both inputs' latest accepted valid values."""
    pairs = b.rules.imbalance
    if not len(pairs) or not len(b.a_t):
        return []
    assert b.overlay is None, "derived signals are computed in the first pass only"
    inputs = pairs[:, :2].ravel()  # entry 2j + which: input `which` (0 a, 1 b) of pair j
    by_input = np.argsort(inputs, kind="stable")
    sorted_inputs = inputs[by_input]
    is_input = np.isin(b.spos, inputs)
    valid = np.flatnonzero(is_input[b.a_seg] & b.a_valid)
    row_pos = b.spos[b.a_seg[valid]]
    lo = np.searchsorted(sorted_inputs, row_pos, side="left")
    reps = np.searchsorted(sorted_inputs, row_pos, side="right") - lo
    if not reps.any():
        return []
    row = valid[np.repeat(np.arange(len(row_pos)), reps)]
    offsets = np.arange(len(row)) - np.repeat(np.cumsum(reps) - reps, reps)
    entry = by_input[np.repeat(lo, reps) + offsets]
    pair, which, t, v = entry // 2, entry % 2, b.a_t[row], b.a_v[row]
    order = np.lexsort((t, pair))
    pair, which, t, v = pair[order], which[order], t[order], v[order]
    first = first_of_segment(pair)
    held = b.state.rows.last_valid[inputs]  # before this batch
    values = []
    for side in (0, 1):
        last = last_true_index(which == side, first)
        values.append(np.where(last >= 0, v[np.maximum(last, 0)], held[pair * 2 + side]))
    a, bb = values
    last_at_t = np.ones(len(t), dtype=np.bool_)
    last_at_t[:-1] = (pair[1:] != pair[:-1]) | (t[1:] != t[:-1])
    ok = last_at_t & ~np.isnan(a) & ~np.isnan(bb) & (a != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (a - bb) / a * 100.0
    return [(pairs[pair[ok], 2], t[ok], value[ok])]


def _derived_batch(
    rules: CompiledRules, rows: list[tuple[PosArray, IntArray, FloatArray]]
) -> ReadingBatch:
    if not rows:
        return ReadingBatch.empty()
    pos = np.concatenate([r[0] for r in rows])
    return ReadingBatch.from_columns(
        rules.sensor_id[pos],
        np.concatenate([r[1] for r in rows]),
        np.concatenate([r[2] for r in rows]),
        np.zeros(len(pos), dtype=np.int16),
    )


# Timers without readings ------------------------------------------------------------------


def tick(rules: CompiledRules, state: EngineState, now_us: int) -> Step:
    """Fire every timer due at or before `now_us`: delays completing, holds expiring, stale
    and offline sensors."""
    rows = state.rows
    n = state.n
    hold = rules.hold_us > 0
    enabled = ~np.isnan(rules.limit.T)  # (n, 8)
    pending = enabled & (rows.raw != rows.delayed) & ~hold[:, None]
    delay = np.where(rows.raw, rules.on_delay_us.T, rules.off_delay_us[:, None])
    due = rows.since + delay
    fire = pending & (due <= now_us)
    hold_due = rows.since + rules.hold_us[:, None]
    expire = enabled & hold[:, None] & rows.raw & (hold_due <= now_us)
    life = rows.last_ts
    steps = _stale_steps(
        rules, np.arange(n, dtype=np.int32), life=life, clock=rows.eval_ts,
        until=np.full(n, now_us, dtype=np.int64), tier0=rows.tier[:, Rule.STALE],
        inclusive=True,
    )  # fmt: skip
    stale_fired = steps.fire_a & (steps.tier_a != rows.tier[:, Rule.STALE])
    stale_fired_b = steps.fire_b & (steps.tier_b != steps.tier_a)
    touched = fire.any(axis=1) | expire.any(axis=1) | stale_fired | stale_fired_b
    index = np.flatnonzero(touched)
    if not len(index):
        return Step(Transitions.empty(), StateDelta.empty(state.history_len), ReadingBatch.empty())
    before = rows.take(index)
    work = before.copy()
    f, e = fire[index], expire[index]
    d_due, h_due = due[index], hold_due[index]
    sub_pos = index.astype(np.int32)
    # Delayed latches.
    work.delayed[f] = work.raw[f]
    work.raw[e] = False
    work.delayed[e] = False
    work.since[e] = h_due[e]
    fired_ts = np.where(f, d_due, np.where(e, h_due, NEVER)).max(axis=1)
    out = []
    sides: dict[int, SideTransitions] = {}
    for side in (0, 1):
        cols = slice(side * 4, side * 4 + 4)
        g_f, l_f = np.nonzero(f[:, cols])
        g_e, l_e = np.nonzero(e[:, cols])
        events = LevelEvents(
            seg=np.concatenate([g_f, g_e]).astype(np.int64),
            ts=np.concatenate([d_due[:, cols][g_f, l_f], h_due[:, cols][g_e, l_e]]),
            latch=np.concatenate([l_f, l_e]).astype(np.int64) + side * 4,
            new=np.concatenate([before.raw[:, cols][g_f, l_f], np.zeros(len(g_e), np.bool_)]),
            seq=np.zeros(len(g_f) + len(g_e), dtype=np.int64),
        )
        st = side_transitions(side, events, before.delayed, before.tier[:, Rule.HIGH + side])
        work.tier[:, Rule.HIGH + side] = st.tier_end
        rule = Rule.HIGH if side == 0 else Rule.LOW
        out.append(Transitions.build(rule, sub_pos[st.seg], st.ts,
                                     tiers=(st.from_tier, st.to_tier),
                                     value=before.last_valid[st.seg]))  # fmt: skip
        sides[side] = st
    # Stale.
    s = _StaleSteps(*(getattr(steps, name)[index] for name in _StaleSteps.__slots__))
    tier0 = before.tier[:, Rule.STALE]
    _, parts = _stale_transitions(s, np.arange(len(index), dtype=np.int32), tier0)
    for g, ts, frm, to in parts:
        out.append(Transitions.build(Rule.STALE, sub_pos[g], ts, tiers=(frm, to),
                                     value=before.last_valid[g]))  # fmt: skip
    work.tier[:, Rule.STALE] = s.tier_b
    stale_ts = np.maximum(
        np.where(s.fire_a & (s.tier_a != tier0), s.ts_a, NEVER),
        np.where(s.fire_b & (s.tier_b != s.tier_a), s.ts_b, NEVER),
    )
    work.eval_ts[:] = np.maximum(before.eval_ts, np.maximum(fired_ts, stale_ts))
    changes = member_changes(sub_pos, before.tier[:, Rule.HIGH], before.tier[:, Rule.LOW], sides)
    _note_member_changes(sub_pos, work, changes)
    votes = vote_transitions(rules, rows, changes)
    return Step(
        transitions=Transitions.concat([*out, votes]).sorted(),
        delta=StateDelta(index.astype(np.intp), work, _compact_changed(before, work)),
        derived=ReadingBatch.empty(),
    )
