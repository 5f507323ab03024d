"""Checks that need the whole registry file: unique keys, references, register maps per device.

Each check yields `(path, message)` pairs; paths are tuples like the pydantic error locations,
so the parser can attach a line number to every problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hazwatch.registry.modbus_map import DataType, ModbusDevice, protocol_address
from hazwatch.registry.model import DeviceEntry, RegistryFile

Path = tuple[str | int, ...]
Finding = tuple[Path, str]


@dataclass(frozen=True, slots=True)
class _Owner:
    path: Path
    what: str


def check_registry(reg: RegistryFile) -> Iterator[Finding]:
    yield from _unique_keys(reg)
    yield from _references(reg)
    for si, site in enumerate(reg.sites):
        for di, device in enumerate(site.devices):
            if device.modbus is not None:
                yield from _register_map(("sites", si, "devices", di), device, device.modbus)


def _unique_keys(reg: RegistryFile) -> Iterator[Finding]:
    seen: dict[tuple[str, str], _Owner] = {}

    def claim(space: str, key: str, path: Path, what: str) -> Iterator[Finding]:
        owner = seen.get((space, key))
        if owner is not None:
            yield path, f"duplicate {what} key {key!r} (first defined as {owner.what})"
        else:
            seen[(space, key)] = _Owner(path, what)

    for si, site in enumerate(reg.sites):
        yield from claim("site", site.key, ("sites", si, "key"), "site")
        for ai, asset in enumerate(site.assets):
            yield from claim("asset", asset.key, ("sites", si, "assets", ai, "key"), "asset")
            for xi, derived in enumerate(asset.derived):
                path = ("sites", si, "assets", ai, "derived", xi, "channel")
                yield from claim("sensor", f"{asset.key}/{derived.channel}", path, "sensor")
        for di, device in enumerate(site.devices):
            dpath = ("sites", si, "devices", di, "key")
            yield from claim("device", device.key, dpath, "device")
            # Derived sensors are keyed by asset, measured ones by device: one key space.
            yield from claim("sensor-prefix", device.key, dpath, f"device {device.key}")
            for ni, sensor in enumerate(device.sensors):
                path = ("sites", si, "devices", di, "sensors", ni, "channel")
                yield from claim("sensor", f"{device.key}/{sensor.channel}", path, "sensor")
        for ai, asset in enumerate(site.assets):
            if ("sensor-prefix", asset.key) in seen and asset.derived:
                yield (
                    ("sites", si, "assets", ai, "key"),
                    f"asset {asset.key!r} has derived sensors and shares its key with a "
                    "device, so their sensor keys would collide",
                )


def _references(reg: RegistryFile) -> Iterator[Finding]:
    assets = {a.key: s.key for s in reg.sites for a in s.assets}
    sensors = {f"{d.key}/{n.channel}" for s in reg.sites for d in s.devices for n in d.sensors}
    sensors |= {f"{a.key}/{x.channel}" for s in reg.sites for a in s.assets for x in a.derived}
    for si, site in enumerate(reg.sites):
        for di, device in enumerate(site.devices):
            base: Path = ("sites", si, "devices", di)
            yield from _asset_ref(assets, site.key, device.asset, (*base, "asset"))
            for ni, sensor in enumerate(device.sensors):
                if sensor.asset is not None:
                    path = (*base, "sensors", ni, "asset")
                    yield from _asset_ref(assets, site.key, sensor.asset, path)
                elif device.asset is None:
                    yield (
                        (*base, "sensors", ni),
                        "sensor has no asset: set asset on the sensor or its device",
                    )
        for ai, asset in enumerate(site.assets):
            for xi, derived in enumerate(asset.derived):
                for ii, ref in enumerate(derived.derive.inputs):
                    path = ("sites", si, "assets", ai, "derived", xi, "derive", "inputs", ii)
                    if ref not in sensors:
                        yield path, f"unknown input sensor {ref!r}"
                    elif ref == f"{asset.key}/{derived.channel}":
                        yield path, "a derived sensor cannot be its own input"
            for vi, vote in enumerate(asset.votes):
                for ii, ref in enumerate(vote.sensors):
                    if ref not in sensors:
                        path = ("sites", si, "assets", ai, "votes", vi, "sensors", ii)
                        yield path, f"unknown sensor {ref!r} in vote {vote.name!r}"


def _asset_ref(assets: dict[str, str], site: str, ref: str | None, path: Path) -> Iterator[Finding]:
    if ref is None:
        return
    owner = assets.get(ref)
    if owner is None:
        yield path, f"unknown asset {ref!r}"
    elif owner != site:
        yield path, f"asset {ref!r} belongs to site {owner!r}, not {site!r}"


def _register_map(base: Path, device: DeviceEntry, conn: ModbusDevice) -> Iterator[Finding]:
    """Addresses valid under the device's addressing, groups known, and no two value points
    sharing a register with different meanings."""
    used: dict[tuple[int, int], tuple[str, int, DataType]] = {}
    channels = {s.channel for s in device.sensors}
    for ni, sensor in enumerate(device.sensors):
        point = sensor.modbus
        assert point is not None  # DeviceEntry checked this
        path: Path = (*base, "sensors", ni, "modbus")
        if point.group not in conn.poll_groups:
            yield (*path, "group"), f"unknown poll group {point.group!r}"
        try:
            start = protocol_address(point.address, point.fc, conn.addressing)
        except ValueError as exc:
            yield (*path, "address"), str(exc)
            continue
        end = start + point.type.registers
        if end > 65_536:
            yield (*path, "address"), f"{point.type} at {start} runs past register 65535"
            continue
        if point.decimals_address is not None:
            try:
                protocol_address(point.decimals_address, point.fc, conn.addressing)
            except ValueError as exc:
                yield (*path, "decimals_address"), str(exc)
        if point.type in (DataType.BITS, DataType.BOOL):
            continue
        table = 4 if point.fc == 3 else 3
        for register in range(start, end):
            other = used.get((table, register))
            if other is not None and (other[1], other[2]) != (start, point.type):
                yield (
                    (*path, "address"),
                    f"register {register} is also read as {other[2]} by {other[0]!r}",
                )
                break
            used[(table, register)] = (sensor.channel, start, point.type)
    for wi, word in enumerate(conn.status):
        wpath: Path = (*base, "modbus", "status", wi)
        try:
            protocol_address(word.address, word.fc, conn.addressing)
        except ValueError as exc:
            yield (*wpath, "address"), str(exc)
        for ref in word.applies_to or ():
            if ref not in channels:
                yield (*wpath, "applies_to"), f"unknown channel {ref!r} on device {device.key!r}"
