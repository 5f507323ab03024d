"""Failed-authentication limiter (RELIABILITY S6): a client that presents too many bad tokens in
a minute gets 429 with Retry-After, and its requests are refused before any database work.

Pure and clocked by the caller: `monotonic_s` is passed in. State is per process and bounded:
at most `max_clients` clients are tracked; the oldest are forgotten first.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque


class FailureLimiter:
    def __init__(
        self, *, per_minute: int, window_s: float = 60.0, max_clients: int = 10_000
    ) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now_s: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now_s - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after_s(self, client: str, now_s: float) -> int | None:
        """Seconds to wait when the client is over its limit, else None."""
        times = self._recent(client, now_s)
        if len(times) < self.per_minute:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now_s))

    def failed(self, client: str, now_s: float) -> None:
        times = self._failures.get(client)
        if times is None:
            times = self._failures[client] = deque()
        else:
            self._failures.move_to_end(client)
        times.append(now_s)
        while len(times) > self.per_minute:
            times.popleft()
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
