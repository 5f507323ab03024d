"""One pass over a batch of readings: sorted by (sensor, time), cut into segments (one per
sensor), late readings and duplicates marked, and the working state rows of those sensors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerting.rules import CompiledRules
from alerting.segments import (
    BoolArray,
    IntArray,
    first_of_segment,
    segment_bounds,
    segment_ids,
    sort_order,
)
from alerting.state import EngineState, StateDelta
from hazwatch.domain import BAD_QUALITY_MIN, Quality, ReadingBatch

FloatArray = npt.NDArray[np.float64]
PosArray = npt.NDArray[np.int32]


class BatchRows:
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
        self.work = self.before.copy_without_history()
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
