"""Array steps over rows grouped in segments (one segment per sensor, rows in time order).

These are the few tricks the engine is built from: sort rows by (sensor, time) cheaply, find
segment starts, and run a latch or a forward fill along each segment with one
`np.maximum.accumulate` (every segment starts with an anchor, so nothing leaks between them).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

G = TypeVar("G", bound=np.generic)
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def sort_order(pos: npt.NDArray[np.int32], ts: IntArray, n_sensors: int) -> IntArray | None:
    """An order of the rows by (position, ts), ties in arrival order; None if already so.

    Batches usually arrive in time order: then a stable sort by position alone is enough,
    and for fewer than 65,536 sensors numpy sorts uint16 keys with a radix sort (about 5x
    faster than sorting int64 keys)."""
    n = len(pos)
    if n < 2:
        return None
    ts_sorted = bool(np.all(ts[1:] >= ts[:-1]))
    if ts_sorted and bool(np.all(pos[1:] >= pos[:-1])):
        return None
    if ts_sorted:
        key = pos.astype(np.uint16) if n_sensors <= 65_536 else pos
        return np.argsort(key, kind="stable")
    t0 = int(ts.min())
    span = int(ts.max()) - t0
    bits = max(1, int(n_sensors).bit_length())
    if span < (1 << (62 - bits)):
        composite = (pos.astype(np.int64) << (62 - bits)) | (ts - t0)
        return np.argsort(composite, kind="stable")
    return np.lexsort((ts, pos)).astype(np.int64)


def first_of_segment(keys: npt.NDArray[np.integer]) -> BoolArray:
    """True where a row starts a new run of equal keys."""
    first = np.ones(len(keys), dtype=np.bool_)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def segment_ids(first: BoolArray) -> IntArray:
    """0-based segment number of each row."""
    return np.cumsum(first, dtype=np.int64) - 1


def latch(
    is_set: BoolArray, is_reset: BoolArray, first: BoolArray, initial: BoolArray
) -> BoolArray:
    """State after each row of a set/reset latch along segments. `initial` is the state
    before each row's segment (given per row; read only where `first`)."""
    idx = np.arange(len(is_set), dtype=np.int64) * 2
    code = np.where(is_set | is_reset, idx + is_set, -1)
    anchor = first & (code < 0)
    code[anchor] = idx[anchor] + initial[anchor]
    out: BoolArray = (np.maximum.accumulate(code) & 1).astype(np.bool_)
    return out


def last_true_index(mask: BoolArray, first: BoolArray) -> IntArray:
    """Index of the last row at or before each row (within its segment) where `mask` is
    true; -1 if none."""
    n = len(mask)
    idx = np.arange(n, dtype=np.int64)
    # Anchor each segment at -1 by a code below every index of the segment but above all
    # earlier segments' indices: segment start s gets (s - 0.5), encoded in doubled ints.
    code = np.where(mask, idx * 2 + 1, -1)
    start_code = idx * 2  # even: "nothing yet in this segment"
    code = np.where(first & ~mask, start_code, code)
    acc = np.maximum.accumulate(code) if n else code
    return np.where(acc & 1 == 1, acc >> 1, -1)


def shift_in_segment(
    values: npt.NDArray[G], first: BoolArray, initial: npt.NDArray[G]
) -> npt.NDArray[G]:
    """The previous row's value within the segment; `initial` (per row) at segment starts."""
    out = np.empty_like(values)
    if len(values):
        out[1:] = values[:-1]
        out[first] = initial[first]
    return out


def last_of_segment(first: BoolArray) -> BoolArray:
    """True where a row ends its segment (`first` marks where segments start)."""
    last = np.zeros(len(first), dtype=np.bool_)
    if len(first):
        last[:-1] = first[1:]
        last[-1] = True
    return last


def segment_bounds(first: BoolArray) -> tuple[IntArray, IntArray]:
    """Start and end (exclusive) index of each segment."""
    starts = np.flatnonzero(first).astype(np.int64)
    ends = np.empty_like(starts)
    if len(starts):
        ends[:-1] = starts[1:]
        ends[-1] = len(first)
    return starts, ends
