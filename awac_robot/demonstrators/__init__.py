"""Demonstrators: anything that picks actions for `collect` to record.

A demonstrator sees the task env at reset (scripted ones take the model's constants through
`env.unwrapped`; see `scripted.py` for what they may read) and then maps each flat observation
to an action in [-1, 1]. Exploration noise is not the demonstrator's business: the shared rollout adds it,
so every source of data is perturbed the same documented way.
"""

from __future__ import annotations

from typing import Protocol

from awac_robot.rollout import Actor


class Demonstrator(Actor, Protocol):
    """An actor whose episodes are recorded: it names their source and may veto one."""

    #: what the store records as the episode's source: "scripted", "policy" or "human"
    source: str

    def keep_episode(self) -> bool:
        """Asked once an episode ends; False drops it (a person rejecting a bad take). Automatic sources say True."""
