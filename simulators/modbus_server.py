"""Modbus TCP servers that serve the registry's Modbus devices, with injectable faults.

One `ModbusSimServer` per (host, port) serves every unit behind it, the way a PLC or a serial
gateway does. Each request is answered from a `ValueSource` (channel values and the detector
fault flag of a device at virtual time t), encoded per the device's register map with the same
code the collector decodes with (`ingest.modbus_decode.register_image`).

pymodbus does the protocol: its framers cut requests out of the byte stream and its request
PDUs answer themselves from a datastore (`datastore_update` calls our `async_getValues`). The
connection loop is ours, because fault injection needs it and because pymodbus 3.16's
`ModbusTcpServer` answers a delayed request with the transaction id of whichever request came
last on the connection (`ServerRequestHandler.handle_request` reads `self.last_pdu` after the
await), which would hand a slow unit's registers to its neighbour.

Faults (`UnitFault`, per unit or for the whole port): `dead` (never answers), `delay_s` (answers
late), `exception` (a Modbus exception code), `junk` (random bytes instead of the frame),
`drop` (closes the connection instead of answering), each with a `probability`. A power cycle
closes the port and its connections and opens it again after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Protocol, Self

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from hazwatch.registry.snapshot import DeviceInfo, RegistrySnapshot
from ingest.modbus_decode import PointSpec, SensorPoint, StatusSpec, plan_device, register_image
from simulators.simulation import Simulation

log = logging.getLogger(__name__)

MAX_BUFFER = 1024  # a client that sends more than this without a whole frame is cut off


@dataclass(frozen=True, slots=True)
class DeviceSample:
    """A device's state at one instant: channel values in engineering units (None: the device
    has no value, served as NaN where the type allows), its fault flag, and whether it is
    powered at all (`online=False`: it does not answer)."""

    values: Mapping[str, float | None]
    fault: bool = False
    online: bool = True


class ValueSource(Protocol):
    def sample(self, device_key: str, t: float) -> DeviceSample: ...


class FixedSource:
    """Values set by hand: exact decode tests, and faults flipped by a test."""

    def __init__(self, values: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._values = {k: dict(v) for k, v in (values or {}).items()}
        self._faults: set[str] = set()

    def set(self, device_key: str, channel: str, value: float) -> None:
        self._values.setdefault(device_key, {})[channel] = value

    def set_fault(self, device_key: str, fault: bool) -> None:
        (self._faults.add if fault else self._faults.discard)(device_key)

    def sample(self, device_key: str, t: float) -> DeviceSample:
        return DeviceSample(self._values.get(device_key, {}), device_key in self._faults)


class SimulationSource:
    """The plant models of `simulators.simulation`, the same ones the MQTT publisher runs:
    virtual second t of the servers is `sim.start_ms + 1000 t`. Over Modbus the devices'
    state is read, not pushed, so the readings `advance_to` releases are dropped here."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def sample(self, device_key: str, t: float) -> DeviceSample:
        self._sim.advance_to(self._sim.start_ms + round(t * 1000))
        state = self._sim.device_state(device_key)
        return DeviceSample(state.values, state.status.fault, state.status.online)


@dataclass(frozen=True, slots=True)
class UnitFault:
    dead: bool = False
    delay_s: float = 0.0
    exception: int | None = None
    junk: bool = False
    drop: bool = False
    probability: float = 1.0


FAULT_KINDS = ("dead", "slow", "exception", "junk", "drop")


def parse_fault(text: str) -> tuple[str, UnitFault]:
    """`DEVICE=KIND[:ARG][@PROBABILITY]`: dead, slow:SECONDS, exception:CODE, junk, drop.

    >>> parse_fault("lel-gw3=slow:2.0@0.5")[1].delay_s
    2.0
    """
    device, sep, spec = text.partition("=")
    spec, _, probability = spec.partition("@")
    kind, _, arg = spec.partition(":")
    try:
        fault = _fault(kind, arg, float(probability) if probability else 1.0)
    except ValueError as exc:
        raise ValueError(f"fault {text!r}: {exc}") from None
    if not sep or not device:
        raise ValueError(f"fault {text!r}: expected DEVICE=KIND[:ARG][@PROBABILITY]")
    return device, fault


