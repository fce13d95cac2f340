"""Policy evaluation: deterministic actions on freshly seeded episodes, the same seeds every time.

Fixed seeds make two evaluations of a run comparable (the same door positions), and the
evaluation env is separate from the exploration env so evaluating never disturbs an
episode being collected.
"""

from __future__ import annotations

import numpy as np
import torch

from awac_robot.envs import TaskEnv
from awac_robot.rollout import FunctionActor, rollout

EVAL_SEED_BASE = 1_000_000


def deterministic_actor(policy: torch.nn.Module) -> FunctionActor:
    """A torch policy `(B, obs_dim) -> (B, act_dim)` as a rollout actor, one observation at a time."""

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return policy(torch.from_numpy(obs)[None])[0].numpy()

    return FunctionActor(act)


def evaluate(policy: torch.nn.Module, env: TaskEnv, episodes: int, seed: int = 0) -> dict[str, float]:
    """Success rate (solved at any step, the DAPG/AWAC convention), mean return and steps taken."""
    actor = deterministic_actor(policy)
    results = [rollout(env, actor, EVAL_SEED_BASE + 1000 * seed + episode) for episode in range(episodes)]
    return {
        "success_rate": sum(episode.solved for episode in results) / episodes,
        "return": float(np.mean([episode.total_return for episode in results])),
        "episodes": episodes,
        "eval_env_steps": sum(episode.length for episode in results),
    }
