"""How a readings query is answered within `max_points`, decided before any SQL runs (pure).

- `raw`: the range holds at most `max_points` readings: every reading is returned.
- `raw_buckets`: buckets shorter than a minute: `time_bucket` over raw readings.
- `rollup`: buckets of whole minutes: `time_bucket` over `readings_1m`, one row per sensor per
  minute, so 30 days of 1 s data is 43,200 rollup rows instead of 2.6 million readings.

Every bucket carries min and max besides the mean, so a single-sample spike stays visible at any
zoom. Bucket widths are "nice" (1, 2, 5, 10, 15, 30 s; 1, 2, 5, 10, 15, 30 min; 1, 2, 3, 6, 12 h;
1, 2, 7 days...) and wide enough that the range never yields more than `max_points` buckets,
counting the partial buckets at both ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Source = Literal["raw", "raw_buckets", "rollup"]

_NICE_S = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800,
)  # fmt: skip
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Plan:
    source: Source
    bucket_s: int | None  # None for raw


def bucket_width_s(span_s: float, max_points: int) -> int:
    """The smallest nice width giving at most `max_points` buckets over `span_s`: a range cut
    into buckets aligned to the epoch touches at most floor(span / width) + 1 of them."""
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    need = span_s / (max_points - 1)
    for width in _NICE_S:
        if width >= need:
            return width
    return math.ceil(need / DAY_S) * DAY_S


def plan(start: datetime, end: datetime, *, max_points: int, expected_rows: float | None) -> Plan:
    """`expected_rows` is what the range holds if known (from a count or the sensor's period);
    None means unknown, and the caller tries raw first with a row limit."""
    if end <= start:
        raise ValueError("end must be after start")
    if expected_rows is not None and expected_rows <= max_points:
        return Plan("raw", None)
    width = bucket_width_s((end - start).total_seconds(), max_points)
    return Plan("raw_buckets" if width < 60 else "rollup", width)
