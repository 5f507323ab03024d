"""Sites, assets, sensors and their latest values (read), within the user's site scope.

Sites and assets are addressed by key; sensors by id, because a sensor key contains a slash
(`<device>/<channel>`). Filters take keys. Only active registry entries are listed.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Conn, Reader
from api.errors import NotFound
from api.params import (
    AssetFilter,
    AssetKey,
    KindFilter,
    SensorFilter,
    SensorId,
    SiteFilter,
    SiteKey,
)
from api.routes import API_PREFIX
from api.schemas import NOT_FOUND, SECURED, Asset, Latest, Sensor, Site, finite

router = APIRouter(prefix=API_PREFIX, tags=["registry"], responses=SECURED)

_SCOPE = "($1::text[] IS NULL OR s.key = ANY($1::text[]))"

_SITES = f"""
SELECT s.site_id, s.key, s.name, s.timezone, s.latitude, s.longitude
FROM sites s WHERE s.active AND {_SCOPE} AND ($2::text IS NULL OR s.key = $2)
ORDER BY s.key
"""  # noqa: S608 - a fixed fragment, parameters are bound

_ASSETS = f"""
SELECT a.asset_id, a.key, s.key AS site, a.kind, a.name, a.static_risk, a.r_value
FROM assets a JOIN sites s USING (site_id)
WHERE a.active AND s.active AND {_SCOPE}
  AND ($2::text IS NULL OR s.key = $2) AND ($3::text IS NULL OR a.key = $3)
ORDER BY s.key, a.key
"""  # noqa: S608

_SENSORS = f"""
SELECT n.sensor_id, n.key, s.key AS site, a.key AS asset, d.key AS device, n.channel, n.kind,
       n.unit, n.name, n.range_min, n.range_max, n.period_s
FROM sensors n
JOIN assets a ON a.asset_id = n.asset_id
JOIN sites s ON s.site_id = a.site_id
LEFT JOIN devices d ON d.device_id = n.device_id
WHERE n.active AND {_SCOPE}
  AND ($2::text IS NULL OR s.key = $2) AND ($3::text IS NULL OR a.key = $3)
  AND ($4::text IS NULL OR n.kind = $4) AND ($5::int IS NULL OR n.sensor_id = $5)
ORDER BY n.key
"""  # noqa: S608

_LATEST = f"""
SELECT l.sensor_id, n.key AS sensor, s.key AS site, l.ts, l.value, l.quality
FROM latest l
JOIN sensors n USING (sensor_id)
JOIN assets a ON a.asset_id = n.asset_id
JOIN sites s ON s.site_id = a.site_id
WHERE n.active AND {_SCOPE}
  AND ($2::text IS NULL OR s.key = $2) AND ($3::text IS NULL OR a.key = $3)
  AND ($4::text IS NULL OR n.key = $4)
ORDER BY n.key
"""  # noqa: S608


@router.get("/sites", response_model=list[Site], summary="Sites the user may see")
async def list_sites(user: Reader, conn: Conn) -> list[Site]:
    rows = await conn.fetch(_SITES, user.scope_param, None)
    return [Site(**dict(r)) for r in rows]


@router.get("/sites/{site}", responses=NOT_FOUND, response_model=Site, summary="One site")
async def get_site(site: SiteKey, user: Reader, conn: Conn) -> Site:
    row = await conn.fetchrow(_SITES, user.scope_param, site)
    if row is None:
        raise NotFound(f"no site {site!r}")
    return Site(**dict(row))


@router.get("/assets", response_model=list[Asset], summary="Assets, optionally of one site")
async def list_assets(user: Reader, conn: Conn, site: SiteFilter = None) -> list[Asset]:
    rows = await conn.fetch(_ASSETS, user.scope_param, site, None)
    return [Asset(**dict(r)) for r in rows]


@router.get("/assets/{asset}", responses=NOT_FOUND, response_model=Asset, summary="One asset")
async def get_asset(asset: AssetKey, user: Reader, conn: Conn) -> Asset:
    row = await conn.fetchrow(_ASSETS, user.scope_param, None, asset)
    if row is None:
        raise NotFound(f"no asset {asset!r}")
    return Asset(**dict(row))


@router.get("/sensors", response_model=list[Sensor], summary="Sensors, filtered")
async def list_sensors(
    user: Reader,
    conn: Conn,
    site: SiteFilter = None,
    asset: AssetFilter = None,
    kind: KindFilter = None,
) -> list[Sensor]:
    rows = await conn.fetch(_SENSORS, user.scope_param, site, asset, kind, None)
    return [Sensor(**dict(r)) for r in rows]


@router.get(
    "/sensors/{sensor_id}", responses=NOT_FOUND, response_model=Sensor, summary="One sensor"
)
async def get_sensor(sensor_id: SensorId, user: Reader, conn: Conn) -> Sensor:
    row = await conn.fetchrow(_SENSORS, user.scope_param, None, None, None, sensor_id)
    if row is None:
        raise NotFound(f"no sensor {sensor_id}")
    return Sensor(**dict(row))


@router.get(
    "/latest",
    response_model=list[Latest],
    summary="The latest value of each sensor (NaN is rendered null next to its quality)",
)
async def latest_values(
    user: Reader,
    conn: Conn,
    site: SiteFilter = None,
    asset: AssetFilter = None,
    sensor: SensorFilter = None,
) -> list[Latest]:
    rows = await conn.fetch(_LATEST, user.scope_param, site, asset, sensor)
    return [
        Latest(
            sensor_id=r["sensor_id"],
            sensor=r["sensor"],
            site=r["site"],
            ts=r["ts"],
            value=finite(r["value"]),
            quality=r["quality"],
        )
        for r in rows
    ]
