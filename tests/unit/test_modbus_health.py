"""Backoff, the per-unit breaker and the log limiter, driven with plain numbers."""

from __future__ import annotations

import logging
import random

import pytest

from ingest.modbus_health import Backoff, Breaker, LogLimiter
from ingest.modbus_line import plausible_mbap


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    rng = random.Random(1)
    backoff = Backoff(0.25, 2.0)
    delays = [backoff.next_delay(rng) for _ in range(7)]
    for delay, base in zip(delays, [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    backoff.reset()
    assert backoff.next_delay(rng) <= 0.3


def test_breaker_trips_after_n_failures_and_probes_with_backoff() -> None:
    rng = random.Random(2)
    breaker = Breaker(trip_after=3, probe_min_s=1.0, probe_max_s=8.0)
    assert not breaker.record_failure(0.0, rng)
    assert not breaker.record_failure(1.0, rng)
    assert breaker.allows(1.5)
    assert breaker.record_failure(2.0, rng)  # third failure opens it
    assert not breaker.allows(2.1)
    assert breaker.allows(2.0 + 1.2)  # first probe after about probe_min_s
    waits = []
    now = 3.2
    for _ in range(5):  # failed probes: the wait doubles up to probe_max_s
        assert not breaker.record_failure(now, rng)
        waits.append(breaker.probe_at - now)
        now = breaker.probe_at
    assert waits[0] == pytest.approx(2.0, rel=0.2)
    assert waits[-1] == pytest.approx(8.0, rel=0.2)
    assert breaker.record_success()  # a good probe closes it
    assert breaker.allows(now) and breaker.failures == 0
    assert not breaker.record_success()


def test_log_limiter_pairs_a_failure_with_its_recovery_then_goes_quiet() -> None:
    limiter = LogLimiter(quiet_s=60.0)
    loud = [limiter.level(t, logging.WARNING) for t in (0.0, 5.0, 6.0, 7.0, 8.0)]
    assert loud == [logging.WARNING, logging.WARNING, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    assert limiter.take_suppressed() == 3
    assert limiter.level(70.0, logging.WARNING) == logging.WARNING  # quiet time is over


@pytest.mark.parametrize(
    ("frame", "ok"),
    [
        (bytes.fromhex("0001 0000 0007 01 03 04 0001 0002".replace(" ", "")), True),
        (bytes.fromhex("0001 0000 0003 01 83 02".replace(" ", "")), True),  # exception reply
        (bytes.fromhex("0001 0000 00".replace(" ", "")), True),  # still arriving
        (bytes.fromhex("0001 0001 0007 01 03 04 0001 0002".replace(" ", "")), False),  # pid
        (bytes.fromhex("0001 0000 0007 01 03 06 0001 0002".replace(" ", "")), False),  # count
        (bytes.fromhex("0001 0000 0003 01 10 02".replace(" ", "")), False),  # not a read
        (bytes.fromhex("0001 0000 0400 01 03".replace(" ", "")), False),  # length
        (b"\xde\xad\xbe\xef\x00\x00\x00\x00\x00", False),
    ],
)
def test_plausible_mbap(frame: bytes, ok: bool) -> None:
    assert plausible_mbap(frame) is ok
