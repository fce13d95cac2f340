"""The simulated robot: the MuJoCo task stepped once per robot period with what the robot process decided.

It steps on `apply` and `hold`, so the simulator advances in lockstep with the robot loop and
a deployment can be simulated again from the seed and the applied commands alone
(`awac-robot replay --log`). The state is stamped right after the step that produced it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from awac_robot.control.drivers import Measurement, RobotDriver
from awac_robot.control.limits import motion_dims
from awac_robot.envs import TaskEnv, make_env
from awac_robot.spec import TaskSpec


def pose_hold_target(env: TaskEnv, applied: np.ndarray, motion: tuple[int, ...]) -> np.ndarray:
    """The command that keeps the simulated robot where it is now.

    Adroit actions are normalised position targets (target = act_mean + a * act_rng), so the
    hold is the current joint positions in those units; any other task keeps its applied
    command with every motion dimension (delta, velocity) at 0.
    """
    sim: Any = env.unwrapped
    model = getattr(sim, "model", None)
    if hasattr(sim, "act_mean") and hasattr(sim, "act_rng") and model is not None and model.nu == applied.size:
        joints = model.actuator_trnid[:, 0]
        positions = sim.data.qpos[model.jnt_qposadr[joints]]
        return np.asarray(np.clip((positions - sim.act_mean) / sim.act_rng, -1.0, 1.0), dtype=np.float64)
    hold = applied.copy()
    hold[list(motion)] = 0.0
    return hold


class SimDriver(RobotDriver):
    """The task's simulator as a robot: one simulator step per call of `apply` or `hold`; episodes reset on end."""

    def __init__(self, spec: TaskSpec, settings: Any, seed: int | None) -> None:
        self.env = make_env(spec.name, seed=seed)
        self.motion = motion_dims(spec)
        obs, _ = self.env.reset()
        #: the command the last step used; before any step, the hold at the starting pose
        self.applied = pose_hold_target(self.env, np.zeros(spec.act_dim), self.motion)
        self.holding = True
        self.episodes = self.successes = 0
        self._episode_success = False
        self._state = Measurement(obs, time.perf_counter(), self.applied.copy())

    def read(self) -> Measurement:
        return self._state

    def apply(self, command: np.ndarray) -> None:
        self.holding = False
        self._step(command)

    def hold(self) -> None:
        if not self.holding:
            # latch the pose once on entering the hold: re-reading it every step would follow any sag
            self.applied, self.holding = pose_hold_target(self.env, self.applied, self.motion), True
        self._step(self.applied)

    def close(self) -> None:
        self.env.close()

    def _step(self, command: np.ndarray) -> None:
        self.applied = np.array(command, dtype=np.float64)
        obs, _, terminated, truncated, info = self.env.step(self.applied)
        self._episode_success |= bool(info["success"])
        if terminated or truncated:
            self.episodes += 1
            self.successes += self._episode_success
            self._episode_success = False
            obs, _ = self.env.reset()
            if self.holding:
                self.applied = pose_hold_target(self.env, self.applied, self.motion)
        self._state = Measurement(obs, time.perf_counter(), self.applied.copy(), self.episodes, self.successes)
