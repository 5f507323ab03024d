"""Sequence-gap detection: messages a device numbered but that never reached us.

Devices number their messages (`seq` in the MQTT payload). A jump in a device's numbers opens a
gap; a late or redelivered message fills its place. What is still missing `grace_s` after the
gap opened is reported once, so a loss upstream of the broker (a broker crash that lost
acknowledged messages, a gateway buffer that overflowed) becomes visible within a minute
instead of staying a silent hole in the data (RELIABILITY.md R2).

Pure: the caller passes the time. Gaps are kept as ranges, so a device that jumps by a million
costs one entry; a device whose numbers fall far below its highest (a restart from 0) starts
afresh without reporting the old numbers as lost.
"""

from __future__ import annotations

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
        """Note one message number; returns gaps that had to be reported early (too many)."""
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
        if not _fill(state.missing, seq) and seq < state.highest - RESTART_DROP:
            self._devices[device] = _Device(highest=seq)  # restarted: old gaps are moot
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
    """Remove `seq` from the missing ranges; False if it was not missing (a duplicate)."""
    for i, (first, last, opened) in enumerate(missing):
        if first <= seq <= last:
            pieces = []
            if first < seq:
                pieces.append([first, seq - 1, opened])
            if seq < last:
                pieces.append([seq + 1, last, opened])
            missing[i : i + 1] = pieces
            return True
    return False
