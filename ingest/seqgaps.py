"""Sequence-gap detection: messages a device numbered but that never reached us.

Devices number their messages (`seq` in the MQTT payload). A jump in a device's numbers opens a
gap; a late or redelivered message fills its place. What is still missing `grace_s` after the
gap opened is reported once, so a loss upstream of the broker (a broker crash that lost
acknowledged messages, a gateway buffer that overflowed) becomes visible within a minute
instead of staying a silent hole in the data (RELIABILITY.md R2).

Pure: the caller passes the time (monotonic seconds). Gaps are kept as ranges, so a device
that jumps by a million costs one entry; a device keeps at most `MAX_RANGES` of them, the
oldest reported early beyond that. A device whose numbers fall far below its highest (a restart
from 0) starts afresh, and what was still missing from before the restart is reported at once:
nothing will fill it any more.

A device's ranges are kept in the order of their numbers, which is also the order they opened
(a range opens above every earlier one; a late message splits a range in place), so `due` looks
only at the head of each list and `_fill` finds a range by binary search.

What is open when ingest stops is forgotten: a gap not yet due at a restart is not reported.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

RESTART_DROP = 1_000  # a number this far below the highest seen means the device restarted
MAX_RANGES = 1_000  # per device; beyond it the oldest ranges are reported at once


@dataclass(frozen=True, slots=True)
class Gap:
    """A device's missing message numbers, reported together: one or more (first, last) ranges."""

    device: str
    ranges: tuple[tuple[int, int], ...]
    opened_at_s: float  # when the earliest of them opened

    @property
    def first_seq(self) -> int:
        return self.ranges[0][0]

    @property
    def last_seq(self) -> int:
        return self.ranges[-1][1]

    @property
    def missing(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


@dataclass(slots=True)
class _Device:
    highest: int
    missing: list[list[float]] = field(default_factory=list)  # [first, last, opened_at_s]


class SeqGapTracker:
    def __init__(self, *, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self._devices: dict[str, _Device] = {}

    def observe(self, device: str, seq: int, now_s: float) -> list[Gap]:
        """Note one message number; returns gaps to report at once (too many ranges kept, or
        the device restarted with numbers still missing)."""
        if seq < 0:
            return []
        state = self._devices.get(device)
        if state is None:
            self._devices[device] = _Device(highest=seq)
            return []
        if seq > state.highest:
            if seq > state.highest + 1:
                state.missing.append([state.highest + 1, seq - 1, now_s])
            state.highest = seq
            return self._overflow(device, state)
        if _fill(state.missing, seq):
            return self._overflow(device, state)  # a split adds a range
        if seq < state.highest - RESTART_DROP:  # restarted: what is missing will never come
            self._devices[device] = _Device(highest=seq)
            return [_gap(device, state.missing)] if state.missing else []
        return []

    def due(self, now_s: float) -> list[Gap]:
        """Gaps still open `grace_s` after they opened, one report per device: reported once,
        then forgotten. A device's ranges are kept in the order they opened, so only the due
        ones are looked at (a device that numbers its messages wrongly costs one report per
        call, not one per message)."""
        found: list[Gap] = []
        for device, state in self._devices.items():
            missing = state.missing
            cut = 0
            while cut < len(missing) and now_s - missing[cut][2] >= self.grace_s:
                cut += 1
            if cut:
                found.append(_gap(device, missing[:cut]))
                del missing[:cut]
        return found

    def open_gaps(self, device: str) -> list[tuple[int, int]]:
        state = self._devices.get(device)
        return [] if state is None else [(int(a), int(b)) for a, b, _ in state.missing]

    def _overflow(self, device: str, state: _Device) -> list[Gap]:
        if len(state.missing) <= MAX_RANGES:
            return []
        cut = len(state.missing) - MAX_RANGES
        early = state.missing[:cut]
        del state.missing[:cut]
        return [_gap(device, early)]


def _gap(device: str, ranges: list[list[float]]) -> Gap:
    return Gap(device, tuple((int(a), int(b)) for a, b, _ in ranges), ranges[0][2])


def _fill(missing: list[list[float]], seq: int) -> bool:
    """Remove `seq` from the missing ranges (sorted by number); False if it was not missing."""
    i = bisect_right(missing, seq, key=lambda r: int(r[0])) - 1
    if i < 0:
        return False
    first, last, opened = missing[i]
    if seq > last:
        return False
    pieces = []
    if first < seq:
        pieces.append([first, seq - 1, opened])
    if seq < last:
        pieces.append([seq + 1, last, opened])
    missing[i : i + 1] = pieces
    return True
