"""Each task's success rule, recomputed from recorded observations alone.

Imported demonstrations (DAPG pickles, Minari datasets without success infos) carry rewards
from another simulator or none, so the store's sparse reward is recomputed from the
observations with the rule the simulator itself applies (gymnasium-robotics 1.4.2:
`AdroitHand*-v1.step`, `FetchEnv._is_success`, FrankaKitchen-v1's subtask check). Each rule
reads only entries of the flat observation, at the offsets that env's `_get_obs` lays them
out in; `tests/test_success_rules.py` checks the Adroit rules against the env's own
`info["success"]` on real rollouts. A task whose rule cannot be recomputed from its
observation has no entry, and importing data for it is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from awac_robot.envs import get_task
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


#: FetchEnv's `distance_threshold`, the same for reach, push, pick_place and slide.
FETCH_GOAL_DISTANCE = 0.05
#: FrankaKitchen-v1 counts a subtask done while its joints are this close to the goal (`BONUS_THRESH`).
KITCHEN_DONE_DISTANCE = 0.3
#: Joint values per kitchen subtask in achieved/desired goals (`OBS_ELEMENT_GOALS` in gymnasium-robotics).
KITCHEN_GOAL_SIZES = {
    "bottom burner": 2,
    "top burner": 2,
    "light switch": 2,
    "slide cabinet": 1,
    "hinge cabinet": 2,
    "microwave": 1,
    "kettle": 7,
}


def _fetch_success(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """A Fetch task is solved while the achieved goal is within 0.05 m of the desired goal (`FetchEnv._is_success`)."""
    achieved = obs[:, [spec.obs_names.index(f"achieved_goal_{axis}") for axis in "xyz"]]
    desired = obs[:, [spec.obs_names.index(f"desired_goal_{axis}") for axis in "xyz"]]
    return np.linalg.norm(achieved - desired, axis=1) < FETCH_GOAL_DISTANCE


def _kitchen_success(obs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Solved from the first step at which every subtask has been done at least once (FrankaKitchen-v1's rule).

    The flat kitchen observation ends with the achieved then the desired joint values of the
    task's subtasks in `goal_order` (awac_robot.envs); `obs` must be one episode's steps in order.
    """
    goals = get_task(spec.name).goal_order
    width = sum(KITCHEN_GOAL_SIZES[goal] for goal in goals)
    achieved, desired = obs[:, -2 * width : -width], obs[:, -width:]
    done_ever = np.ones(len(obs), dtype=bool)
    start = 0
    for goal in goals:
        stop = start + KITCHEN_GOAL_SIZES[goal]
        near = np.linalg.norm(achieved[:, start:stop] - desired[:, start:stop], axis=1) < KITCHEN_DONE_DISTANCE
        done_ever &= np.logical_or.accumulate(near)
        start = stop
    return done_ever


#: task -> success per row of an (N, obs_dim) observation array (the kitchen's: one episode's rows, in order)
SUCCESS_FROM_OBS: dict[str, Callable[[np.ndarray, TaskSpec], np.ndarray]] = {
    "door": _door,
    "pen": _pen,
    "relocate": _relocate,
    "hammer": _hammer,
    **{task: _fetch_success for task in ("reach", "push", "pick_place", "slide")},
    "kitchen": _kitchen_success,
}
#: the tasks whose demonstrations DAPG files hold: the Adroit hands
ADROIT_TASKS = ("door", "hammer", "pen", "relocate")
