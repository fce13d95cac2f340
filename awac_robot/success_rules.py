"""Each Adroit task's success rule, recomputed from recorded observations alone.

Imported demonstrations (DAPG pickles) carry dense rewards from an older simulator, so the
store's sparse reward is recomputed from the observations with the rule the simulator
itself applies (gymnasium-robotics 1.4.2, `AdroitHand*-v1.step`). Each rule here reads only
entries of the flat observation, at the offsets that env's `_get_obs` lays them out in;
`tests/test_success_rules.py` checks every rule against the env's own `info["success"]`
on real rollouts. A task whose rule cannot be recomputed from its observation has no entry,
and importing data for it is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from awac_robot.spec import TaskSpec


def _door(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """The hinge angle reaches 1.35 rad (`goal_achieved = qpos[door_hinge] >= 1.35`)."""
    return obs[:, spec.obs_names.index("door_hinge_angle")] >= 1.35


#: pen observation (45): 24 hand joints, pen position, pen velocity (6), pen orientation (3),
#: target orientation (3), pen minus target position (3), pen minus target orientation (3)
PEN_ORIENTATION, PEN_TARGET_ORIENTATION, PEN_TO_TARGET = slice(33, 36), slice(36, 39), slice(39, 42)


def _pen(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Within 7.5 cm of the target and oriented alike (`distance < 0.075 and dot(orientations) > 0.95`)."""
    near = np.linalg.norm(obs[:, PEN_TO_TARGET], axis=1) < 0.075
    alike = np.sum(obs[:, PEN_ORIENTATION] * obs[:, PEN_TARGET_ORIENTATION], axis=1) > 0.95
    return near & alike


#: relocate observation (39): 30 hand/arm joints, palm minus ball, palm minus target, ball minus target
RELOCATE_BALL_TO_TARGET = slice(36, 39)


def _relocate(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """The ball is within 10 cm of the target (`norm(obj_pos - target_pos) < 0.1`)."""
    return np.linalg.norm(obs[:, RELOCATE_BALL_TO_TARGET], axis=1) < 0.1


#: hammer observation (46): 26 hand joints, then the nail's slide joint (`nail_dir`, metres driven in)
HAMMER_NAIL_DEPTH = 26
#: In AdroitHandHammer-v1's model the nail head site sits 0.101 m above the nail body's origin and
#: the goal site 0.01 m above the board, on the same axis the nail slides along: the head-to-goal
#: distance is |0.091 - depth| whatever the board's height or angle.
HAMMER_HEAD_OVER_GOAL = 0.091


def _hammer(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """The nail head is within 1 cm of its goal (`norm(nail_pos - goal_pos) < 0.01`)."""
    return np.abs(HAMMER_HEAD_OVER_GOAL - obs[:, HAMMER_NAIL_DEPTH]) < 0.01


#: task -> success per row of an (N, obs_dim) observation array
SUCCESS_FROM_OBS: dict[str, Callable[[np.ndarray, TaskSpec], np.ndarray]] = {
    "door": _door,
    "pen": _pen,
    "relocate": _relocate,
    "hammer": _hammer,
}
