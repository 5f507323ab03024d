"""The four-colour risk picture per site and asset (DOMAIN.md, "Four colours").

Static and dynamic risk are kept apart and both shown:
- static: the asset's assessed risk colour (`assets.static_risk`: configured, or graded from its
  GB 18218 R value when the registry gave only R);
- dynamic: the highest current tier among the asset's active alarms (active_unacked or
  active_acked) that are not shelved or out of service;
- level: max(static, dynamic), or the dynamic tier alone when `api.risk_combine = dynamic`.
A site's static, dynamic and level are the maxima over its assets. Suppressed alarms are not in
the colour but are counted, so a console can show that something is being held back.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Conn, Reader, ServicesDep
from api.params import SiteFilter
from api.routes import API_PREFIX
from api.schemas import SECURED, AssetRisk, RiskLevel, RiskPicture, SiteRisk, finite
from hazwatch.domain import Tier

router = APIRouter(prefix=API_PREFIX, tags=["risk"], responses=SECURED)

_RISK = """
SELECT s.key AS site, s.name AS site_name, a.key AS asset, a.name, a.kind, a.static_risk,
       a.r_value,
       COALESCE(max(al.tier) FILTER (WHERE NOT al.suppressed), 0) AS dynamic,
       count(al.alarm_id) FILTER (WHERE NOT al.suppressed) AS active_alarms,
       count(al.alarm_id) FILTER (WHERE al.suppressed) AS suppressed_alarms
FROM assets a
JOIN sites s ON s.site_id = a.site_id
LEFT JOIN LATERAL (
    SELECT x.alarm_id, x.tier,
           (x.out_of_service OR COALESCE(x.shelved_until > $1, false)) AS suppressed
    FROM alarms x
    WHERE x.asset_id = a.asset_id AND x.state IN ('active_unacked', 'active_acked')
) al ON true
WHERE a.active AND s.active
  AND ($2::text[] IS NULL OR s.key = ANY($2::text[]))
  AND ($3::text IS NULL OR s.key = $3)
GROUP BY s.key, s.name, a.asset_id
ORDER BY s.key, a.key
"""


def level(tier: int) -> RiskLevel:
    return RiskLevel(tier=tier, colour=Tier(tier).colour)


@router.get("/risk", response_model=RiskPicture, summary="Four-colour risk per site and asset")
async def risk(user: Reader, conn: Conn, svc: ServicesDep, site: SiteFilter = None) -> RiskPicture:
    combine = svc.settings.api.risk_combine
    rows = await conn.fetch(_RISK, svc.clock(), user.scope_param, site)
    sites: dict[str, tuple[str, list[AssetRisk]]] = {}
    for r in rows:
        static, dynamic = int(r["static_risk"]), int(r["dynamic"])
        shown = max(static, dynamic) if combine == "max" else dynamic
        sites.setdefault(r["site"], (r["site_name"], []))[1].append(
            AssetRisk(
                asset=r["asset"],
                name=r["name"],
                kind=r["kind"],
                r_value=finite(r["r_value"]),
                static=level(static),
                dynamic=level(dynamic),
                level=level(shown),
                active_alarms=r["active_alarms"],
                suppressed_alarms=r["suppressed_alarms"],
            )
        )
    return RiskPicture(
        combine=combine,
        sites=[
            SiteRisk(
                site=key,
                name=name,
                static=level(max((a.static.tier for a in assets), default=0)),
                dynamic=level(max((a.dynamic.tier for a in assets), default=0)),
                level=level(max((a.level.tier for a in assets), default=0)),
                assets=assets,
            )
            for key, (name, assets) in sites.items()
        ],
    )
