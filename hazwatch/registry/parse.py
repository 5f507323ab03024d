"""Reads a registry file: YAML to checked models, or every problem with its path and line.

PyYAML keeps the last of two equal mapping keys without a word; here a duplicate key is a
problem like any other. Problems are collected, not raised one at a time, so an engineer fixes
a file in one pass.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hazwatch.errors import Problem, RegistryError
from hazwatch.registry.checks import Path, check_registry
from hazwatch.registry.model import RegistryFile


def load_registry(path: str | FsPath) -> RegistryFile:
    """Parse and check a registry file; raise RegistryError listing every problem."""
    source = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(source, [Problem("<file>", f"cannot read: {exc.strerror}")]) from exc
    return parse_registry(text, source=source)


def parse_registry(text: str, *, source: str = "<registry>") -> RegistryFile:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RegistryError(source, [Problem("<yaml>", str(exc).splitlines()[0], line)]) from exc
    if node is None:
        raise RegistryError(source, [Problem("<file>", "the file is empty")])
    lines: dict[Path, int] = {}
    problems: list[Problem] = []
    data = _to_python(node, (), lines, problems)

    try:
        registry = RegistryFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(p for p in error["loc"] if isinstance(p, int) or p in _FIELD_NAMES)
            problems.append(_problem(path, error["msg"].removeprefix("Value error, "), lines))
        raise RegistryError(source, problems) from exc

    problems.extend(_problem(path, msg, lines) for path, msg in check_registry(registry))
    if problems:
        raise RegistryError(source, problems)
    return registry


def _field_names() -> frozenset[str]:
    """Every field name of the file's models: pydantic adds union tags to error locations,
    which are dropped so a location is a plain path into the file."""
    names: set[str] = set()
    pending: list[Any] = [RegistryFile]
    seen: set[Any] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            names.add(name)
            pending.extend(_models_in(field.annotation))
    return frozenset(names)


def _models_in(annotation: Any) -> list[Any]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


_FIELD_NAMES = _field_names()


def _problem(path: Path, message: str, lines: dict[Path, int]) -> Problem:
    line = None
    for cut in range(len(path), -1, -1):
        line = lines.get(path[:cut])
        if line is not None:
            break
    return Problem(_format_path(path), message, line)


def _format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<top>"


def _to_python(node: yaml.Node, path: Path, lines: dict[Path, int], problems: list[Problem]) -> Any:
    """Build plain Python data from a YAML node tree, recording the line of every path and
    reporting duplicate mapping keys."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                problems.append(
                    Problem(
                        _format_path((*path, str(key))),
                        f"duplicate key {key!r} in one mapping",
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            out[key] = _to_python(value_node, (*path, str(key)), lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*path, i), lines, problems) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    """A scalar's value with YAML's usual typing (int, float, bool, null, str)."""
    if not isinstance(node, yaml.ScalarNode):
        return f"<{type(node).__name__} used as a key>"
    return yaml.SafeLoader("").construct_object(node, deep=True)
