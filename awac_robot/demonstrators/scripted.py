"""`make_scripted(task)`: the privileged experts behind `awac-robot collect --demonstrator scripted`.

They read simulator state a learned policy never sees, which is fine for producing data
and is why they are kept apart from `policy.py`. `rollout` scores one of them (or any
demonstrator) the same way for the tests and `bench/scripted_success.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from awac_robot.demonstrators import Demonstrator
from awac_robot.demonstrators.scripted_adroit import DoorExpert, RelocateExpert
from awac_robot.demonstrators.scripted_fetch import PickPlaceExpert, PushExpert, ReachExpert
from awac_robot.envs import TaskEnv, TaskError, get_task

_EXPERTS: dict[str, Callable[[], Demonstrator]] = {
    "door": DoorExpert,
    "relocate": RelocateExpert,
    "push": PushExpert,
    "pick_place": PickPlaceExpert,
    "reach": ReachExpert,
}


def scripted_tasks() -> list[str]:
    return sorted(_EXPERTS)


def make_scripted(task: str) -> Demonstrator:
    """A fresh scripted expert for `task` (a registered name); one line of advice if there is none."""
    name = get_task(task).name
    if name not in _EXPERTS:
        raise TaskError(
            f"task '{name}' has no scripted demonstrator; scripted tasks are {', '.join(scripted_tasks())} "
            "(use --demonstrator policy:PATH.onnx, or keyboard for a tabletop task)"
        )
    return _EXPERTS[name]()


@dataclass(frozen=True)
class RolloutResult:
    """How one episode went: success on the last step, on any step, and its length."""

    success_final: bool
    success_any: bool
    steps: int


def rollout(
    env: TaskEnv,
    demo: Demonstrator,
    seed: int,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> RolloutResult:
    """Run one full-length episode, adding N(0, noise^2) to each action and clipping to [-1, 1].

    With the default generator (seeded with `seed`) the noise is the very noise `collect`
    adds to episode `seed` when no perturbation is asked for.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    demo.reset(env, obs)
    any_success = bool(info["success"])
    success = any_success
    steps = 0
    done = False
    while not done:
        action = demo.act(obs)
        if noise > 0:
            action = np.clip(action + rng.normal(0.0, noise, action.shape), -1.0, 1.0).astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        success = bool(info["success"])
        any_success |= success
        steps += 1
        done = terminated or truncated
    return RolloutResult(success_final=success, success_any=any_success, steps=steps)
