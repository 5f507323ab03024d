"""High and low thresholds: set/reset latches per level, on/off delays, holds, and the tier.

Works on `Segments`: some sensors (one segment each, with the latch state they carry in) and
their valid readings in time order. For each level (latch) it finds the *runs* of the raw latch
R (a carried-in run, then one run per change of R), decides which runs lasted long enough to
move the delayed latch D (`start + delay <= end`, where a run ends where the next starts or at
the segment's horizon), and returns the D changes as `LevelEvents`. `side_transitions` merges
the events of a side's four levels into the rule's tier transitions, one per timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.rules import CompiledRules
from alerting.segments import (
    BoolArray,
    IntArray,
    last_of_segment,
    last_true_index,
    latch,
    shift_in_segment,
)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Segments:
    """Sensors (segments) with their carried latch state, and their valid readings."""

    pos: npt.NDArray[np.int32]  # (m,) sensor position
    horizon: IntArray  # (m,) timers due at or before this fire
    raw: BoolArray  # (m, 8) carried R
    delayed: BoolArray  # (m, 8) carried D
    since: IntArray  # (m, 8)
    row_seg: IntArray  # (M,) segment of each valid reading, nondecreasing
    row_t: IntArray  # (M,)
    row_x: FloatArray  # (M,)
    row_first: BoolArray  # (M,) first valid reading of its segment

    @property
    def m(self) -> int:
        return len(self.pos)

    def subset(self, keep: BoolArray) -> Segments:
        """The segments where `keep`, with their rows."""
        new_index = np.cumsum(keep) - 1
        rows = keep[self.row_seg]
        return Segments(
            pos=self.pos[keep],
            horizon=self.horizon[keep],
            raw=self.raw[keep],
            delayed=self.delayed[keep],
            since=self.since[keep],
            row_seg=new_index[self.row_seg[rows]],
            row_t=self.row_t[rows],
            row_x=self.row_x[rows],
            row_first=self.row_first[rows],
        )


@dataclass(frozen=True, slots=True)
class LevelEvents:
    """Changes of delayed latches: segment, time, latch, new D, and an order among changes of
    one latch at the same time."""

    seg: IntArray
    ts: IntArray
    latch: IntArray
    new: BoolArray
    seq: IntArray

    @classmethod
    def concat(cls, parts: list[LevelEvents]) -> LevelEvents:
        return cls(
            seg=np.concatenate([p.seg for p in parts]) if parts else np.zeros(0, np.int64),
            ts=np.concatenate([p.ts for p in parts]) if parts else np.zeros(0, np.int64),
            latch=np.concatenate([p.latch for p in parts]) if parts else np.zeros(0, np.int64),
            new=np.concatenate([p.new for p in parts]) if parts else np.zeros(0, np.bool_),
            seq=np.concatenate([p.seq for p in parts]) if parts else np.zeros(0, np.int64),
        )


@dataclass(frozen=True, slots=True)
class LatchEnd:
    """A latch's state per segment after the batch, and its D changes."""

    raw: BoolArray
    delayed: BoolArray
    since: IntArray
    events: LevelEvents


def _set_reset(rules: CompiledRules, index: int, seg: Segments) -> tuple[BoolArray, BoolArray]:
    limit = rules.limit[index][seg.pos][seg.row_seg]
    reset = rules.reset[index][seg.pos][seg.row_seg]
    if index < 4:
        return seg.row_x >= limit, seg.row_x < reset
    return seg.row_x <= limit, seg.row_x > reset


def _place_runs(
    seg: Segments, starts: IntArray, carried: BoolArray
) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """Lay out per segment: the carried entry (where `carried`), then the rows `starts` (row
    indices in order). Returns (entry segment, slot of carried entries, slot of row entries,
    first-entry-of-segment mask)."""
    m = seg.m
    row_seg = seg.row_seg[starts]
    per_seg = np.bincount(row_seg, minlength=m).astype(np.int64) + carried
    seg_offset = np.cumsum(per_seg) - per_seg
    total = int(per_seg.sum())
    entry_seg = np.repeat(np.arange(m, dtype=np.int64), per_seg)
    carried_slot = seg_offset[carried]
    rank = (
        np.arange(len(starts), dtype=np.int64)
        - (np.cumsum(per_seg - carried) - (per_seg - carried))[row_seg]
    )
    row_slot = seg_offset[row_seg] + carried[row_seg] + rank
    first = np.zeros(total, dtype=np.bool_)
    first[seg_offset[per_seg > 0]] = True
    return entry_seg, carried_slot, row_slot, first


def delayed_latch(rules: CompiledRules, index: int, seg: Segments) -> LatchEnd:
    """Latch `index` of segments that are not event streams: runs of R, delays, D changes."""
    is_set, is_reset = _set_reset(rules, index, seg)
    r0_rows = seg.raw[seg.row_seg, index]
    r = latch(is_set, is_reset, seg.row_first, r0_rows)
    change = r != shift_in_segment(r, seg.row_first, r0_rows)
    starts = np.flatnonzero(change).astype(np.int64)
    carried = np.ones(seg.m, dtype=np.bool_)  # every segment has its carried-in run
    run_seg, carried_slot, row_slot, first = _place_runs(seg, starts, carried)
    total = len(run_seg)
    run_r = np.empty(total, dtype=np.bool_)
    run_start = np.empty(total, dtype=np.int64)
    run_r[carried_slot] = seg.raw[:, index]
    run_start[carried_slot] = seg.since[:, index]
    run_r[row_slot] = r[starts]
    run_start[row_slot] = seg.row_t[starts]
    last = last_of_segment(first)
    run_end = np.empty(total, dtype=np.int64)
    run_end[:-1] = run_start[1:]
    run_end[last] = seg.horizon[run_seg[last]]
    pos = seg.pos[run_seg]
    delay = np.where(run_r, rules.on_delay_us[index][pos], rules.off_delay_us[pos])
    due = run_start + delay
    qualified: BoolArray = due <= run_end
    d0 = seg.delayed[run_seg, index]
    d_after = latch(qualified & run_r, qualified & ~run_r, first, d0)
    d_before = shift_in_segment(d_after, first, d0)
    event = qualified & (run_r != d_before)
    events = LevelEvents(
        seg=run_seg[event],
        ts=due[event],
        latch=np.full(int(event.sum()), index, dtype=np.int64),
        new=run_r[event],
        seq=np.flatnonzero(event).astype(np.int64) * 2,
    )
    return LatchEnd(run_r[last], d_after[last], run_start[last], events)


