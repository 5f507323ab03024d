"""Where a publisher's readings come from: a live simulation, or a recorded stream.

Both give readings in virtual time: `advance_to(t_ms)` returns what is due up to t_ms, and
`next_due_ms()` says when the next one is (None: nothing more will come).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from hazwatch.errors import SimulatorError
from simulators.simulation import DeviceReading


class ReadingSource(Protocol):
    start_ms: int

    @property
    def device_sites(self) -> Mapping[str, str]: ...

    def advance_to(self, t_ms: int) -> list[DeviceReading]: ...

    def next_due_ms(self) -> int | None: ...

    def link_down(self, device: str) -> bool: ...


class RecordedSource:
    """A JSON-lines export (`hazwatch simulate export --format jsonl`) replayed in file order:
    a line is released once virtual time reaches its timestamp, and never before the line above
    it. `shift_ms` moves every timestamp (replaying an old recording as if it were now)."""

    def __init__(self, path: Path, *, shift_ms: int = 0) -> None:
        self._path = path
        self._shift_ms = shift_ms
        self._sites: dict[str, str] = {}
        first: int | None = None
        for reading in self._lines():  # one pass for the devices and the start
            self._sites.setdefault(reading.device, reading.site)
            first = reading.ts_ms if first is None else first
        if first is None:
            raise SimulatorError(f"{path}: no readings to replay")
        self.start_ms = first
        self._iter = self._lines()
        self._next: DeviceReading | None = next(self._iter, None)

    @property
    def device_sites(self) -> Mapping[str, str]:
        return self._sites

    def _lines(self) -> Iterator[DeviceReading]:
        with self._path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield self._parse(line, number)

    def _parse(self, line: bytes, number: int) -> DeviceReading:
        try:
            obj = _loads(line)
            return DeviceReading(
                site=str(obj["site"]),
                device=str(obj["device"]),
                ts_ms=int(obj["ts"]) + self._shift_ms,
                values=dict(obj["values"]),
                quality={str(k): int(v) for k, v in obj.get("quality", {}).items()},
                seq=int(obj["seq"]),
            )
        except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise SimulatorError(f"{self._path}:{number}: not an exported reading: {exc}") from exc

    def advance_to(self, t_ms: int) -> list[DeviceReading]:
        out = []
        while self._next is not None and self._next.ts_ms <= t_ms:
            out.append(self._next)
            self._next = next(self._iter, None)
        return out

    def next_due_ms(self) -> int | None:
        return None if self._next is None else self._next.ts_ms

    def link_down(self, device: str) -> bool:
        return False


def _loads(line: bytes) -> Any:
    """orjson for speed; the standard parser for lines whose garbage values were written as
    NaN/Infinity tokens, which strict JSON refuses."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
