"""Each Adroit success rule, recomputed from observations, agrees with the simulator's own `info["success"]`."""

from __future__ import annotations

import pickle
from pathlib import Path

import mujoco
import numpy as np
import pytest

from awac_robot.collect import run_episode
from awac_robot.demonstrators.scripted import make_scripted
from awac_robot.envs import TaskEnv, get_spec, make_env
from awac_robot.importers import import_dapg
from awac_robot.store import DemoStore
from awac_robot.success_rules import ADROIT_TASKS, HAMMER_NAIL_DEPTH, SUCCESS_FROM_OBS


def _steps(env: TaskEnv, count: int, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """`count` steps of small random actions from the env's current state: observations after each, and success."""
    observations, success = [], []
    for _ in range(count):
        obs, _, _, _, info = env.step(rng.uniform(-scale, scale, env.config.act_dim).astype(np.float32))
        observations.append(obs)
        success.append(info["success"])
    return np.stack(observations), np.asarray(success)


def _pen_rollout() -> tuple[np.ndarray, np.ndarray]:
    """The target turned to the pen's own orientation (solved), then the hand jostles the pen away from it."""
    env = make_env("pen")
    env.reset(seed=0)
    sim = env.unwrapped
    sim.model.body_quat[sim.target_obj_body_id] = sim.data.xquat[sim.obj_body_id]
    mujoco.mj_forward(sim.model, sim.data)
    return _steps(env, 120, np.random.default_rng(0), 1.0)


def _hammer_rollout() -> tuple[np.ndarray, np.ndarray]:
    """The nail set at depths either side of the 1 cm goal tolerance, each followed by a few steps."""
    env = make_env("hammer")
    sim = env.unwrapped
    depth = sim.model.jnt_qposadr[sim.model.joint("nail_dir").id]
    parts = []
    for seed, start in enumerate((0.0, 0.06, 0.078, 0.08, 0.082, 0.085, 0.09)):
        env.reset(seed=seed)
        sim.data.qpos[depth] = start
        mujoco.mj_forward(sim.model, sim.data)
        parts.append(_steps(env, 5, np.random.default_rng(seed), 0.2))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _scripted_rollout(task: str) -> tuple[np.ndarray, np.ndarray]:
    episode = run_episode(make_env(task), make_scripted(task), seed=0)
    return episode.obs[1:], episode.success


ROLLOUTS = {
    "door": lambda: _scripted_rollout("door"),
    "relocate": lambda: _scripted_rollout("relocate"),
    "pen": _pen_rollout,
    "hammer": _hammer_rollout,
}


def test_every_adroit_task_has_a_rule() -> None:
    assert sorted(ADROIT_TASKS) == sorted(ROLLOUTS) and set(ADROIT_TASKS) <= set(SUCCESS_FROM_OBS)


@pytest.mark.parametrize("task", sorted(ROLLOUTS))
def test_rule_matches_the_simulator_step_by_step(task: str) -> None:
    observations, success = ROLLOUTS[task]()
    assert success.any() and not success.all(), "the rollout must contain solved and unsolved steps"
    recomputed = SUCCESS_FROM_OBS[task](observations.astype(np.float64), get_spec(task))
    np.testing.assert_array_equal(recomputed, success)


def test_hammer_rule_reads_the_nail_depth() -> None:
    obs = np.zeros((3, 46))
    obs[:, HAMMER_NAIL_DEPTH] = [0.08, 0.0815, 0.09]
    assert SUCCESS_FROM_OBS["hammer"](obs, get_spec("hammer")).tolist() == [False, True, True]


def test_pen_dapg_file_imports_with_the_simulators_success(tmp_path: Path) -> None:
    """A DAPG-format pen file made from real pen observations gets exactly the env's success as sparse reward."""
    observations, success = _pen_rollout()
    first = make_env("pen").reset(seed=0)[0][None]  # any observation will do as the first row
    actions = np.zeros((len(observations) + 1, 24))
    path = tmp_path / "pen-demos.pickle"
    path.write_bytes(pickle.dumps([{"observations": np.concatenate([first, observations]), "actions": actions}]))
    import_dapg(path, "pen", tmp_path / "pen.zarr")
    episode = next(DemoStore.open(tmp_path / "pen.zarr").episodes())
    np.testing.assert_array_equal(episode.success, success)
    np.testing.assert_array_equal(episode.reward, np.where(success, 0.0, -1.0))
