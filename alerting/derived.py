"""Derived signals computed from a pass's readings: flow imbalance (derived rates are
windows, in `alerting.engine._windows`), and the batch of derived readings to store."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerting.batch import BatchRows
from alerting.rules import CompiledRules
from alerting.segments import IntArray, first_of_segment, last_true_index
from hazwatch.domain import ReadingBatch

FloatArray = npt.NDArray[np.float64]
PosArray = npt.NDArray[np.int32]


def imbalance(b: BatchRows) -> list[tuple[PosArray, IntArray, FloatArray]]:
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


def derived_batch(
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
