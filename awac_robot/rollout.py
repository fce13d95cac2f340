"""The one episode loop: collection, online finetuning, evaluation, export checks and replays all run it.

Four loops used to live apart and drifted (three seeding schemes among them); now every
stage asks `rollout` for an Episode and adds its own work through the per-step hook.

The seeding rule, the only one: an episode is reset with its own seed (`env.reset(seed=s)`)
and draws any action noise from `np.random.default_rng(s)`, so the stored seed and actor
reproduce an episode on their own. A stream of episodes uses seeds `base + i`; streams
differ only by base (collection: `--seed`; evaluation and online finetuning: the bases in
`train/evaluation.py` and `train/finetune.py`). A learned policy's own sampling noise is
the actor's business (the trainer keeps that generator in its checkpoints).

Action noise is applied here, not by actors, so scripted, policy and human data are
perturbed the same documented way (docs/store.md): Gaussian noise on every action, then
clipping to [-1, 1], and optionally a fraction of "perturbed" episodes with bursts of
random actions. The recorded action is the one the env executed (after noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from awac_robot.envs import TaskEnv
from awac_robot.store import Episode

#: The largest seed a command accepts (for itself, or as the base of a stream): gymnasium and numpy take
#: any non-negative integer, and with the streams' offsets every episode seed still fits the store's int64.
MAX_SEED = 2**32 - 1


class SeedError(ValueError):
    """A seed given on the command line that no episode can be reset with; the message names the flag."""


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """Raise SeedError unless `seed` is None (not given) or an integer in [0, MAX_SEED]."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise SeedError(f"{flag} must be an integer in [0, {MAX_SEED}], got {seed}")


#: In a perturbed episode, each step starts a burst of random actions with this probability ...
PERTURB_START = 0.05
#: ... lasting this many steps: long enough to knock the task off course, short enough to recover.
PERTURB_STEPS = 10


class Actor(Protocol):
    """Picks the actions of one episode at a time (demonstrators are actors with a source and a veto)."""

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        """Start a new episode; `obs` is the flat observation `env.reset` returned."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The next action (shape (act_dim,), in [-1, 1]) for the flat observation `obs`."""


@dataclass
class FunctionActor:
    """A policy that is just a function of the observation (no per-episode state)."""

    act: Callable[[np.ndarray], np.ndarray]

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        pass


@dataclass(frozen=True)
class Step:
    """One env step as the per-step hook sees it (`action` is the executed one)."""

    index: int
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    truncated: bool
    info: dict[str, Any]


#: Called after every env step; returning True ends the episode there as a truncation (a budget ran out).
StepHook = Callable[[Step], bool | None]


def rollout(
    env: TaskEnv,
    actor: Actor,
    seed: int,
    *,
    source: str = "policy",
    noise: float = 0.0,
    perturb: float = 0.0,
    on_step: StepHook | None = None,
) -> Episode:
    """One full episode from `env.reset(seed=seed)` until the env terminates or truncates (or the hook stops it)."""
    rng = np.random.default_rng(seed)
    perturbed = perturb > 0 and rng.random() < perturb
    obs, _ = env.reset(seed=seed)
    actor.reset(env, obs)
    observations, rewards, terminated, truncated, success = [obs], [], [], [], []
    actions: list[np.ndarray] = []
    burst = 0
    done = False
    while not done:
        action = np.asarray(actor.act(obs), dtype=np.float64)
        if perturbed and burst == 0 and rng.random() < PERTURB_START:
            burst = PERTURB_STEPS
        if burst:
            action = rng.uniform(-1.0, 1.0, size=action.shape)
            burst -= 1
        if noise > 0:
            action = action + rng.normal(0.0, noise, size=action.shape)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        next_obs, reward, term, trunc, info = env.step(action)
        if on_step is not None and on_step(Step(len(actions), obs, action, reward, next_obs, term, trunc, info)):
            trunc = True
        observations.append(next_obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        success.append(info["success"])
        obs = next_obs
        done = term or trunc
    return Episode(
        obs=np.stack(observations),
        action=np.stack(actions),
        reward=np.asarray(rewards),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
        success=np.asarray(success),
        source=source,
        seed=seed,
    )
