"""The registry as the running services see it: read once from the database, typed, indexed.

Collectors resolve `<device>/<channel>` to a sensor id and a physical range here; the alarm
engine compiles its rule arrays from the effective rules (kind defaults under the registry's
overrides). Only active entries are included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from hazwatch.catalog import CATALOGUE
from hazwatch.domain import Tier
from hazwatch.registry.modbus_map import ModbusDevice, ModbusPoint
from hazwatch.registry.model import DeriveSpec
from hazwatch.rulespec import RuleSpec, VoteRule


@dataclass(frozen=True, slots=True)
class SensorInfo:
    sensor_id: int
    key: str
    site_id: int
    site_key: str
    asset_id: int
    asset_key: str
    device_key: str | None  # None for derived signals
    channel: str
    kind: str
    unit: str
    name: str
    range_min: float
    range_max: float
    period_s: float | None
    params: Mapping[str, float]
    overrides: RuleSpec
    modbus: ModbusPoint | None = None
    derive: DeriveSpec | None = None

    @property
    def rules(self) -> RuleSpec:
        """Effective rules: the kind's defaults with this sensor's overrides laid over them."""
        return CATALOGUE[self.kind].default_rules(self.params).overlay(self.overrides)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: int
    key: str
    site_key: str
    protocol: str
    modbus: ModbusDevice | None
    sensors: tuple[SensorInfo, ...]


@dataclass(frozen=True, slots=True)
class AssetInfo:
    asset_id: int
    key: str
    site_key: str
    kind: str
    name: str
    static_risk: Tier
    votes: tuple[VoteRule, ...]


@dataclass(frozen=True, slots=True)
class SiteInfo:
    site_id: int
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    sites: Mapping[str, SiteInfo]
    assets: Mapping[str, AssetInfo]
    devices: Mapping[str, DeviceInfo]
    sensors: tuple[SensorInfo, ...]
    _by_key: Mapping[str, SensorInfo] = field(repr=False)
    _by_id: Mapping[int, SensorInfo] = field(repr=False)

    @classmethod
    def build(
        cls,
        sites: list[SiteInfo],
        assets: list[AssetInfo],
        devices: list[DeviceInfo],
        sensors: list[SensorInfo],
    ) -> RegistrySnapshot:
        ordered = tuple(sorted(sensors, key=lambda s: s.sensor_id))
        return cls(
            sites={s.key: s for s in sites},
            assets={a.key: a for a in assets},
            devices={d.key: d for d in devices},
            sensors=ordered,
            _by_key={s.key: s for s in ordered},
            _by_id={s.sensor_id: s for s in ordered},
        )

    def sensor(self, key: str) -> SensorInfo | None:
        return self._by_key.get(key)

    def sensor_by_id(self, sensor_id: int) -> SensorInfo | None:
        return self._by_id.get(sensor_id)

    def device_sensors(self, device_key: str) -> tuple[SensorInfo, ...]:
        device = self.devices.get(device_key)
        return () if device is None else device.sensors

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> RegistrySnapshot:
        site_rows = await conn.fetch(
            "SELECT site_id, key, name FROM sites WHERE active ORDER BY site_id"
        )
        asset_rows = await conn.fetch(
            """SELECT a.asset_id, a.key, s.key AS site_key, a.kind, a.name, a.static_risk,
                      a.votes::text AS votes
               FROM assets a JOIN sites s USING (site_id) WHERE a.active ORDER BY a.asset_id"""
        )
        sensor_rows = await conn.fetch(
            """SELECT n.sensor_id, n.key, a.site_id, s.key AS site_key, n.asset_id,
                      a.key AS asset_key, d.key AS device_key, n.channel, n.kind, n.unit, n.name,
                      n.range_min, n.range_max, n.period_s, n.params::text AS params,
                      n.rules::text AS rules, n.modbus::text AS modbus,
                      n.derive::text AS derive
               FROM sensors n
               JOIN assets a USING (asset_id)
               JOIN sites s ON s.site_id = a.site_id
               LEFT JOIN devices d USING (device_id)
               WHERE n.active ORDER BY n.sensor_id"""
        )
        device_rows = await conn.fetch(
            """SELECT d.device_id, d.key, s.key AS site_key, d.protocol, d.modbus::text AS modbus
               FROM devices d JOIN sites s USING (site_id) WHERE d.active ORDER BY d.device_id"""
        )
        sensors = [_sensor(r) for r in sensor_rows]
        by_device: dict[str, list[SensorInfo]] = {}
        for sensor in sensors:
            if sensor.device_key is not None:
                by_device.setdefault(sensor.device_key, []).append(sensor)
        devices = [
            DeviceInfo(
                device_id=r["device_id"],
                key=r["key"],
                site_key=r["site_key"],
                protocol=r["protocol"],
                modbus=None
                if r["modbus"] is None
                else ModbusDevice.model_validate_json(r["modbus"]),
                sensors=tuple(by_device.get(r["key"], ())),
            )
            for r in device_rows
        ]
        assets = [
            AssetInfo(
                asset_id=r["asset_id"],
                key=r["key"],
                site_key=r["site_key"],
                kind=r["kind"],
                name=r["name"],
                static_risk=Tier(r["static_risk"]),
                votes=tuple(VoteRule.model_validate(v) for v in orjson.loads(r["votes"])),
            )
            for r in asset_rows
        ]
        sites = [SiteInfo(r["site_id"], r["key"], r["name"]) for r in site_rows]
        return cls.build(sites, assets, devices, sensors)


def _sensor(r: Mapping[str, Any]) -> SensorInfo:
    return SensorInfo(
        sensor_id=r["sensor_id"],
        key=r["key"],
        site_id=r["site_id"],
        site_key=r["site_key"],
        asset_id=r["asset_id"],
        asset_key=r["asset_key"],
        device_key=r["device_key"],
        channel=r["channel"],
        kind=r["kind"],
        unit=r["unit"],
        name=r["name"],
        range_min=r["range_min"],
        range_max=r["range_max"],
        period_s=r["period_s"],
        params=orjson.loads(r["params"]),
        overrides=RuleSpec.model_validate_json(r["rules"]),
        modbus=None if r["modbus"] is None else ModbusPoint.model_validate_json(r["modbus"]),
        derive=None if r["derive"] is None else DeriveSpec.model_validate_json(r["derive"]),
    )