def _fault(kind: str, arg: str, probability: float) -> UnitFault:
    if not 0 < probability <= 1:
        raise ValueError("probability must be in (0, 1]")
    if kind == "slow":
        return UnitFault(delay_s=float(arg or "2.0"), probability=probability)
    if kind == "exception":
        code = int(arg or "4", 0)
        if not 1 <= code <= 15:
            raise ValueError("exception codes are 1-15")
        return UnitFault(exception=code, probability=probability)
    if kind in ("dead", "junk", "drop") and not arg:
        return UnitFault(
            dead=kind == "dead", junk=kind == "junk", drop=kind == "drop", probability=probability
        )
    raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(FAULT_KINDS)}")


@dataclass(frozen=True, slots=True)
class SimUnit:
    """What one unit serves: its device's resolved points and status words."""

    key: str
    unit: int
    points: tuple[PointSpec, ...]
    status: tuple[StatusSpec, ...]

    @classmethod
    def of(cls, device: DeviceInfo) -> SimUnit:
        assert device.modbus is not None
        sensors = [
            SensorPoint(s.sensor_id, s.channel, s.modbus, s.range_min, s.range_max)
            for s in device.sensors
            if s.modbus is not None
        ]
        plan = plan_device(device.key, device.modbus, sensors)
        return cls(
            key=device.key,
            unit=device.modbus.unit,
            points=tuple(p for g in plan.groups for p in g.points),
            status=tuple(w for g in plan.groups for w in g.status),
        )

    def image(self, sample: DeviceSample) -> Mapping[tuple[int, int], int]:
        points = []
        for p in self.points:
            if p.channel in sample.values:
                value = sample.values[p.channel]
                points.append((p, math.nan if value is None else value))
        return register_image(points, [(w, sample.fault) for w in self.status])


@dataclass(slots=True)
class SimTime:
    """Virtual time in seconds: `t0` at start, running `speed` times faster than the wall."""

    speed: float = 1.0
    t0: float = 0.0
    _start: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return self.t0 + (time.monotonic() - self._start) * self.speed


