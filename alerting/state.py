"""The engine's state: numpy arrays indexed by sensor position, and the deltas that move it.

The engine never changes a state: it returns a `StateDelta` (the new rows of the sensors it
touched). `EngineState.updated` gives a new state; `EngineState.apply` writes the delta into
this one, for the owner that adopts it after its database transaction committed.

Latches are indexed `side * 4 + level - 1` (0..3 high blue..red, 4..7 low blue..red); tiers
by `Rule` (HIGH..QUALITY). History holds each sensor's last H valid readings, right-aligned:
the newest in column H-1, `hist_n` of them valid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Self

import numpy as np
import numpy.typing as npt

NEVER = -(2**62)  # "no time yet": far below any real timestamp, far from int64 overflow
COMPACT_FIELDS = ("raw", "delayed", "since", "tier", "member_ts")  # persisted when changed


@dataclass(frozen=True, slots=True)
class Rows:
    """The state arrays of some sensors; as a state (`EngineState`) or a delta's new rows."""

    eval_ts: npt.NDArray[np.int64]  # the sensor's clock: latest reading or fired timer applied
    last_ts: npt.NDArray[np.int64]  # latest reading stored (accepted or late), any quality
    last_valid: npt.NDArray[np.float64]  # value of the latest accepted valid reading
    raw: npt.NDArray[np.bool_]  # (n, 8) R
    delayed: npt.NDArray[np.bool_]  # (n, 8) D
    since: npt.NDArray[np.int64]  # (n, 8) when R last changed (hold: the last set)
    tier: npt.NDArray[np.int8]  # (n, 6) per rule
    member_ts: npt.NDArray[np.int64]  # when max(high, low) tier last changed (vote clock)
    hist_t: npt.NDArray[np.int64]  # (n, H)
    hist_v: npt.NDArray[np.float64]  # (n, H)
    hist_n: npt.NDArray[np.int32]

    @classmethod
    def blank(cls, n: int, history_len: int, *, last_ts_us: int | None = None) -> Self:
        return cls(
            eval_ts=np.full(n, NEVER, dtype=np.int64),
            last_ts=np.full(n, NEVER if last_ts_us is None else last_ts_us, dtype=np.int64),
            last_valid=np.full(n, np.nan),
            raw=np.zeros((n, 8), dtype=np.bool_),
            delayed=np.zeros((n, 8), dtype=np.bool_),
            since=np.full((n, 8), NEVER, dtype=np.int64),
            tier=np.zeros((n, 6), dtype=np.int8),
            member_ts=np.full(n, NEVER, dtype=np.int64),
            hist_t=np.full((n, history_len), NEVER, dtype=np.int64),
            hist_v=np.full((n, history_len), np.nan),
            hist_n=np.zeros(n, dtype=np.int32),
        )

    def __len__(self) -> int:
        return len(self.eval_ts)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def take(self, index: npt.NDArray[np.intp]) -> Rows:
        """Copies of the rows at `index`."""
        return Rows(**{k: v[index] for k, v in self.arrays().items()})

    def copy(self) -> Rows:
        return Rows(**{k: v.copy() for k, v in self.arrays().items()})

    def copy_without_history(self) -> Rows:
        """A copy sharing the history arrays (the large ones) with this one."""
        history = ("hist_t", "hist_v", "hist_n")
        return Rows(**{k: v if k in history else v.copy() for k, v in self.arrays().items()})


@dataclass(frozen=True, slots=True)
class StateDelta:
    """New rows for the sensor positions `index` (unique; in any order: `then` may chain
    deltas without sorting them); `persist` marks the rows
    whose latches, since-times or tiers changed (they are written to alarm_engine_state)."""

    index: npt.NDArray[np.intp]
    rows: Rows
    persist: npt.NDArray[np.bool_]

    @classmethod
    def empty(cls, history_len: int) -> StateDelta:
        return cls(np.zeros(0, dtype=np.intp), Rows.blank(0, history_len), np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.index)

    def then(self, later: StateDelta) -> StateDelta:
        """This delta followed by `later` (whose rows win where both touch a sensor)."""
        if not len(later):
            return self
        if not len(self):
            return later
        if not np.isin(later.index, self.index).any():
            # The usual case (derived sensors after measured ones): the rows just add up.
            return StateDelta(
                np.concatenate([self.index, later.index]),
                Rows(**{
                    name: np.concatenate([a, getattr(later.rows, name)])
                    for name, a in self.rows.arrays().items()
                }),
                np.concatenate([self.persist, later.persist]),
            )  # fmt: skip
        # Either index may be out of order (a chained delta): look rows up through sorters.
        index = np.union1d(self.index, later.index)
        mine = ~np.isin(index, later.index)
        take_self = _positions(self.index, index[mine])
        theirs = index[~mine]
        take_later = _positions(later.index, theirs)
        arrays = {}
        for name, a in self.rows.arrays().items():
            b = getattr(later.rows, name)
            out = np.empty((len(index), *a.shape[1:]), dtype=a.dtype)
            out[mine] = a[take_self]
            out[~mine] = b[take_later]
            arrays[name] = out
        persist = np.empty(len(index), dtype=np.bool_)
        persist[mine] = self.persist[take_self]
        # A row both deltas touch is persisted if either changed it.
        later_persist = later.persist[take_later]
        both = np.isin(theirs, self.index)
        later_persist[both] |= self.persist[_positions(self.index, theirs[both])]
        persist[~mine] = later_persist
        return StateDelta(index, Rows(**arrays), persist)


def _positions(keys: npt.NDArray[np.intp], wanted: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Where each of `wanted` is in `keys` (unique, in any order; every one present)."""
    order = np.argsort(keys, kind="stable")
    found: npt.NDArray[np.intp] = order[np.searchsorted(keys, wanted, sorter=order)]
    return found


@dataclass(frozen=True, slots=True)
class EngineState:
    rows: Rows

    @classmethod
    def empty(cls, n: int, history_len: int, *, last_ts_us: int | None = None) -> EngineState:
        """A state with nothing seen. `last_ts_us` starts the stale timers of sensors that never
        report (typically the service's start time); None leaves them off until a reading."""
        return cls(Rows.blank(n, history_len, last_ts_us=last_ts_us))

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def history_len(self) -> int:
        return int(self.rows.hist_t.shape[1])

    def gather(self, index: npt.NDArray[np.intp], overlay: StateDelta | None = None) -> Rows:
        """Copies of the rows at `index`, with `overlay`'s rows where it has them."""
        rows = self.rows.take(index)
        if overlay is not None and len(overlay):
            order = np.argsort(overlay.index)
            sorted_index = overlay.index[order]
            at = np.minimum(np.searchsorted(sorted_index, index), len(sorted_index) - 1)
            hit = sorted_index[at] == index
            at = order[at]
            if hit.any():
                for name, a in rows.arrays().items():
                    a[hit] = getattr(overlay.rows, name)[at[hit]]
        return rows

    def updated(self, delta: StateDelta) -> EngineState:
        """A new state with the delta applied; this one is left as it is."""
        new = EngineState(self.rows.copy())
        new.apply(delta)
        return new

    def apply(self, delta: StateDelta) -> None:
        """Write the delta into this state (for its single owner, after commit)."""
        if not len(delta):
            return
        for name, a in self.rows.arrays().items():
            a[delta.index] = getattr(delta.rows, name)

    def with_rows(self, **arrays: npt.NDArray[Any]) -> EngineState:
        return EngineState(replace(self.rows, **arrays))
