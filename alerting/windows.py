"""Rate of change, trend and derived rates: windows over each sensor's recent valid readings.

A `History` lays out, per sensor (segment), the readings it remembers (its last H valid ones)
followed by this batch's valid readings, in time order; late readings are merged in where they
belong, and a reading already remembered is not taken twice. A window ending at reading i
starts at the first reading with `t >= t_i - window`, but no earlier than `i - H + 1` (the
last H readings) and never before its segment: one `searchsorted` over a composite
(segment, time) key finds all starts at once. Sums for the least-squares slope are differences
of running sums (`np.cumsum`), with times in seconds relative to a base per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from alerting.rules import CompiledRules
from alerting.segments import BoolArray, IntArray, first_of_segment
from alerting.state import NEVER, Rows

FloatArray = npt.NDArray[np.float64]
G = TypeVar("G", bound=np.generic)


@dataclass(frozen=True, slots=True)
class History:
    """Remembered and new readings laid out together (the path for batches with late
    readings or duplicates; `Recent` is the usual one)."""

    seg: IntArray  # segment of each entry, nondecreasing
    t: IntArray
    v: FloatArray
    x: FloatArray  # v, or |v| for magnitude sensors
    seg_start: IntArray  # (m,) first entry of each segment
    seg_end: IntArray  # (m,) one past the last entry
    batch_at: IntArray  # entry index of each batch row given (-1: a duplicate, dropped)
    history_len: int
    _key: IntArray
    _key_base: int
    _key_shift: int

    @classmethod
    def build(
        cls,
        rules: CompiledRules,
        pos: npt.NDArray[np.int32],
        *,
        hist_t: IntArray,
        hist_v: FloatArray,
        hist_n: npt.NDArray[np.int32],
        row_seg: IntArray,
        row_t: IntArray,
        row_v: FloatArray,
        cutoff: IntArray,
    ) -> History:
        """`pos` and the history arrays are per segment; rows are this batch's valid readings
        of those segments in (segment, time) order, some late (older than the sensor's
        clock, merged in where they belong) or duplicates (dropped). History rows are
        right-aligned (`unrolled`). A segment's remembered readings older than its `cutoff`
        can be in no window of this batch, nor of a later one (later readings are newer):
        they are left out, and out of what is remembered next."""
        m, h = hist_t.shape
        hist_n = np.minimum(hist_n, (hist_t >= cutoff[:, None]).sum(axis=1)).astype(np.int32)
        keep = np.arange(h)[None, :] >= (h - hist_n)[:, None]
        h_seg = np.repeat(np.arange(m, dtype=np.int64), hist_n)
        h_t = hist_t[keep]
        h_v = hist_v[keep]
        # Merge by time, remembered entries first at equal times, and drop a reading whose
        # (sensor, time) is already there.
        all_seg = np.concatenate([h_seg, row_seg])
        all_t = np.concatenate([h_t, row_t])
        src = np.concatenate([np.zeros(len(h_t), np.int8), np.ones(len(row_t), np.int8)])
        order = np.lexsort((src, all_t, all_seg))
        dup = np.zeros(len(order), dtype=np.bool_)
        dup[1:] = (all_seg[order][1:] == all_seg[order][:-1]) & (
            all_t[order][1:] == all_t[order][:-1]
        )
        order = order[~dup]
        seg = all_seg[order]
        t = all_t[order]
        v = np.concatenate([h_v, row_v])[order]
        batch_at = np.full(len(row_t), -1, dtype=np.int64)
        is_batch = order >= len(h_t)
        batch_at[order[is_batch] - len(h_t)] = np.flatnonzero(is_batch)
        per_seg = np.bincount(seg, minlength=m).astype(np.int64)
        offset = np.cumsum(per_seg) - per_seg
        magnitude = rules.magnitude[pos][seg]
        x = np.where(magnitude, np.abs(v), v) if magnitude.any() else v
        # Composite key: segment in the high bits, time since the earliest window start in the
        # low bits (older entries clipped to 0: they are in no window anyway).
        has_cutoff = cutoff != NEVER
        base = (int(cutoff[has_cutoff].min()) if has_cutoff.any() else int(t.min(initial=0))) - 1
        span = int(t.max()) - base if len(t) else 1
        shift = max(1, span.bit_length())
        if shift + max(1, m.bit_length()) > 62:
            raise ValueError("a batch spans too long a time for the window search; split it")
        key = (seg << shift) | np.maximum(t - base, 0)
        return cls(
            seg=seg, t=t, v=v, x=x, seg_start=offset, seg_end=offset + per_seg,
            batch_at=batch_at, history_len=h, _key=key, _key_base=base, _key_shift=shift,
        )  # fmt: skip

    def window_start(self, at: IntArray, window_us: IntArray) -> IntArray:
        """First entry of the window ending at each entry `at` (window per entry)."""
        seg = self.seg[at]
        low = np.maximum(self.t[at] - window_us - self._key_base, 0)
        start = np.searchsorted(self._key, (seg << self._key_shift) | low, side="left")
        counted = np.maximum(start, at - self.history_len + 1)
        first: IntArray = np.maximum(counted, self.seg_start[seg])
        return first

    def covered(self, at: IntArray, start: IntArray, window_us: IntArray) -> BoolArray:
        """Windows whose readings span at least half of the window (two readings or more)."""
        covered: BoolArray = (start < at) & ((self.t[at] - self.t[start]) * 2 >= window_us)
        return covered

    def rate_per_min(
        self, at: IntArray, start: IntArray, window_us: IntArray, *, raw: bool = False
    ) -> FloatArray:
        """(x[at] - x[start]) per minute (`raw`: of the values v, not x); NaN where the
        window is not covered."""
        values = self.v if raw else self.x
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (values[at] - values[start]) / ((self.t[at] - self.t[start]) / 1e6) * 60.0
        r = np.asarray(r, dtype=np.float64)
        return np.where(self.covered(at, start, window_us), r, np.nan)

    def slope(self, at: IntArray, start: IntArray) -> tuple[FloatArray, IntArray]:
        """Least-squares slope of x over t (per second) of each window, and its size; NaN
        where all times are equal."""
        seg = self.seg
        first_t = self.t[self.seg_start]
        ts = (self.t - first_t[seg]) / 1e6
        x = self.x
        zero = np.zeros(1)
        c_t = np.concatenate([zero, np.cumsum(ts)])
        c_x = np.concatenate([zero, np.cumsum(x)])
        c_tt = np.concatenate([zero, np.cumsum(ts * ts)])
        c_tx = np.concatenate([zero, np.cumsum(ts * x)])
        n = at - start + 1
        end = at + 1
        st = c_t[end] - c_t[start]
        sx = c_x[end] - c_x[start]
        stt = c_tt[end] - c_tt[start]
        stx = c_tx[end] - c_tx[start]
        denominator = n * stt - st * st
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (n * stx - st * sx) / denominator
        return np.where(denominator > 0, b, np.nan), n

    def remembered(self) -> tuple[IntArray, FloatArray, npt.NDArray[np.int32]]:
        """Each segment's last H entries, right-aligned: (hist_t, hist_v, hist_n)."""
        m = len(self.seg_start)
        h = self.history_len
        count = np.minimum(self.seg_end - self.seg_start, h)
        hist_t = np.full((m, h), np.iinfo(np.int64).min // 2, dtype=np.int64)
        hist_v = np.full((m, h), np.nan)
        col = np.arange(h)[None, :]
        fill = col >= (h - count)[:, None]
        src = (self.seg_end - count)[:, None] + (col - (h - count)[:, None])
        hist_t[fill] = self.t[src[fill]]
        hist_v[fill] = self.v[src[fill]]
        return hist_t, hist_v, count.astype(np.int32)


def unrolled(
    hist_t: IntArray, hist_v: FloatArray, hist_head: npt.NDArray[np.int32]
) -> tuple[IntArray, FloatArray]:
    """History rings laid out right-aligned (the newest in column H-1)."""
    h = hist_t.shape[1]
    if not hist_head.any():
        return hist_t, hist_v
    cell = (np.arange(h)[None, :] + hist_head[:, None]) % h
    return np.take_along_axis(hist_t, cell, axis=1), np.take_along_axis(hist_v, cell, axis=1)


@dataclass(frozen=True, slots=True)
class Recent:
    """The usual case, without laying anything out: every batch reading is newer than what is
    remembered (nothing late, no duplicate). Entries are this batch's valid readings of each
    segment, in (segment, time) order; the remembered readings stay in their rings (m, H). A
    window is addressed by *merged* indices: per segment, 0..hist_n-1 are the remembered
    readings (oldest first), hist_n.. the batch's, so a window may start in the history and
    end in the batch. Sums for the slope are running sums over the batch entries plus, where
    a window reaches back, running sums along the rings concerned."""

    seg: IntArray  # (E,) segment of each entry, nondecreasing
    t: IntArray
    v: FloatArray
    x: FloatArray
    rank: IntArray  # (E,) rank within the segment's batch entries
    merged: IntArray  # (E,) merged index: hist_n of the segment + rank
    seg_start: IntArray  # (m,) first entry of each segment (every segment has one or more)
    count: IntArray  # (m,) entries per segment
    hist_t: IntArray  # (m, H) rings
    hist_v: FloatArray
    hist_n: IntArray  # (m,)
    oldest: IntArray  # (m,) cell of the oldest remembered reading
    magnitude: BoolArray  # (m,)
    batch_at: IntArray  # entry of each batch row given: all of them, in order
    history_len: int
    _key: IntArray
    _key_base: int
    _key_shift: int

    @classmethod
    def build(
        cls,
        rules: CompiledRules,
        pos: npt.NDArray[np.int32],
        *,
        hist_t: IntArray,
        hist_v: FloatArray,
        hist_n: npt.NDArray[np.int32],
        hist_head: npt.NDArray[np.int32],
        row_seg: IntArray,
        row_t: IntArray,
        row_v: FloatArray,
    ) -> Recent:
        """Like `History.build` with every row new; every segment must have a row."""
        m, h = hist_t.shape
        count = np.bincount(row_seg, minlength=m).astype(np.int64)
        seg_start = np.cumsum(count) - count
        magnitude = rules.magnitude[pos]
        x = np.where(magnitude[row_seg], np.abs(row_v), row_v) if magnitude.any() else row_v
        base = (int(row_t.min()) if len(row_t) else 0) - 1
        span = (int(row_t.max()) if len(row_t) else 0) - base
        shift = max(1, span.bit_length())
        if shift + max(1, m.bit_length()) > 62:
            raise ValueError("a batch spans too long a time for the window search; split it")
        n = hist_n.astype(np.int64)
        rank = np.arange(len(row_seg), dtype=np.int64) - seg_start[row_seg]
        return cls(
            seg=row_seg, t=row_t, v=row_v, x=x, rank=rank, merged=n[row_seg] + rank,
            seg_start=seg_start, count=count, hist_t=hist_t, hist_v=hist_v, hist_n=n,
            oldest=(hist_head.astype(np.int64) - n) % h, magnitude=magnitude,
            batch_at=np.arange(len(row_seg), dtype=np.int64), history_len=h,
            _key=(row_seg << shift) | (row_t - base), _key_base=base, _key_shift=shift,
        )  # fmt: skip

    def _cell(self, seg: IntArray, index: IntArray) -> IntArray:
        """The ring cell of remembered reading `index` (0 the oldest) of each segment."""
        cell: IntArray = (self.oldest[seg] + index) % self.history_len
        return cell

    def _value_at(
        self, seg: IntArray, index: IntArray, new: npt.NDArray[G], old: npt.NDArray[G]
    ) -> npt.NDArray[G]:
        """The entry at merged `index` of each `seg`: `new` (per batch entry) or `old` (per
        ring cell)."""
        entry = self.seg_start[seg] + index - self.hist_n[seg]
        back = np.flatnonzero(entry < self.seg_start[seg])  # in the history
        out: npt.NDArray[G] = new[np.maximum(entry, 0)]
        if not len(back):
            return out
        out[back] = old[seg[back], self._cell(seg[back], index[back])]
        return out

    def window_start(self, at: IntArray, window_us: IntArray) -> IntArray:
        """Merged index of the first entry of the window ending at each entry `at`."""
        seg = self.seg[at]
        low = self.t[at] - window_us
        query = (seg << self._key_shift) | np.maximum(low - self._key_base, 0)
        first_new = np.searchsorted(self._key, query, side="left") - self.seg_start[seg]
        hn = self.hist_n[seg]
        start = hn + first_new
        back = np.flatnonzero((first_new == 0) & (hn > 0))
        if len(back):
            # The window reaches the history: binary search over its remembered readings.
            row = seg[back]
            lo = np.zeros(len(back), dtype=np.int64)
            hi = hn[back].copy()
            target = low[back]
            while True:
                open_ = lo < hi
                if not open_.any():
                    break
                mid = (lo + hi) >> 1
                below = self.hist_t[row, self._cell(row, np.minimum(mid, hi - 1))] < target
                lo = np.where(open_ & below, mid + 1, lo)
                hi = np.where(open_ & ~below, mid, hi)
            start[back] = lo
        counted: IntArray = np.maximum(start, self.merged[at] - self.history_len + 1)
        return counted

    def covered(self, at: IntArray, start: IntArray, window_us: IntArray) -> BoolArray:
        """Windows whose readings span at least half of the window (two readings or more)."""
        t0 = self._value_at(self.seg[at], start, self.t, self.hist_t)
        covered: BoolArray = (start < self.merged[at]) & ((self.t[at] - t0) * 2 >= window_us)
        return covered

    def rate_per_min(
        self, at: IntArray, start: IntArray, window_us: IntArray, *, raw: bool = False
    ) -> FloatArray:
        """(x[at] - x[start]) per minute (`raw`: of the values v, not x); NaN where the
        window is not covered."""
        seg = self.seg[at]
        t0 = self._value_at(seg, start, self.t, self.hist_t)
        v0 = self._value_at(seg, start, self.v, self.hist_v)
        values = self.v
        if not raw:
            values = self.x
            v0 = np.where(self.magnitude[seg], np.abs(v0), v0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (values[at] - v0) / ((self.t[at] - t0) / 1e6) * 60.0
        r = np.asarray(r, dtype=np.float64)
        covered = (start < self.merged[at]) & ((self.t[at] - t0) * 2 >= window_us)
        return np.where(covered, r, np.nan)

    def slope(self, at: IntArray, start: IntArray) -> tuple[FloatArray, IntArray]:
        """Least-squares slope of x over t (per second) of each window, and its size; NaN
        where all times are equal. Times are in seconds from each segment's first entry."""
        seg = self.seg[at]
        first_t = self.t[self.seg_start]
        # Running sums over the entries of the segments evaluated here (whole segments).
        evaluated = np.zeros(len(self.seg_start), dtype=np.bool_)
        evaluated[seg] = True
        sel = np.flatnonzero(evaluated[self.seg])
        at_sel = np.full(len(self.seg), -1, dtype=np.int64)
        at_sel[sel] = np.arange(len(sel))
        ts = (self.t[sel] - first_t[self.seg[sel]]) / 1e6
        x = self.x[sel]
        zero = np.zeros(1)
        c_t = np.concatenate([zero, np.cumsum(ts)])
        c_x = np.concatenate([zero, np.cumsum(x)])
        c_tt = np.concatenate([zero, np.cumsum(ts * ts)])
        c_tx = np.concatenate([zero, np.cumsum(ts * x)])
        hn = self.hist_n[seg]
        new_from = at_sel[self.seg_start[seg]] + np.maximum(start - hn, 0)
        end = at_sel[at] + 1
        st = c_t[end] - c_t[new_from]
        sx = c_x[end] - c_x[new_from]
        stt = c_tt[end] - c_tt[new_from]
        stx = c_tx[end] - c_tx[new_from]
        back = np.flatnonzero(start < hn)
        if len(back):
            self._add_remembered(seg[back], start[back], first_t, (st, sx, stt, stx), back)
        n = self.merged[at] - start + 1
        denominator = n * stt - st * st
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (n * stx - st * sx) / denominator
        return np.where(denominator > 0, b, np.nan), n

    def _add_remembered(
        self,
        seg: IntArray,
        start: IntArray,
        first_t: IntArray,
        sums: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
        into: IntArray,
    ) -> None:
        """Add the sums over remembered readings `start..hist_n-1` of each `seg` (sorted) to
        `sums` at `into`: running sums along the rings concerned, a wrapped range in two
        parts."""
        new_row = first_of_segment(seg)
        rows = seg[new_row]
        which = np.cumsum(new_row) - 1
        h = self.history_len
        hn = self.hist_n[rows]
        ht = (self.hist_t[rows] - first_t[rows][:, None]) / 1e6
        hx = self.hist_v[rows]  # a copy (rows are gathered)
        mag = self.magnitude[rows]
        if mag.any():
            hx[mag] = np.abs(hx[mag])
        if (hn < h).any():  # rings not yet full: zero their empty cells
            empty = (np.arange(h)[None, :] - self.oldest[rows][:, None]) % h >= hn[:, None]
            ht[empty] = 0.0
            hx[empty] = 0.0
        first = self._cell(seg, start)  # the range's first cell
        stop = first + self.hist_n[seg] - start  # past the end of the ring: it wraps
        wraps = np.flatnonzero(stop > h)
        base = which * (h + 1)
        hi = base + np.minimum(stop, h)
        lo = base + first
        wrap_hi = base[wraps] + stop[wraps] - h
        c = np.zeros((len(rows), h + 1))
        for acc, cells in zip(sums, (ht, hx, ht * ht, ht * hx), strict=True):
            np.cumsum(cells, axis=1, out=c[:, 1:])
            flat = c.ravel()
            total = flat[hi] - flat[lo]
            total[wraps] += flat[wrap_hi]
            acc[into] += total

    def remember(self, rows: Rows, at: IntArray) -> None:
        """Append each segment's entries to its ring in `rows` (rows `at`, aligned with the
        segments): the last H of them, overwriting the oldest."""
        h = self.history_len
        keep = self.rank >= (self.count - h)[self.seg]  # the last H of each segment
        seg = self.seg[keep]
        head = rows.hist_head[at].astype(np.int64)
        cell = (head[seg] + self.rank[keep]) % h
        target = at[seg]
        rows.hist_t[target, cell] = self.t[keep]
        rows.hist_v[target, cell] = self.v[keep]
        rows.hist_n[at] = np.minimum(self.hist_n + self.count, h)
        rows.hist_head[at] = (head + self.count) % h


def _rank(seg: IntArray, per_seg: IntArray) -> IntArray:
    """0-based rank of each row within its segment (rows sorted by segment)."""
    start = np.cumsum(per_seg) - per_seg
    return np.arange(len(seg), dtype=np.int64) - start[seg]


def rate_tier(
    rules: CompiledRules, pos: npt.NDArray[np.int32], per_min: FloatArray
) -> npt.NDArray[np.int8]:
    """The rate rule's tier at each evaluated reading (`pos` per reading)."""
    rise = rules.rate_rise[pos]
    fall = rules.rate_fall[pos]
    hit = (per_min >= rise) | (-per_min >= fall)
    return np.where(hit, rules.rate_tier[pos], 0).astype(np.int8)


def trend_tier(
    rules: CompiledRules,
    pos: npt.NDArray[np.int32],
    x: FloatArray,
    slope: FloatArray,
    n: IntArray,
) -> npt.NDArray[np.int8]:
    """The trend rule's tier: the next tier's limit reached within the horizon."""
    projected = x + slope * rules.trend_horizon_s[pos]
    enough = (n >= rules.trend_min_points[pos]) & ~np.isnan(slope)
    tier = np.zeros(len(pos), dtype=np.int8)
    for side in (1, 0):  # the high side wins: assign it last
        limits = rules.limit[side * 4 : side * 4 + 4][:, pos]  # (4, E)
        beyond = x[None, :] < limits if side == 0 else x[None, :] > limits  # NaN: False
        exists = beyond.any(axis=0)
        level = np.argmax(beyond, axis=0)
        limit = np.take_along_axis(limits, level[None, :], axis=0)[0]
        if side == 0:
            hit = exists & (slope > 0) & (projected >= limit)
        else:
            hit = exists & (slope < 0) & (projected <= limit)
        tier = np.where(enough & hit, (level + 1).astype(np.int8), tier)
    return tier
