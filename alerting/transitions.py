"""Tier transitions as the engine returns them: numpy columns, one row per transition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import numpy as np
import numpy.typing as npt

from alerting.rules import Rule


class Transition(NamedTuple):
    """A tier change of one rule. `subject` is the sensor position for sensor rules and the
    vote index for `Rule.VOTE`."""

    rule: Rule
    subject: int
    ts_us: int
    from_tier: int
    to_tier: int
    value: float
    predicted: bool


def transition_order(t: Transition) -> tuple[int, int, int, int]:
    """Time, then sensor rules before votes, then subject, then rule."""
    return (t.ts_us, int(t.rule == Rule.VOTE), t.subject, int(t.rule))


@dataclass(frozen=True, slots=True)
class Transitions:
    rule: npt.NDArray[np.int8]
    subject: npt.NDArray[np.int32]
    ts_us: npt.NDArray[np.int64]
    from_tier: npt.NDArray[np.int8]
    to_tier: npt.NDArray[np.int8]
    value: npt.NDArray[np.float64]
    predicted: npt.NDArray[np.bool_]

    @classmethod
    def build(
        cls,
        rule: npt.ArrayLike,
        subject: npt.ArrayLike,
        ts_us: npt.ArrayLike,
        *,
        tiers: tuple[npt.ArrayLike, npt.ArrayLike],
        value: npt.ArrayLike,
        predicted: npt.ArrayLike | None = None,
    ) -> Self:
        """Columns from arrays or scalars (broadcast); `tiers` is (from, to); `predicted`
        defaults to "is a trend rule"."""
        from_tier, to_tier = tiers
        subjects = np.atleast_1d(np.asarray(subject, dtype=np.int32))
        n = len(subjects)

        def column(values: npt.ArrayLike, dtype: type) -> npt.NDArray[Any]:
            array: npt.NDArray[Any] = np.asarray(values, dtype=dtype)
            if array.shape == (n,):
                return array if array is not values else array.copy()
            return np.broadcast_to(array, (n,)).copy()

        rules = column(rule, np.int8)
        return cls(
            rule=rules,
            subject=subjects,
            ts_us=column(ts_us, np.int64),
            from_tier=column(from_tier, np.int8),
            to_tier=column(to_tier, np.int8),
            value=column(value, np.float64),
            predicted=rules == Rule.TREND if predicted is None else column(predicted, np.bool_),
        )

    @classmethod
    def empty(cls) -> Self:
        return cls.build([], [], [], tiers=([], []), value=[])

    @classmethod
    def concat(cls, parts: list[Transitions]) -> Transitions:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            rule=np.concatenate([p.rule for p in parts]),
            subject=np.concatenate([p.subject for p in parts]),
            ts_us=np.concatenate([p.ts_us for p in parts]),
            from_tier=np.concatenate([p.from_tier for p in parts]),
            to_tier=np.concatenate([p.to_tier for p in parts]),
            value=np.concatenate([p.value for p in parts]),
            predicted=np.concatenate([p.predicted for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.rule)

    def sorted(self) -> Transitions:
        """In `transition_order`."""
        order = np.lexsort((self.rule, self.subject, self.rule == Rule.VOTE, self.ts_us))
        return self.take(order)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Transitions:
        return Transitions(
            rule=self.rule[index],
            subject=self.subject[index],
            ts_us=self.ts_us[index],
            from_tier=self.from_tier[index],
            to_tier=self.to_tier[index],
            value=self.value[index],
            predicted=self.predicted[index],
        )

    def to_list(self) -> list[Transition]:
        return [
            Transition(Rule(r), s, t, f, to, v, p)
            for r, s, t, f, to, v, p in zip(
                self.rule.tolist(), self.subject.tolist(), self.ts_us.tolist(),
                self.from_tier.tolist(), self.to_tier.tolist(), self.value.tolist(),
                self.predicted.tolist(), strict=True,
            )
        ]  # fmt: skip
