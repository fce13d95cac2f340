"""Stored episodes simulated again from their seed and actions: proof that a store still means what it says.

The simulator is deterministic, so replaying an episode's actions from `env.reset(seed)`
reproduces its observations bit for bit (max difference 0.0) on the simulator versions the
project pins. Any difference means the store was recorded by another simulator (or another
task definition), and its actions no longer lead where the store says; the check reports
by how much and from which step, and the video then shows the replay, not the recording.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from awac_robot.envs import TaskEnv, make_env
from awac_robot.filming import FilmedEpisode, filmed_rollout
from awac_robot.rollout import Step, rollout
from awac_robot.store import UNKNOWN_SEED, DemoStore, Episode


class ReplayError(ValueError):
    """An episode that cannot be replayed as asked (out of range, no seed); the message says why."""


@dataclass
class PlaybackActor:
    """Plays a stored action sequence back, one action per step."""

    actions: np.ndarray
    _next: int = 0

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._next = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        action = self.actions[self._next]
        self._next += 1
        return action


@dataclass(frozen=True)
class ReplayCheck:
    """How a replayed episode compares with the stored one."""

    stored_steps: int
    replayed_steps: int
    max_obs_diff: float
    first_diff_step: int | None

    @property
    def exact(self) -> bool:
        return self.first_diff_step is None and self.stored_steps == self.replayed_steps

    def describe(self) -> str:
        if self.exact:
            return f"replay matches the store exactly ({self.stored_steps} steps, max observation difference 0.0)"
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mujoco", "gymnasium-robotics"))
        return (
            f"replay DIFFERS from the store: max observation difference {self.max_obs_diff:.3g}, first at step "
            f"{self.first_diff_step}, {self.replayed_steps} steps replayed of {self.stored_steps} stored; the "
            f"episode was recorded with another simulator or task definition (this is {versions})"
        )


@dataclass
class Replayed:
    index: int
    stored: Episode
    check: ReplayCheck
    film: FilmedEpisode | None  # None when only checked


def read_episodes(store_path: Path, indices: list[int]) -> tuple[DemoStore, dict[int, Episode]]:
    """The episodes `indices` of a store (closed again), checked to be replayable."""
    if not Path(store_path).exists():
        raise FileNotFoundError(f"no demo store at {store_path}")
    with DemoStore.open(store_path) as store:
        count = store.num_episodes
        wrong = [i for i in indices if not 0 <= i < count]
        if wrong:
            raise ReplayError(f"store {store_path} has {count} episodes (0..{count - 1}); no episode {wrong[0]}")
        wanted = set(indices)
        found = {i: e for i, e in zip(itertools.count(), store.episodes(), strict=False) if i in wanted}
    for index, episode in found.items():
        if episode.seed == UNKNOWN_SEED:
            raise ReplayError(
                f"episode {index} of {store_path} has no reset seed (source {episode.source}): nothing to replay from"
            )
    return store, found


def compare(stored: Episode, replayed: Episode) -> ReplayCheck:
    steps = min(len(stored.obs), len(replayed.obs))
    diff = np.abs(stored.obs[:steps].astype(np.float64) - replayed.obs[:steps]).max(axis=1)
    bad = np.flatnonzero(diff > 0)
    return ReplayCheck(stored.length, replayed.length, float(diff.max()), int(bad[0]) if bad.size else None)


def replay_episodes(
    store_path: Path, indices: list[int], size: int | None = None, caption: str = "{task} episode {index} (seed {seed})"
) -> list[Replayed]:
    """Re-simulate the episodes `indices` of a store, each checked against the store; filmed at `size` px if given.

    `caption` heads every frame; it may use {task}, {index} and {seed}.
    """
    store, episodes = read_episodes(store_path, indices)
    task = store.spec.name
    render = {} if size is None else {"render_mode": "rgb_array", "size": size}
    env = make_env(task, reward=store.reward_mode, **render)
    results = []
    try:
        for index in indices:
            stored = episodes[index]

            def at_stored_end(step: Step, stored: Episode = stored) -> bool:
                return step.index + 1 >= stored.length  # an episode cut short (budget, a person) ends there again

            actor, kwargs = PlaybackActor(stored.action), {"source": stored.source, "on_step": at_stored_end}
            if size is None:
                film, replayed = None, rollout(env, actor, stored.seed, **kwargs)
            else:
                text = caption.format(task=task, index=index, seed=stored.seed)
                film = filmed_rollout(env, actor, stored.seed, text, **kwargs)
                replayed = film.episode
            results.append(Replayed(index, stored, compare(stored, replayed), film))
    finally:
        env.close()
    return results
