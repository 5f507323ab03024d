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

import numpy as np
import numpy.typing as npt

from alerting.rules import CompiledRules
from alerting.segments import BoolArray, IntArray
from alerting.state import NEVER

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class History:
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
        all_new: bool,
    ) -> History:
        """`pos` and the history arrays are per segment; rows are this batch's valid readings
        of those segments in (segment, time) order; `all_new` if every one is accepted (newer
        than anything remembered, no duplicates). A segment's remembered readings older than
        its `cutoff` can be in no window of this batch, nor of a later one (later readings
        are newer): they are left out, and out of what is remembered next."""
        m, h = hist_t.shape
        hist_n = np.minimum(hist_n, (hist_t >= cutoff[:, None]).sum(axis=1)).astype(np.int32)
        keep = np.arange(h)[None, :] >= (h - hist_n)[:, None]
        h_seg = np.repeat(np.arange(m, dtype=np.int64), hist_n)
        h_t = hist_t[keep]
        h_v = hist_v[keep]
        n_rows = np.bincount(row_seg, minlength=m).astype(np.int64)
        if all_new:
            # Usual case: every batch reading is newer than what is remembered; lay the
            # history of each segment in front of its batch readings.
            per_seg = hist_n.astype(np.int64) + n_rows
            offset = np.cumsum(per_seg) - per_seg
            total = int(per_seg.sum())
            seg = np.repeat(np.arange(m, dtype=np.int64), per_seg)
            t = np.empty(total, dtype=np.int64)
            v = np.empty(total, dtype=np.float64)
            h_at = offset[h_seg] + _rank(h_seg, hist_n.astype(np.int64))
            batch_at = offset[row_seg] + hist_n[row_seg] + _rank(row_seg, n_rows)
            t[h_at], v[h_at] = h_t, h_v
            t[batch_at], v[batch_at] = row_t, row_v
        else:
            # Late readings: merge by time, remembered entries first at equal times, and drop
            # a reading whose (sensor, time) is already there.
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
        self, at: IntArray, start: IntArray, window_us: IntArray, values: FloatArray
    ) -> FloatArray:
        """(values[at] - values[start]) per minute; NaN where the window is not covered."""
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
        hist_t = np.full((m, h), NEVER, dtype=np.int64)
        hist_v = np.full((m, h), np.nan)
        # One flat copy: entry `seg_end - count + k` goes to cell `h - count + k` of its row.
        row = np.repeat(np.arange(m, dtype=np.int64), count)
        rank = _rank(row, count)
        src = (self.seg_end - count)[row] + rank
        dst = row * h + (h - count)[row] + rank
        hist_t.ravel()[dst] = self.t[src]
        hist_v.ravel()[dst] = self.v[src]
        return hist_t, hist_v, count.astype(np.int32)


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
