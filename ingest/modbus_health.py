"""Time and failure bookkeeping for the Modbus collector: clocks, backoff, the per-unit circuit
breaker and the log limiter. Pure state machines: every method takes `now` (monotonic seconds)
and, where it randomises, a random source, so tests drive them with plain numbers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

JITTER = 0.2  # delays are spread over +-20 %, so lines that failed together retry apart


class Clock(Protocol):
    """Where the collector reads time: a monotonic clock for schedules, the wall clock (epoch
    microseconds) for reading timestamps, and sleep."""

    def monotonic(self) -> float: ...

    def wall_us(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_us(self) -> int:
        return time.time_ns() // 1000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def jittered(delay_s: float, rng: random.Random) -> float:
    return delay_s * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


@dataclass(slots=True)
class Backoff:
    """Capped, jittered exponential backoff: min_s, 2 min_s, 4 min_s ... max_s."""

    min_s: float
    max_s: float
    attempts: int = 0

    def next_delay(self, rng: random.Random) -> float:
        base = min(self.max_s, self.min_s * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        return jittered(base, rng)

    def reset(self) -> None:
        self.attempts = 0


@dataclass(slots=True)
class Breaker:
    """Skips a unit that keeps failing, so it cannot hold the shared line for its neighbours.

    Closed: every scheduled poll is sent. After `trip_after` consecutive failures it opens:
    polls are skipped (and reported as failed without touching the line) until `probe_at`;
    then one probe poll goes out. A failed probe doubles the wait (up to `probe_max_s`); a
    successful one closes the breaker.
    """

    trip_after: int
    probe_min_s: float
    probe_max_s: float
    failures: int = 0
    is_open: bool = False
    probe_at: float = 0.0
    _backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        self._backoff = Backoff(self.probe_min_s, self.probe_max_s)

    def allows(self, now: float) -> bool:
        return not self.is_open or now >= self.probe_at

    def record_success(self) -> bool:
        """Count a good poll; True when this closes an open breaker."""
        was_open = self.is_open
        self.failures = 0
        self.is_open = False
        self._backoff.reset()
        return was_open

    def record_failure(self, now: float, rng: random.Random) -> bool:
        """Count a failed poll; True when this opens the breaker."""
        self.failures += 1
        if self.is_open or self.failures >= self.trip_after:
            opening = not self.is_open
            self.is_open = True
            self.probe_at = now + self._backoff.next_delay(rng)
            return opening
        return False


@dataclass(slots=True)
class LogLimiter:
    """Log state changes loudly, but a flapping device only once in a while.

    A change is loud when `quiet_s` have passed since the last loud one; the change that
    follows a loud one is loud too (so "down" is followed by its "up"). Anything else goes to
    debug and is counted in `suppressed`, which the next loud line reports.
    """

    quiet_s: float
    suppressed: int = 0
    _last_loud: float | None = None
    _closing_due: bool = False

    def level(self, now: float, loud: int) -> int:
        if self._closing_due:
            self._closing_due = False
        elif self._last_loud is None or now - self._last_loud >= self.quiet_s:
            self._closing_due = True
        else:
            self.suppressed += 1
            return logging.DEBUG
        self._last_loud = now
        return loud

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
