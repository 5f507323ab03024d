"""Holding requests to the app's own OpenAPI contract where FastAPI is lenient by default.

- An unknown query parameter is refused (422) rather than ignored: a typo such as `?sites=north`
  for `?site=north` would otherwise return every site's alarms as if the filter had applied.
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
    _paths: list[tuple[re.Pattern[str], frozenset[str]]] = field(default_factory=list)
    _built: bool = False

    def _build(self) -> None:
        paths: dict[str, Any] = self.app.openapi().get("paths", {})
        for template, item in paths.items():
            methods = {m for m in _METHODS if m in item}
            for method in methods:
                params = item[method].get("parameters", [])
                names = frozenset(p["name"] for p in params if p.get("in") == "query")
                self._query[(method.upper(), template)] = names
            literal = re.split(r"\{[^}]+\}", template)
            pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in literal) + "$")
            self._paths.append((pattern, frozenset(m.upper() for m in methods)))
        self._built = True

    def query_names(self, method: str, template: str) -> frozenset[str] | None:
        if not self._built:
            self._build()
        return self._query.get((method, template))

    def allowed_methods(self, path: str) -> frozenset[str]:
        if not self._built:
            self._build()
        found: set[str] = set()
        for pattern, methods in self._paths:
            if pattern.match(path):
                found |= methods
        return frozenset(found)


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
    unknown = sorted(set(connection.query_params) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise Invalid(f"unknown query parameter(s): {', '.join(unknown)} (allowed: {allowed})")
