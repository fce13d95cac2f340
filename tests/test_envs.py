"""The task registry and env layer, on the real simulators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from awac_robot.envs import TaskError, get_spec, get_task, load_task_file, make_env, register_task, task_names

ALL_TASKS = ["door", "pen", "relocate", "hammer", "push", "pick_place", "slide", "reach", "kitchen"]


def _joint_adr(model: mujoco.MjModel, name: str) -> int:
    return int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)])


def _body(model: mujoco.MjModel, name: str) -> int:
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)


def _drive_nail_home(sim, model, data) -> None:
    """The nail slides on one joint; its offset to the goal is linear in that joint, so solve for it."""
    adr = _joint_adr(model, "nail_dir")

    def offset(value: float) -> np.ndarray:
        data.qpos[adr] = value
        mujoco.mj_forward(model, data)
        return data.site_xpos[sim.target_obj_site_id] - data.site_xpos[sim.goal_site_id]

    at0, slope = offset(0.0), offset(0.1) - offset(0.0)
    offset(float(-0.1 * at0 @ slope / (slope @ slope)))


def put_in_solved_state(task: str, env) -> None:
    """Move the simulator into a state where the task counts as solved (the goal, not the robot, moves)."""
    sim = env.unwrapped
    model, data = sim.model, sim.data
    if task == "door":
        data.qpos[_joint_adr(model, "door_hinge")] = 1.5
    elif task == "pen":
        model.body_quat[sim.target_obj_body_id] = data.xquat[sim.obj_body_id]
    elif task == "relocate":
        model.site_pos[sim.target_obj_site_id] = data.xpos[sim.obj_body_id]
    elif task == "hammer":
        _drive_nail_home(sim, model, data)
    elif task in ("push", "pick_place", "slide"):
        sim.goal = data.xpos[_body(model, "object0")].copy()
    elif task == "reach":
        sim.goal = data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")].copy()
    elif task == "kitchen":
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

        for subtask in get_task("kitchen").goal_order:
            data.qpos[OBS_ELEMENT_INDICES[subtask]] = OBS_ELEMENT_GOALS[subtask]
    mujoco.mj_forward(model, data)


def test_registry_lists_all_nine_tasks():
    assert set(ALL_TASKS) <= set(task_names())


@pytest.mark.parametrize("task", ALL_TASKS)
def test_task_resets_and_steps_reproducibly(task):
    spec = get_spec(task)
    runs = []
    for _ in range(2):
        env = make_env(task, seed=7)
        obs, info = env.reset()
        assert obs.shape == (spec.obs_dim,) and obs.dtype == np.float32
        assert info["success"] is False
        rng = np.random.default_rng(0)
        trace = [obs]
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, spec.act_dim).astype(np.float32))
            assert obs.shape == (spec.obs_dim,) and obs.dtype == np.float32
            assert reward == -1.0 and "success" in info
            trace.append(obs)
        runs.append(np.stack(trace))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    other = make_env(task, seed=8).reset()[0]
    if task != "reach":  # reach's initial gripper pose is fixed; only its goal is random
        assert not np.array_equal(other, runs[0][0])


@pytest.mark.parametrize("task", ALL_TASKS)
def test_sparse_reward_is_zero_when_solved(task):
    env = make_env(task, seed=1)
    env.reset()
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert (reward, info["success"]) == (-1.0, False)
    put_in_solved_state(task, env)
    _, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert (reward, info["success"]) == (0.0, True)


def test_time_limit_is_truncation_not_termination():
    env = make_env("reach", seed=0)
    env.reset()
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
        steps += 1
        assert not terminated
        if truncated:
            break
    assert steps == get_spec("reach").episode_steps


def test_dense_reward_is_the_simulators_own():
    env = make_env("door", reward="dense", seed=0)
    env.reset()
    _, reward, _, _, _ = env.step(np.zeros(28, np.float32))
    assert reward not in (0.0, -1.0)


def test_fetch_observation_is_observation_then_achieved_then_desired_goal():
    env = make_env("push", seed=3)
    flat, _ = env.reset()
    raw = env.unwrapped._get_obs()
    np.testing.assert_allclose(
        flat, np.concatenate([raw["observation"], raw["achieved_goal"], raw["desired_goal"]]), rtol=1e-6
    )
    assert get_spec("push").obs_names[-3:] == ("desired_goal_x", "desired_goal_y", "desired_goal_z")


def test_unknown_task_names_closest_match():
    with pytest.raises(TaskError, match="unknown task 'dor'. Did you mean 'door'\\? Known tasks: door"):
        make_env("dor")


def test_wrong_reward_mode():
    with pytest.raises(TaskError, match="unknown reward mode 'binary'"):
        make_env("door", reward="binary")


def test_bad_action_shape_and_nan_are_refused():
    env = make_env("reach", seed=0)
    env.reset()
    with pytest.raises(TaskError, match="takes 4 action numbers"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(TaskError, match="non-finite action"):
        env.step(np.array([0, np.nan, 0, 0], np.float32))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_malformed_yaml_names_file_and_field(tmp_path):
    good = Path(get_task("reach").source).read_text()
    with pytest.raises(TaskError, match=r"mine.yaml: missing field 'episode_steps'"):
        load_task_file(_write(tmp_path, good.replace("episode_steps: 50\n", "")))
    with pytest.raises(TaskError, match=r"mine.yaml: field 'episode_steps' must be int"):
        load_task_file(_write(tmp_path, good.replace("episode_steps: 50", "episode_steps: fifty")))
    with pytest.raises(TaskError, match=r"mine.yaml: unknown field 'episode_step'"):
        load_task_file(_write(tmp_path, good.replace("episode_steps:", "episode_step:")))
    with pytest.raises(TaskError, match=r"mine.yaml: not valid YAML"):
        load_task_file(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(TaskError, match=r"mine.yaml: field 'observation.layout' must be one of"):
        load_task_file(_write(tmp_path, good.replace("layout: goal_dict", "layout: nested")))
    with pytest.raises(TaskError, match=r"mine.yaml: success: field 'info_key' must be str, got 5"):
        load_task_file(_write(tmp_path, good.replace("info_key: is_success", "info_key: 5")))


def test_declared_size_is_checked_against_the_simulator(tmp_path):
    text = Path(get_task("reach").source).read_text().replace("name: reach", "name: reach_wrong")
    text = text.replace("size: 16", "size: 15").replace("achieved_goal_x, ", "")
    config = register_task(_write(tmp_path, text))
    env = make_env(config.name)
    with pytest.raises(TaskError, match="simulator gives 16 observation numbers, field 'observation.size' says 15"):
        env.reset(seed=0)


def test_user_registered_task_runs(tmp_path):
    text = Path(get_task("reach").source).read_text().replace("name: reach", "name: my_reach")
    text = text.replace("episode_steps: 50", "episode_steps: 10")
    path = _write(tmp_path, text)
    env = make_env(str(path), seed=0)
    env.reset()
    assert env.config.name == "my_reach" and "my_reach" in task_names()


def test_cli_tasks_table_and_unknown_task():
    out = subprocess.run(
        [sys.executable, "-m", "awac_robot", "tasks"], capture_output=True, text=True, check=True
    ).stdout
    for task in ALL_TASKS:
        assert f"\n{task} " in out
    assert "AdroitHandDoor-v1" in out and " 39 " in out
    bad = subprocess.run(
        [sys.executable, "-m", "awac_robot", "tasks", "--register", "/no/such.yaml"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "awac-robot tasks: error: /no/such.yaml: no such task file"
