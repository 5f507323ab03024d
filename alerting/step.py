"""What an evaluation returns, and the bookkeeping every pass does on its working rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.segments import BoolArray
from alerting.state import COMPACT_FIELDS, Rows, StateDelta
from alerting.transitions import Transitions
from alerting.votes import MemberChanges
from hazwatch.domain import ReadingBatch


@dataclass(frozen=True, slots=True)
class Step:
    """What one evaluation produced. Apply `delta` to the state to move on."""

    transitions: Transitions  # in transition order (time, then sensor rules, then votes)
    delta: StateDelta
    derived: ReadingBatch  # readings of derived sensors, to be stored
    accepted: int = 0
    late: int = 0  # stored but older than the sensor's clock: no effect on alarms
    unknown: int = 0  # sensor ids the rules do not know


def note_member_changes(spos: npt.NDArray[np.int32], work: Rows, changes: MemberChanges) -> None:
    """Each changed sensor's member_ts: the time of its latest change (`spos` sorted)."""
    if len(changes.pos):
        pos, ts = changes.last_per_sensor()
        work.member_ts[np.searchsorted(spos, pos)] = ts


def compact_changed(before: Rows, after: Rows) -> BoolArray:
    changed = np.zeros(len(before), dtype=np.bool_)
    for name in COMPACT_FIELDS:
        a, b = getattr(before, name), getattr(after, name)
        diff = a != b
        changed |= diff.any(axis=1) if diff.ndim > 1 else diff
    return changed
