"""Policy evaluation: deterministic actions on freshly seeded episodes, the same seeds every time.

Fixed seeds make two evaluations of a run comparable (the same door positions), and the
evaluation env is separate from the exploration env so evaluating never disturbs an
episode being collected.
"""

from __future__ import annotations

import numpy as np
import torch

from awac_robot.envs import TaskEnv

EVAL_SEED_BASE = 1_000_000


@torch.no_grad()
def evaluate(policy: torch.nn.Module, env: TaskEnv, episodes: int, seed: int = 0) -> dict[str, float]:
    """Success rate (solved at any step, the DAPG/AWAC convention), mean return and steps taken."""
    successes, returns, steps = 0, [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED_BASE + 1000 * seed + episode)
        solved, total, done = False, 0.0, False
        while not done:
            action = policy(torch.from_numpy(obs)[None])[0].numpy()
            obs, reward, terminated, truncated, info = env.step(action)
            solved |= bool(info["success"])
            total += reward
            steps += 1
            done = terminated or truncated
        successes += solved
        returns.append(total)
    return {
        "success_rate": successes / episodes,
        "return": float(np.mean(returns)),
        "episodes": episodes,
        "eval_env_steps": steps,
    }
