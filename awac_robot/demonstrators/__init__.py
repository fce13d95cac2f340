"""Demonstrators: anything that picks actions for `collect` to record.

A demonstrator sees the task env at reset (scripted ones read simulator state through
`env.unwrapped`, which a policy must never do) and then maps each flat observation to an
action in [-1, 1]. Exploration noise is not the demonstrator's business: `collect` adds it,
so every source of data is perturbed the same documented way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from awac_robot.envs import TaskEnv


class Demonstrator(Protocol):
    """Picks actions for one episode at a time."""

    #: what the store records as the episode's source: "scripted", "policy" or "human"
    source: str

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        """Start a new episode; `obs` is the flat observation `env.reset` returned."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The next action (float32, shape (act_dim,), in [-1, 1]) for the flat observation `obs`."""

    def keep_episode(self) -> bool:
        """Asked once an episode ends; False drops it (a person rejecting a bad take). Automatic sources say True."""
