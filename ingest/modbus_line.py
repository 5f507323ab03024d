"""One Modbus line: a TCP connection to a device or gateway, and the schedule of every unit
behind it. `ModbusCollector` (ingest/modbus.py) builds one per (host, port); docs/modbus.md
describes the behaviour.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

import orjson
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from hazwatch.config import ModbusSettings
from hazwatch.domain import Quality, ReadingBatch
from ingest.modbus_decode import (
    DevicePlan,
    GroupPlan,
    GroupResult,
    ReadRequest,
    decode_group,
    failed_group,
)
from ingest.modbus_health import JITTER, Backoff, Breaker, Clock, LogLimiter
from ingest.modbus_metrics import ModbusMetrics

log = logging.getLogger(__name__)

SOURCE = "modbus"
GATEWAY_SLOW_EXCEPTIONS = frozenset({0x0A, 0x0B})  # the gateway waited for a dead unit


class ReadingSink(Protocol):
    """Where readings go: `ingest.batcher.Batcher` (awaits while full, never drops)."""

    async def put(
        self, batch: ReadingBatch, on_commit: Callable[[], None] | None = None
    ) -> None: ...


class QuarantineSink(Protocol):
    """Where values that must not be stored as good readings go, with a reason."""

    async def put(
        self, source: str, topic: str, reason: str, detail: str, payload: bytes
    ) -> None: ...


class Outcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"  # no answer within the device's timeout
    EXCEPTION = "exception"  # the device answered with a Modbus exception
    JUNK = "junk"  # an answer that is not a Modbus frame, or not the one asked for
    DISCONNECTED = "disconnected"  # the connection dropped during the poll
    REFUSED = "refused"  # the line could not connect (refused, reset, unreachable)
    CONNECT_TIMEOUT = "connect_timeout"  # the line's connection attempt timed out
    SKIPPED = "skipped"  # the unit's breaker is open: not polled, reported as failed


_QUALITY = {
    Outcome.TIMEOUT: int(Quality.COMM_TIMEOUT),
    Outcome.CONNECT_TIMEOUT: int(Quality.COMM_TIMEOUT),
    Outcome.JUNK: int(Quality.PROTOCOL_ERROR),
    Outcome.DISCONNECTED: int(Quality.COMM_REFUSED),
    Outcome.REFUSED: int(Quality.COMM_REFUSED),
    Outcome.SKIPPED: int(Quality.COMM_TIMEOUT),
}


@dataclass(frozen=True, slots=True)
class Failure:
    outcome: Outcome
    detail: str
    exception_code: int = 0

    @property
    def quality(self) -> int:
        if self.outcome is Outcome.EXCEPTION:
            return Quality.modbus_exception(self.exception_code)
        return _QUALITY[self.outcome]

    @property
    def trips_breaker(self) -> bool:
        """Failures that cost the shared line time or its connection: the ones a breaker
        protects the neighbours from."""
        if self.outcome is Outcome.EXCEPTION:
            return self.exception_code in GATEWAY_SLOW_EXCEPTIONS
        return self.outcome in (Outcome.TIMEOUT, Outcome.JUNK, Outcome.DISCONNECTED)


@dataclass(frozen=True, slots=True)
class PollRecord:
    """One scheduled poll, for observers (tests, the benchmark): monotonic times in seconds."""

    device: str
    group: str
    line: str
    scheduled: float
    started: float
    finished: float
    outcome: Outcome


@dataclass(slots=True)
class DeviceStats:
    polls_ok: int = 0
    polls_failed: Counter[str] = field(default_factory=Counter)
    missed: int = 0  # scheduled polls that could not start within their period
    rejected: int = 0  # values sent to quarantine
    consecutive_failures: int = 0
    last_error: str | None = None

    def copy(self) -> DeviceStats:
        return replace(self, polls_failed=Counter(self.polls_failed))


@dataclass(slots=True)
class DeviceState:
    plan: DevicePlan
    line: str
    breaker: Breaker
    limiter: LogLimiter
    stats: DeviceStats = field(default_factory=DeviceStats)
    up: bool | None = None
    last_failure: Failure | None = None
    faults: dict[str, frozenset[str]] = field(default_factory=dict)  # by status group

    def prior_faults(self, group: str) -> frozenset[str]:
        other = [f for g, f in self.faults.items() if g != group]
        return frozenset().union(*other) if other else frozenset()


@dataclass(slots=True)
class _Job:
    device: DeviceState
    group: GroupPlan


def plausible_mbap(buffer: bytes) -> bool:
    """Whether a client's receive buffer can be Modbus TCP answers to reads (FC 1-4), whole or
    still arriving. Anything else is junk and the connection is reset (RELIABILITY M3)."""
    i, n = 0, len(buffer)
    while n - i >= 6:
        if buffer[i + 2] or buffer[i + 3]:  # protocol id is always 0
            return False
        length = int.from_bytes(buffer[i + 4 : i + 6], "big")
        if not 3 <= length <= 254:
            return False
        if n - i >= 8:
            fc = buffer[i + 7]
            if fc & 0x80:
                if fc & 0x7F not in (1, 2, 3, 4) or length != 3:
                    return False
            elif fc not in (1, 2, 3, 4) or (n - i >= 9 and buffer[i + 8] != length - 3):
                return False
        i += 6 + length
    return True


class ModbusLine:
    """One TCP connection to a device or gateway, and the schedule of every unit behind it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        framer: str,
        devices: Sequence[DeviceState],
        sink: ReadingSink,
        quarantine: QuarantineSink,
        settings: ModbusSettings,
        metrics: ModbusMetrics,
        clock: Clock,
        rng: random.Random,
        on_poll: Callable[[PollRecord], None] | None,
    ) -> None:
        self.name = f"{host}:{port}"
        self._host, self._port, self._framer = host, port, framer
        self._devices = devices
        self._sink, self._quarantine = sink, quarantine
        self._settings, self._metrics = settings, metrics
        self._clock, self._rng, self._on_poll = clock, rng, on_poll
        self._shared = len({d.plan.unit for d in devices}) > 1
        self._jobs = [_Job(d, g) for d in devices for g in d.plan.groups]
        shortest = min((j.group.period_s for j in self._jobs), default=1.0)
        # Capped so that even a jittered wait is at most the shortest period: a device that
        # comes back is polled again within two periods.
        reconnect_cap = min(settings.reconnect_max_s, shortest / (1 + JITTER))
        self._backoff = Backoff(min(settings.reconnect_min_s, reconnect_cap), reconnect_cap)
        self._next_connect_at = 0.0
        self._line_failure: Failure | None = None
        self._line_timeouts = 0
        self._limiter = LogLimiter(settings.log_quiet_s)
        self._abort: asyncio.Future[Failure] | None = None
        # Our own per-request timeouts always fire first; pymodbus' timeout also bounds the
        # connection attempt, which `_connect` bounds itself.
        longest = max((d.plan.timeout_s for d in devices), default=1.0)
        self._client = AsyncModbusTcpClient(
            host,
            port=port,
            framer=FramerType.RTU if framer == "rtu" else FramerType.SOCKET,
            name=self.name,
            timeout=max(longest, settings.connect_timeout_s) + 1.0,
            retries=0,
            reconnect_delay=0,  # no background reconnect loop: this line reconnects itself
            trace_packet=self._trace_packet,
            trace_connect=self._trace_connect,
        )

    # --- the schedule ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled. Groups start spread over their period so that the units of
        a gateway do not all fall due at once."""
        start = self._clock.monotonic()
        heap: list[tuple[float, int, _Job]] = []
        for seq, job in enumerate(self._jobs):
            heap.append((start + job.group.period_s * seq / len(self._jobs), seq, job))
        heapq.heapify(heap)
        while heap:
            due, seq, job = heap[0]
            delay = due - self._clock.monotonic()
            if delay > 0:
                await self._clock.sleep(delay)
                continue  # re-check: the clock may wake early
            heapq.heappop(heap)
            started = self._clock.monotonic()
            self._metrics.lateness.labels(self.name).observe(started - due)
            outcome = await self._poll(job)
            finished = self._clock.monotonic()
            if self._on_poll is not None:
                self._on_poll(
                    PollRecord(job.device.plan.key, job.group.name, self.name, due, started,
                               finished, outcome)
                )  # fmt: skip
            period = job.group.period_s
            nxt = due + period
            missed = 0
            while nxt + period <= finished:  # a whole period behind: skip, do not burst
                nxt += period
                missed += 1
            if missed:
                job.device.stats.missed += missed
                self._metrics.missed.labels(job.device.plan.key).inc(missed)
            heapq.heappush(heap, (nxt, seq, job))

    async def _poll(self, job: _Job) -> Outcome:
        device, group = job.device, job.group
        if not self._client.connected:
            if self._clock.monotonic() >= self._next_connect_at:
                await self._connect()
            if not self._client.connected:
                assert self._line_failure is not None
                await self._failed(device, group, self._line_failure)
                return self._line_failure.outcome
        if self._shared and not device.breaker.allows(self._clock.monotonic()):
            failure = device.last_failure or Failure(Outcome.SKIPPED, "skipped")
            await self._emit(device, failed_group(group, failure.quality))
            self._count(device, Outcome.SKIPPED)
            return Outcome.SKIPPED
        answers: list[list[int]] = []
        for read in group.reads:
            answer = await self._read(device.plan.unit, read, device.plan.timeout_s)
            if isinstance(answer, Failure):
                await self._failed(device, group, answer)
                return answer.outcome
            answers.append(answer)
        try:
            result = decode_group(
                group, answers, channels=device.plan.channels,
                prior_faults=device.prior_faults(group.name),
            )  # fmt: skip
        except ValueError as exc:  # an answer shorter than asked for
            await self._failed(device, group, Failure(Outcome.JUNK, str(exc)))
            return Outcome.JUNK
        if result.faulted is not None:
            device.faults[group.name] = result.faulted
        await self._emit(device, result)
        self._succeeded(device)
        return Outcome.OK

    # --- requests ----------------------------------------------------------------------------

    async def _read(self, unit: int, read: ReadRequest, timeout_s: float) -> list[int] | Failure:
        client = self._client
        call = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }[read.fc]
        try:  # pymodbus raises at once when the connection is already gone
            pending = call(read.address, count=read.count, device_id=unit)
        except ConnectionException as exc:
            return Failure(Outcome.DISCONNECTED, str(exc))
        abort: asyncio.Future[Failure] = asyncio.get_running_loop().create_future()
        self._abort = abort
        request = asyncio.ensure_future(pending)
        try:
            done, _ = await asyncio.wait(
                (request, abort), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._abort = None
            if not request.done():
                request.cancel()
            request.add_done_callback(_discard)
        if request in done:
            return self._answer(request, read)
        if abort in done:
            return abort.result()
        return Failure(
            Outcome.TIMEOUT, f"no answer to FC {read.fc} @{read.address} in {timeout_s:g} s"
        )

    def _answer(self, request: asyncio.Task[ModbusPDU], read: ReadRequest) -> list[int] | Failure:
        try:
            response = request.result()
        except ConnectionException as exc:
            return Failure(Outcome.DISCONNECTED, str(exc))
        except ModbusException as exc:  # pymodbus could not make sense of the answer
            return Failure(Outcome.JUNK, str(exc))
        if response.isError():
            code = response.exception_code
            return Failure(Outcome.EXCEPTION, f"exception code {code}", code)
        return _values(response, read)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending or self._framer != "socket" or plausible_mbap(data):
            return data
        self._resolve_abort(Failure(Outcome.JUNK, f"junk frame {data[:16].hex()}"))
        asyncio.get_running_loop().call_soon(self._client.close)
        return b""

    def _trace_connect(self, connected: bool) -> None:
        if not connected:
            self._resolve_abort(Failure(Outcome.DISCONNECTED, "connection closed by the device"))

    def _resolve_abort(self, failure: Failure) -> None:
        if self._abort is not None and not self._abort.done():
            self._abort.set_result(failure)

    # --- the connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        timeout_s = self._settings.connect_timeout_s
        began = self._clock.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                ok = await self._client.connect()
        except TimeoutError:
            self._client.close()
            ok = False
            failure = Failure(Outcome.CONNECT_TIMEOUT, f"connect timed out after {timeout_s:g} s")
        else:
            failure = Failure(Outcome.REFUSED, "connection refused or failed")
        now = self._clock.monotonic()
        self._metrics.connects.labels(self.name, "ok" if ok else failure.outcome.value).inc()
        if ok:
            self._backoff.reset()
            if self._line_failure is not None:
                log.log(self._limiter.level(now, logging.INFO), "modbus line %s connected again",
                        self.name)  # fmt: skip
            self._line_failure = None
            self._line_timeouts = 0
            return
        # From the attempt's start: with delays up to one period, the next poll may try again.
        self._next_connect_at = began + self._backoff.next_delay(self._rng)
        if self._line_failure is None:
            log.log(
                self._limiter.level(now, logging.WARNING),
                "modbus line %s: %s; retrying every %.2g s at most (%d units affected)",
                self.name, failure.detail, self._backoff.max_s, len(self._devices),
            )  # fmt: skip
        self._line_failure = failure

    def _reset_connection(self, why: str) -> None:
        log.debug("modbus line %s: resetting the connection (%s)", self.name, why)
        self._client.close()
        self._next_connect_at = 0.0  # reconnect at the next poll; backoff only if that fails

    async def close(self) -> None:
        self._client.close()

    # --- accounting --------------------------------------------------------------------------

    async def _emit(self, device: DeviceState, result: GroupResult) -> None:
        ts_us = self._clock.wall_us()
        n = len(result.sensor_id)
        batch = ReadingBatch.from_columns(result.sensor_id, [ts_us] * n, result.value,
                                          result.quality)  # fmt: skip
        await self._sink.put(batch)
        for reject in result.rejects:
            payload = orjson.dumps(
                {"device": device.plan.key, "unit": device.plan.unit, "channel": reject.channel,
                 "sensor_id": reject.sensor_id, "ts_us": ts_us, "detail": reject.detail}
            )  # fmt: skip
            topic = f"modbus://{self.name}/{device.plan.unit}/{device.plan.key}/{reject.channel}"
            await self._quarantine.put(SOURCE, topic, reject.reason, reject.detail, payload)
            device.stats.rejected += 1
            self._metrics.rejected.labels(device.plan.key, reject.reason).inc()

    def _count(self, device: DeviceState, outcome: Outcome) -> None:
        self._metrics.polls.labels(device.plan.key, outcome.value).inc()
        if outcome is Outcome.OK:
            device.stats.polls_ok += 1
        else:
            device.stats.polls_failed[outcome.value] += 1

    def _succeeded(self, device: DeviceState) -> None:
        self._count(device, Outcome.OK)
        self._line_timeouts = 0
        device.stats.consecutive_failures = 0
        self._metrics.consecutive_failures.labels(device.plan.key).set(0)
        closed = device.breaker.record_success()
        if device.up is not True:
            now = self._clock.monotonic()
            level = logging.DEBUG if device.up is None else device.limiter.level(now, logging.INFO)
            how = "answering" if device.up is None else "answering again"
            if closed:
                how += " (probe succeeded)"
            log.log(level, "modbus device %s (unit %d on %s) is %s%s", device.plan.key,
                    device.plan.unit, self.name, how, _suppressed(device.limiter))  # fmt: skip
            device.up = True
            self._metrics.up.labels(device.plan.key).set(1)

    async def _failed(self, device: DeviceState, group: GroupPlan, failure: Failure) -> None:
        await self._emit(device, failed_group(group, failure.quality))
        self._count(device, failure.outcome)
        stats = device.stats
        stats.consecutive_failures += 1
        stats.last_error = failure.detail
        device.last_failure = failure
        self._metrics.consecutive_failures.labels(device.plan.key).set(stats.consecutive_failures)
        now = self._clock.monotonic()
        if device.up is not False:
            log.log(device.limiter.level(now, logging.WARNING),
                    "modbus device %s (unit %d on %s) failed: %s [%s]%s",
                    device.plan.key, device.plan.unit, self.name, failure.detail,
                    failure.outcome.value, _suppressed(device.limiter))  # fmt: skip
            device.up = False
            self._metrics.up.labels(device.plan.key).set(0)
        else:
            log.debug("modbus device %s (unit %d on %s) still failing: %s", device.plan.key,
                      device.plan.unit, self.name, failure.detail)  # fmt: skip
        if failure.outcome in (Outcome.JUNK, Outcome.DISCONNECTED):
            self._reset_connection(failure.detail)
        if failure.outcome is Outcome.TIMEOUT:
            self._line_timeouts += 1
            if self._line_timeouts >= self._settings.breaker_trip_after * len(self._devices):
                self._line_timeouts = 0
                self._reset_connection("every unit is timing out")
        if self._shared and failure.trips_breaker and device.breaker.record_failure(now, self._rng):
            log.log(device.limiter.level(now, logging.WARNING),
                    "modbus device %s (unit %d on %s): skipped after %d failures in a row, "
                    "probing again in %.1f s", device.plan.key, device.plan.unit, self.name,
                    device.breaker.failures, device.breaker.probe_at - now)  # fmt: skip


def _values(response: ModbusPDU, read: ReadRequest) -> list[int] | Failure:
    """The registers or bits of an answer, if it answers what was asked."""
    if response.function_code != read.fc:
        return Failure(Outcome.JUNK, f"asked FC {read.fc}, answered FC {response.function_code}")
    if read.fc in (3, 4):
        registers = [int(r) for r in response.registers]
        if len(registers) != read.count:
            return Failure(Outcome.JUNK, f"asked {read.count} registers, got {len(registers)}")
        return registers
    bits = [int(b) for b in response.bits]
    if len(bits) < read.count:
        return Failure(Outcome.JUNK, f"asked {read.count} bits, got {len(bits)}")
    return bits[: read.count]


def _suppressed(limiter: LogLimiter) -> str:
    n = limiter.take_suppressed()
    return f" ({n} state changes logged at debug since)" if n else ""


def _discard(future: asyncio.Task[ModbusPDU]) -> None:
    """Retrieve the outcome of an abandoned request so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