def held_latch(rules: CompiledRules, index: int, seg: Segments) -> LatchEnd:
    """Latch `index` of event-stream segments: a set holds for hold_us from the last set."""
    is_set, _ = _set_reset(rules, index, seg)
    starts = np.flatnonzero(is_set).astype(np.int64)
    carried = seg.raw[:, index].copy()
    entry_seg, carried_slot, row_slot, first = _place_runs(seg, starts, carried)
    total = len(entry_seg)
    at = np.empty(total, dtype=np.int64)  # time of each set (carried: the last set before)
    at[carried_slot] = seg.since[carried, index]
    at[row_slot] = seg.row_t[starts]
    is_row = np.ones(total, dtype=np.bool_)
    is_row[carried_slot] = False
    last = last_of_segment(first)
    expiry = at + rules.hold_us[seg.pos[entry_seg]]
    next_at = np.empty(total, dtype=np.int64)
    next_at[:-1] = at[1:]
    next_at[last] = seg.horizon[entry_seg[last]]
    expires = expiry <= next_at  # the next set (or the horizon) comes at or after the expiry
    # A set turns the level on if it is the first (and nothing was carried) or the one before
    # it expired first.
    prev_expired = shift_in_segment(expires, first, np.ones(total, dtype=np.bool_))
    turns_on = is_row & prev_expired
    seq = np.arange(total, dtype=np.int64) * 2
    events = LevelEvents.concat(
        [
            LevelEvents(entry_seg[turns_on], at[turns_on],
                        np.full(int(turns_on.sum()), index, dtype=np.int64),
                        np.ones(int(turns_on.sum()), dtype=np.bool_), seq[turns_on]),
            LevelEvents(entry_seg[expires], expiry[expires],
                        np.full(int(expires.sum()), index, dtype=np.int64),
                        np.zeros(int(expires.sum()), dtype=np.bool_), seq[expires] + 1),
        ]
    )  # fmt: skip
    raw_end = seg.raw[:, index].copy()
    since_end = seg.since[:, index].copy()
    last_seg = entry_seg[last]
    raw_end[last_seg] = ~expires[last]
    since_end[last_seg] = np.where(expires[last], expiry[last], at[last])
    return LatchEnd(raw_end, raw_end.copy(), since_end, events)


@dataclass(frozen=True, slots=True)
class SideTransitions:
    """Tier transitions of one side (rule) for some segments, and each segment's last tier."""

    seg: IntArray
    ts: IntArray
    from_tier: npt.NDArray[np.int8]
    to_tier: npt.NDArray[np.int8]
    tier_end: npt.NDArray[np.int8]  # (m,)


def side_transitions(
    side: int, events: LevelEvents, delayed0: BoolArray, tier0: npt.NDArray[np.int8]
) -> SideTransitions:
    """Merge the D changes of a side's levels into tier transitions, one per (segment, time):
    the tier is the highest level whose D is on, compared before and after each time."""
    tier_end = tier0.copy()
    if not len(events.seg):
        empty = np.zeros(0, dtype=np.int64)
        return SideTransitions(empty, empty, empty.astype(np.int8), empty.astype(np.int8), tier_end)
    order = np.lexsort((events.seq, events.ts, events.seg))
    seg = events.seg[order]
    ts = events.ts[order]
    latch_of = events.latch[order]
    new = events.new[order]
    first = np.ones(len(seg), dtype=np.bool_)
    first[1:] = seg[1:] != seg[:-1]
    tier = np.zeros(len(seg), dtype=np.int8)
    for level in range(1, 5):
        index = side * 4 + level - 1
        mine = latch_of == index
        d0 = delayed0[seg, index]
        if mine.any():
            last = last_true_index(mine, first)
            d = np.where(last >= 0, new[np.maximum(last, 0)], d0)
        else:
            d = d0
        tier = np.where(d, np.int8(level), tier)
    group_last = np.ones(len(seg), dtype=np.bool_)
    group_last[:-1] = (seg[1:] != seg[:-1]) | (ts[1:] != ts[:-1])
    g_seg, g_ts, g_tier = seg[group_last], ts[group_last], tier[group_last]
    g_first = np.ones(len(g_seg), dtype=np.bool_)
    g_first[1:] = g_seg[1:] != g_seg[:-1]
    before = shift_in_segment(g_tier, g_first, tier0[g_seg])
    moved = g_tier != before
    g_last = np.ones(len(g_seg), dtype=np.bool_)
    g_last[:-1] = g_first[1:]
    tier_end[g_seg[g_last]] = g_tier[g_last]
    return SideTransitions(g_seg[moved], g_ts[moved], before[moved], g_tier[moved], tier_end)
