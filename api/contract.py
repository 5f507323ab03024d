"""Holding requests to the app's own OpenAPI contract where FastAPI is lenient by default.

- An unknown query parameter is refused (422) rather than ignored: a typo such as `?sites=north`
  for `?site=north` would otherwise return every site's alarms as if the filter had applied.
  So is a single-valued parameter given twice (`?site=a&site=b`), which would silently use one.
- A 405 answer carries an `Allow` header naming every method the path has, not only the methods
  of the first route that matched it.

Both read the app's OpenAPI document (built once, on first use), so they follow the routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from api.errors import Invalid

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass
class Contract:
    app: FastAPI
    _query: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    _repeatable: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    _paths: list[tuple[re.Pattern[str], frozenset[str]]] = field(default_factory=list)
    _built: bool = False

    def _build(self) -> None:
        paths: dict[str, Any] = self.app.openapi().get("paths", {})
        for template, item in paths.items():
            methods = {m for m in _METHODS if m in item}
            for method in methods:
                params = item[method].get("parameters", [])
                query = [p for p in params if p.get("in") == "query"]
                key = (method.upper(), template)
                self._query[key] = frozenset(p["name"] for p in query)
                self._repeatable[key] = frozenset(
                    p["name"] for p in query if _is_array(p.get("schema", {}))
                )
            literal = re.split(r"\{[^}]+\}", template)
            pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in literal) + "$")
            self._paths.append((pattern, frozenset(m.upper() for m in methods)))
        self._built = True

    def query_names(self, method: str, template: str) -> frozenset[str] | None:
        if not self._built:
            self._build()
        return self._query.get((method, template))

    def repeatable(self, method: str, template: str) -> frozenset[str]:
        if not self._built:
            self._build()
        return self._repeatable.get((method, template), frozenset())

    def allowed_methods(self, path: str) -> frozenset[str]:
        if not self._built:
            self._build()
        found: set[str] = set()
        for pattern, methods in self._paths:
            if pattern.match(path):
                found |= methods
        return frozenset(found)


def _is_array(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "array":
        return True
    return any(_is_array(s) for s in schema.get("anyOf", []))


async def reject_unknown_query(connection: HTTPConnection) -> None:
    """An app-wide dependency: 422 for a query parameter the route does not declare."""
    if connection.scope["type"] != "http":
        return  # the stream takes its own parameters (api.routes.stream)
    contract: Contract = connection.app.state.contract
    route = connection.scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return
    names = contract.query_names(connection.scope["method"], template)
    if names is None:
        return
    given = connection.query_params
    unknown = sorted(set(given) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise Invalid(f"unknown query parameter(s): {', '.join(unknown)} (allowed: {allowed})")
    repeatable = contract.repeatable(connection.scope["method"], template)
    repeated = sorted(n for n in set(given) if n not in repeatable and len(given.getlist(n)) > 1)
    if repeated:
        raise Invalid(f"query parameter(s) given more than once: {', '.join(repeated)}")