class ModbusSimServer:
    """One listening port serving several units."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        units: Sequence[SimUnit],
        source: ValueSource,
        framer: str = "socket",
        sim_time: SimTime | None = None,
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.units = {u.unit: u for u in units}
        self.framer = framer
        self.requests: Counter[int] = Counter()  # by unit id, answered or not
        self.connections = 0
        self._source = source
        self._time = sim_time or SimTime()
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not cryptography
        self._faults: dict[int | None, UnitFault] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control -----------------------------------------------------------------------------

    def set_fault(self, unit: int | None, fault: UnitFault | None) -> None:
        """Inject a fault on one unit, or on the whole port with `unit=None`; None clears."""
        if fault is None:
            self._faults.pop(unit, None)
        else:
            self._faults[unit] = fault

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("modbus simulator on %s:%d serving units %s", self.host, self.port,
                 sorted(self.units))  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._handlers:  # let connection handlers see their closed streams and end
            await asyncio.wait(list(self._handlers), timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def power_cycle(self, off_s: float) -> None:
        """Switch off (port closed, connections cut) for `off_s` seconds, then on again."""
        log.info("modbus simulator %s:%d: power off for %.1f s", self.host, self.port, off_s)
        await self.stop()
        await asyncio.sleep(off_s)
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- serving -----------------------------------------------------------------------------

    def _new_framer(self) -> FramerBase:
        decoder = DecodePDU(True)
        return FramerRTU(decoder) if self.framer == "rtu" else FramerSocket(decoder)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        framer = self._new_framer()
        buffer = b""
        try:
            while data := await reader.read(512):
                buffer += data
                while buffer:
                    used, request = framer.handleFrame(buffer, 0, 0)
                    buffer = buffer[used:]
                    if request is None:
                        break
                    task = asyncio.create_task(self._answer(request, framer, writer))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(buffer) > MAX_BUFFER:
                    break
        except (ConnectionError, ModbusException) as exc:
            log.debug("modbus simulator %s:%d: connection ends: %s", self.host, self.port, exc)
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()

    def _sample(self, unit: SimUnit) -> DeviceSample:
        return self._source.sample(unit.key, self._time.now())

    def _fault(self, unit: int) -> UnitFault | None:
        fault = self._faults.get(unit) or self._faults.get(None)
        if fault is None or (fault.probability < 1.0 and self._rng.random() >= fault.probability):
            return None
        return fault

    async def _answer(
        self, request: ModbusPDU, framer: FramerBase, writer: asyncio.StreamWriter
    ) -> None:
        unit = request.dev_id
        self.requests[unit] += 1
        fault = self._fault(unit)
        if unit in self.units and not self._sample(self.units[unit]).online:
            return  # switched off by the scenario (a dropout): no answer at all
        if fault is not None:
            if fault.dead:
                return
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.drop:
                writer.close()
                return
        response: ModbusPDU
        if unit not in self.units:
            response = ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        elif fault is not None and fault.exception is not None:
            response = ExceptionResponse(request.function_code, fault.exception)
        else:
            response = await request.datastore_update(self, unit)  # type: ignore[arg-type]
        response.transaction_id = request.transaction_id
        response.dev_id = unit
        frame = framer.buildFrame(response)
        if fault is not None and fault.junk:
            junk = bytearray(self._rng.randbytes(max(len(frame), 9)))
            junk[2] |= 0x80  # never a valid MBAP protocol id, whatever the random bytes
            frame = bytes(junk)
        if not writer.is_closing():
            writer.write(frame)

    async def async_getValues(  # noqa: N802 - pymodbus' datastore contract
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if address + count > 65_536:
            return ExcCodes.ILLEGAL_ADDRESS
        unit = self.units[device_id]
        image = unit.image(self._sample(unit))
        values = [image.get((func_code, a), 0) for a in range(address, address + count)]
        if func_code in (1, 2):
            return [bool(v) for v in values]
        return values

    async def async_setValues(  # noqa: N802 - pymodbus' datastore contract
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION  # read-only devices


class SimFleet:
    """A server for every Modbus line (host, port) of a snapshot (or of `devices` in it).

    With `any_port=True` each server binds a free port instead of the registry's, and
    `retarget(snapshot)` gives the snapshot pointed at where the servers really listen.
    """

    def __init__(
        self,
        snapshot: RegistrySnapshot,
        source: ValueSource,
        *,
        any_port: bool = False,
        sim_time: SimTime | None = None,
        seed: int = 0,
        devices: Collection[str] | None = None,
    ) -> None:
        lines: dict[tuple[str, int], list[DeviceInfo]] = {}
        for device in snapshot.devices.values():
            if devices is not None and device.key not in devices:
                continue
            if device.protocol == "modbus" and device.modbus is not None:
                lines.setdefault((device.modbus.host, device.modbus.port), []).append(device)
        sim_time = sim_time or SimTime()
        self.servers: dict[tuple[str, int], ModbusSimServer] = {}
        self._where: dict[str, tuple[tuple[str, int], int]] = {}
        for i, ((host, port), members) in enumerate(sorted(lines.items())):
            units = [SimUnit.of(d) for d in members]
            first = members[0].modbus
            assert first is not None
            self.servers[(host, port)] = ModbusSimServer(
                host=host, port=0 if any_port else port, units=units, source=source,
                framer=first.framer, sim_time=sim_time, seed=seed + i,
            )  # fmt: skip
            for d in members:
                assert d.modbus is not None
                self._where[d.key] = ((host, port), d.modbus.unit)

    def server_of(self, device_key: str) -> tuple[ModbusSimServer, int]:
        line, unit = self._where[device_key]
        return self.servers[line], unit

    def set_fault(self, device_key: str, fault: UnitFault | None) -> None:
        server, unit = self.server_of(device_key)
        server.set_fault(unit, fault)

    def retarget(self, snapshot: RegistrySnapshot) -> RegistrySnapshot:
        devices = []
        for device in snapshot.devices.values():
            conn = device.modbus
            if conn is not None and (conn.host, conn.port) in self.servers:
                actual = self.servers[(conn.host, conn.port)].port
                devices.append(replace(device, modbus=conn.model_copy(update={"port": actual})))
            else:
                devices.append(device)
        return RegistrySnapshot.build(
            list(snapshot.sites.values()), list(snapshot.assets.values()), devices,
            list(snapshot.sensors),
        )  # fmt: skip

    async def power_cycles(self, device_key: str, every_s: float, off_s: float) -> None:
        """Power-cycle the port serving a device every `every_s` seconds, until cancelled."""
        server, _ = self.server_of(device_key)
        while True:
            await asyncio.sleep(every_s)
            await server.power_cycle(off_s)

    async def __aenter__(self) -> Self:
        for server in self.servers.values():
            await server.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self.servers.values():
            with contextlib.suppress(OSError):
                await server.stop()
