"""The TaskSpec: the contract every stage checks the pieces it is handed against.

A store, a checkpoint, an exported policy and a controller each carry a copy of the
spec of the task they were made for. Comparing specs before any data moves is what
turns "policy outputs 24 numbers, robot wants 28" from a crash deep in a loop (or, worse,
a silently broadcast array) into one clear line at start-up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class SpecMismatch(ValueError):
    """Two pieces of the pipeline were made for different tasks or shapes."""


@dataclass(frozen=True)
class TaskSpec:
    """Sizes, names, bounds and timing of one task, as seen by a learner or a controller."""

    name: str
    domain: str
    obs_dim: int
    act_dim: int
    act_low: tuple[float, ...]
    act_high: tuple[float, ...]
    control_period: float
    episode_steps: int
    obs_names: tuple[str, ...] = field(default_factory=tuple)
    act_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.act_low) != self.act_dim or len(self.act_high) != self.act_dim:
            raise ValueError(f"task {self.name!r}: action bounds must have {self.act_dim} entries")
        if self.obs_names and len(self.obs_names) != self.obs_dim:
            raise ValueError(f"task {self.name!r}: {len(self.obs_names)} observation names for obs_dim {self.obs_dim}")
        if self.act_names and len(self.act_names) != self.act_dim:
            raise ValueError(f"task {self.name!r}: {len(self.act_names)} action names for act_dim {self.act_dim}")
        if self.control_period <= 0 or self.episode_steps <= 0:
            raise ValueError(f"task {self.name!r}: control_period and episode_steps must be positive")

    @property
    def control_rate(self) -> float:
        return 1.0 / self.control_period

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SpecMismatch(f"task spec has unknown fields {sorted(unknown)} (written by a newer awac-robot?)")
        values = dict(data)
        for key in ("act_low", "act_high", "obs_names", "act_names"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        return cls.from_dict(json.loads(text))

    def check_matches(self, other: TaskSpec, what: str) -> None:
        """Raise SpecMismatch naming the first difference between `self` (expected) and `other`.

        Names are compared too: a policy trained with observation entries in another order
        has the right shape and the wrong meaning.
        """
        for key in (
            "name",
            "obs_dim",
            "act_dim",
            "act_low",
            "act_high",
            "obs_names",
            "act_names",
            "control_period",
        ):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                shown_mine, shown_theirs = _short(mine), _short(theirs)
                raise SpecMismatch(
                    f"{what} was made for a different task: {key} is {shown_theirs}, "
                    f"task {self.name!r} needs {shown_mine}"
                )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
