"""The simulated stream written out: JSON lines (one telemetry object per line, with its site
and device: the replay harness's input) or CSV (one row per channel, for spreadsheets and
pandas). Non-finite garbage values are written as NaN/Infinity tokens in JSON and as `nan`/`inf`
in CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterable
from typing import TextIO

import orjson

from simulators.payload import reading_object
from simulators.simulation import DeviceReading

CSV_COLUMNS = ("ts_ms", "ts", "site", "device", "channel", "value", "quality", "seq")


def write_jsonl(readings: Iterable[DeviceReading], out: TextIO) -> int:
    count = 0
    for r in readings:
        obj = {"site": r.site, "device": r.device, **reading_object(r)}
        if all(v is None or math.isfinite(v) for v in r.values.values()):
            out.write(orjson.dumps(obj).decode())
        else:
            out.write(json.dumps(obj, separators=(",", ":"), allow_nan=True))
        out.write("\n")
        count += 1
    return count


def write_csv(readings: Iterable[DeviceReading], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for r in readings:
        iso = dt.datetime.fromtimestamp(r.ts_ms / 1000, tz=dt.UTC).isoformat(
            timespec="milliseconds"
        )
        for channel, value in r.values.items():
            cell = "" if value is None else repr(value)
            writer.writerow(
                (r.ts_ms, iso, r.site, r.device, channel, cell, r.quality.get(channel, 0), r.seq)
            )
        count += 1
    return count
