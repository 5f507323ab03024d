"""HazWatch's errors, one tree, wrapped at the boundaries with `raise ... from exc`.

HazwatchError
├── DatabaseError
│   ├── DatabaseUnavailable      the server cannot be reached or timed out (API: 503)
│   └── MigrationError
│       └── ExtensionMissing     TimescaleDB is not installed on the server
├── RegistryError                the registry file is invalid; carries every problem
├── ModbusConfigError            a Modbus map the collector cannot poll as written
├── ScenarioError                a simulator scenario is invalid or names what the registry lacks
├── SimulatorError               a simulator cannot run (broker unreachable, impossible options)
├── AlarmError
│   ├── AlarmNotFound            no alarm with that id (API: 404)
│   └── AlarmActionRefused       the action does not apply to the alarm's state (API: 409)
├── AccountError                 an unknown user, site or token (API: 404)
│   └── AccountConflict          a duplicate user, a token revoked twice (API: 409)
└── DemoError                    a part of `hazwatch demo` stopped while it should be running
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class HazwatchError(Exception):
    """Base of every error HazWatch raises on purpose."""


class DatabaseError(HazwatchError):
    pass


class DatabaseUnavailable(DatabaseError):
    pass


class MigrationError(DatabaseError):
    pass


class ExtensionMissing(MigrationError):
    pass


@dataclass(frozen=True, slots=True)
class Problem:
    """One invalid entry of a registry file: where it is and what is wrong."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}"


class RegistryError(HazwatchError):
    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class ModbusConfigError(HazwatchError):
    pass


class ScenarioError(HazwatchError):
    """A scenario file is invalid; carries every problem, like RegistryError."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class SimulatorError(HazwatchError):
    pass


class AlarmError(HazwatchError):
    pass


class AlarmNotFound(AlarmError):
    pass


class AlarmActionRefused(AlarmError):
    """E.g. acknowledging an alarm that is already acknowledged or closed."""


class AccountError(HazwatchError):
    pass


class AccountConflict(AccountError):
    pass


class DemoError(HazwatchError):
    pass
