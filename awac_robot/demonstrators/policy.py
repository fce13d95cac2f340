"""An exported ONNX policy as a demonstrator: collect episodes from a trained policy (source "policy").

Sizes are checked when the demonstrator is made and again on the first observation of each
episode, so a policy for another task fails before a single step is recorded. Exploration
noise is `collect`'s business, like for every other source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from awac_robot.envs import TaskEnv
from awac_robot.onnx_policy import OnnxPolicy
from awac_robot.spec import SpecMismatch, TaskSpec


class OnnxPolicyDemonstrator:
    source = "policy"

    def __init__(self, path: str | Path, spec: TaskSpec) -> None:
        self.policy = OnnxPolicy(path)
        self.policy.check_spec(spec)
        self.spec = spec

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self.spec.check_matches(env.config.spec, "the collection env")
        self._check(obs)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self._check(obs)
        return np.asarray(self.policy(obs), dtype=np.float32).copy()

    def keep_episode(self) -> bool:
        return True

    def _check(self, obs: np.ndarray) -> None:
        if np.shape(obs) != (self.spec.obs_dim,):
            raise SpecMismatch(
                f"policy {self.policy.path} takes {self.spec.obs_dim} observation numbers, got shape {np.shape(obs)}"
            )
