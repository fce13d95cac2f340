"""The parts of gymnasium-robotics' simulator envs that the scripted experts reach into.

gymnasium-robotics ships no type information, so `env.unwrapped` is only a gymnasium `Env`
to a type checker. These protocols name what each expert relies on (it casts `env.unwrapped`
to one), which lets mypy check its use and tells a reader what an upgrade of
gymnasium-robotics has to keep. `mujoco` has no type information either: its model and
data go unchecked.
"""

from __future__ import annotations

from typing import Protocol

import mujoco
import numpy as np


class MujocoSim(Protocol):
    """A MuJoCo env of gymnasium-robotics (Adroit, Fetch, the kitchen's Franka robot)."""

    model: mujoco.MjModel
    data: mujoco.MjData

    @property
    def dt(self) -> float:
        """Seconds of simulation per env step."""
        ...


class FetchSim(MujocoSim, Protocol):
    """A Fetch env: its success radius and the action code one env step runs (the slide expert rehearses it)."""

    distance_threshold: float

    def _set_action(self, action: np.ndarray) -> None: ...

    def _mujoco_step(self, action: np.ndarray) -> None: ...

    def _step_callback(self) -> None: ...


class FrankaRobot(MujocoSim, Protocol):
    """The kitchen's arm: a joint velocity action of 1 is `act_rng` rad/s."""

    act_rng: np.ndarray


class KitchenSim(Protocol):
    robot_env: FrankaRobot
