"""Writes a checked registry into the database in one transaction.

Rows are matched by key, so ids stay stable across reloads. Whatever the file no longer lists
is deactivated (never deleted): its readings and alarms keep their meaning, and putting the
entry back reactivates it under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import orjson

from hazwatch.registry.model import (
    DerivedEntry,
    DeviceEntry,
    RegistryFile,
    SensorEntry,
    SiteEntry,
)


@dataclass(slots=True)
class LoadSummary:
    sites: int = 0
    assets: int = 0
    devices: int = 0
    sensors: int = 0
    deactivated: dict[str, list[str]] = field(default_factory=dict)


RULES_CHANNEL = "hazwatch_rules"  # pg_notify'd when sensors' rules may have changed


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


async def store_registry(
    conn: asyncpg.Connection, registry: RegistryFile, *, actor: str = "registry"
) -> LoadSummary:
    summary = LoadSummary()
    async with conn.transaction():
        for site in registry.sites:
            site_id = await _upsert_site(conn, site)
            summary.sites += 1
            asset_ids = await _upsert_assets(conn, site, site_id)
            summary.assets += len(site.assets)
            for device in site.devices:
                summary.sensors += await _upsert_device(conn, device, site_id, asset_ids)
                summary.devices += 1
            for asset in site.assets:
                for derived in asset.derived:
                    await _upsert_sensor(
                        conn,
                        key=f"{asset.key}/{derived.channel}",
                        device_id=None,
                        asset_id=asset_ids[asset.key],
                        entry=derived,
                    )
                    summary.sensors += 1
        summary.deactivated = await _deactivate_missing(conn, registry)
        await conn.execute(
            "INSERT INTO audit_log (actor, action, target, after) VALUES ($1, $2, $3, $4::jsonb)",
            actor,
            "registry.load",
            "registry",
            _json({"sites": summary.sites, "sensors": summary.sensors,
                   "deactivated": summary.deactivated}),
        )  # fmt: skip
        # Running alarm engines reload their rules (alerting.bridge).
        await conn.execute("SELECT pg_notify($1, $2)", RULES_CHANNEL, _json({"registry": "loaded"}))
    return summary


async def _upsert_site(conn: asyncpg.Connection, site: SiteEntry) -> int:
    site_id: int = await conn.fetchval(
        """INSERT INTO sites (key, name, timezone, latitude, longitude, active, updated_at)
           VALUES ($1, $2, $3, $4, $5, true, now())
           ON CONFLICT (key) DO UPDATE SET name = excluded.name, timezone = excluded.timezone,
               latitude = excluded.latitude, longitude = excluded.longitude, active = true,
               updated_at = now()
           RETURNING site_id""",
        site.key, site.name, site.timezone, site.latitude, site.longitude,
    )  # fmt: skip
    return site_id


async def _upsert_assets(conn: asyncpg.Connection, site: SiteEntry, site_id: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    for asset in site.assets:
        ids[asset.key] = await conn.fetchval(
            """INSERT INTO assets (site_id, key, kind, name, static_risk, r_value, params, votes,
                                   active, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, true, now())
               ON CONFLICT (key) DO UPDATE SET site_id = excluded.site_id, kind = excluded.kind,
                   name = excluded.name, static_risk = excluded.static_risk,
                   r_value = excluded.r_value, params = excluded.params, votes = excluded.votes,
                   active = true, updated_at = now()
               RETURNING asset_id""",
            site_id, asset.key, asset.kind.value, asset.name, int(asset.effective_static_risk),
            asset.r_value, _json(asset.params),
            _json([v.model_dump(mode="json") for v in asset.votes]),
        )  # fmt: skip
    return ids


async def _upsert_device(
    conn: asyncpg.Connection, device: DeviceEntry, site_id: int, asset_ids: dict[str, int]
) -> int:
    modbus = None if device.modbus is None else _json(device.modbus.model_dump(mode="json"))
    device_id: int = await conn.fetchval(
        """INSERT INTO devices (site_id, asset_id, key, name, protocol, modbus, active, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, true, now())
           ON CONFLICT (key) DO UPDATE SET site_id = excluded.site_id,
               asset_id = excluded.asset_id, name = excluded.name,
               protocol = excluded.protocol, modbus = excluded.modbus, active = true,
               updated_at = now()
           RETURNING device_id""",
        site_id, asset_ids.get(device.asset or ""), device.key, device.name or device.key,
        device.protocol, modbus,
    )  # fmt: skip
    for sensor in device.sensors:
        asset_key = sensor.asset or device.asset
        assert asset_key is not None  # checked by registry.checks
        await _upsert_sensor(
            conn,
            key=f"{device.key}/{sensor.channel}",
            device_id=device_id,
            asset_id=asset_ids[asset_key],
            entry=sensor,
        )
    return len(device.sensors)


async def _upsert_sensor(
    conn: asyncpg.Connection,
    *,
    key: str,
    device_id: int | None,
    asset_id: int,
    entry: SensorEntry | DerivedEntry,
) -> None:
    """Upsert one sensor. Only the registry's rule overrides are stored: the kind's defaults
    are laid under them when the rules are compiled, so a change of default reaches every
    sensor that did not override it."""
    range_min, range_max = entry.effective_range
    rules = {} if entry.rules is None else entry.rules.model_dump(mode="json", exclude_unset=True)
    modbus = entry.modbus if isinstance(entry, SensorEntry) else None
    derive = entry.derive if isinstance(entry, DerivedEntry) else None
    await conn.execute(
        """INSERT INTO sensors (key, device_id, asset_id, channel, kind, unit, name, range_min,
                                range_max, period_s, params, rules, modbus, derive, active,
                                updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13::jsonb,
                   $14::jsonb, true, now())
           ON CONFLICT (key) DO UPDATE SET device_id = excluded.device_id,
               asset_id = excluded.asset_id, channel = excluded.channel, kind = excluded.kind,
               unit = excluded.unit, name = excluded.name, range_min = excluded.range_min,
               range_max = excluded.range_max, period_s = excluded.period_s,
               params = excluded.params, rules = excluded.rules, modbus = excluded.modbus,
               derive = excluded.derive, active = true, updated_at = now()""",
        key, device_id, asset_id, entry.channel, entry.kind, entry.effective_unit,
        entry.name or key, range_min, range_max, entry.effective_period_s,
        _json(entry.params), _json(rules),
        None if modbus is None else _json(modbus.model_dump(mode="json")),
        None if derive is None else _json(derive.model_dump(mode="json")),
    )  # fmt: skip


async def _deactivate_missing(
    conn: asyncpg.Connection, registry: RegistryFile
) -> dict[str, list[str]]:
    keys = {
        "sites": [s.key for s in registry.sites],
        "assets": [a.key for s in registry.sites for a in s.assets],
        "devices": [d.key for s in registry.sites for d in s.devices],
        "sensors": [f"{d.key}/{n.channel}" for s in registry.sites for d in s.devices
                    for n in d.sensors]
        + [f"{a.key}/{x.channel}" for s in registry.sites for a in s.assets for x in a.derived],
    }  # fmt: skip
    gone: dict[str, list[str]] = {}
    for table, present in keys.items():
        rows = await conn.fetch(
            f"UPDATE {table} SET active = false, updated_at = now() "  # noqa: S608 - fixed names
            "WHERE active AND NOT (key = ANY($1::text[])) RETURNING key",
            present,
        )
        if rows:
            gone[table] = sorted(r["key"] for r in rows)
    return gone
