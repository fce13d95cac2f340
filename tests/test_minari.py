"""Minari in and out: datasets recorded with minari's own DataCollector over real simulators, the exact
store -> Minari -> store round trip, the D4RL dataset ids, and every refusal leaving the store as it was."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import gymnasium_robotics
import minari
import numpy as np
import pytest

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.demonstrators.scripted import make_scripted
from awac_robot.envs import TaskEnv, get_task, gym_env_spec, gym_id, make_env
from awac_robot.minari_io import D4RL_TASKS, _check_observation_space, import_minari
from awac_robot.rollout import rollout
from awac_robot.spec import SpecMismatch
from awac_robot.store import UNKNOWN_SEED, DemoStore, Episode, StoreError
from awac_robot.success_rules import FETCH_GOAL_DISTANCE, KITCHEN_DONE_DISTANCE, KITCHEN_GOAL_SIZES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
gym.register_envs(gymnasium_robotics)  # the raw simulator ids, recorded as D4RL's datasets were

Policy = Callable[[gym.Env, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]
#: The four subtasks of D4RL/kitchen/complete-v2 and how its env was made (its metadata.json).
D4RL_KITCHEN_KWARGS = {
    "tasks_to_complete": ["microwave", "kettle", "light switch", "slide cabinet"],
    "remove_task_when_completed": False,
    "terminate_on_tasks_completed": False,
    "max_episode_steps": 450,
}


@pytest.fixture
def datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def scripted(task: str) -> Policy:
    def start(env: gym.Env, obs: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        demonstrator = make_scripted(task)
        demonstrator.reset(env.unwrapped.task_env, obs)
        return demonstrator.act

    return start


def random_actions(scale: float = 1.0) -> Policy:
    def start(env: gym.Env, obs: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        rng = np.random.default_rng(seed)
        size = env.action_space.shape[0]
        return lambda _obs: (scale * rng.uniform(-1.0, 1.0, size)).astype(env.action_space.dtype)

    return start


def record(
    env: gym.Env,
    dataset_id: str,
    seeds: list[int | None],
    steps: int,
    policy: Policy,
    **collector_args: object,
) -> minari.MinariDataset:
    """Episodes of at most `steps` steps (DataCollector marks an episode cut by the next reset truncated)."""
    collector = minari.DataCollector(env, **collector_args)
    for seed in seeds:
        options = {"minari_autoseed": False} if seed is None else None
        obs, _ = collector.reset(seed=seed, options=options)
        act = policy(env, obs, seed or 0)
        for _ in range(steps):
            obs, _, terminated, truncated, _ = collector.step(act(obs))
            if terminated or truncated:
                break
    dataset = collector.create_dataset(
        dataset_id,
        algorithm_name="test policy",
        author="awac-robot tests",
        author_email="-",
        code_permalink="-",
        description="recorded by tests/test_minari.py",
    )
    collector.close()
    return dataset


def stored_episodes(path: Path) -> list[Episode]:
    with DemoStore.open(path) as store:
        return list(store.episodes())


def assert_same_episodes(got: list[Episode], expected: list[Episode]) -> None:
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        for name in ("obs", "action", "reward", "terminated", "truncated", "success"):
            a, b = getattr(mine, name), getattr(theirs, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert (mine.source, mine.seed) == (theirs.source, theirs.seed)


@pytest.mark.parametrize(
    ("task", "seeds", "steps", "policy"),
    [
        ("reach", [0, 1, 2], 20, scripted("reach")),
        ("push", [3, 4, 5], 50, scripted("push")),
        ("door", [6, 7, 8], 40, random_actions()),
    ],
)
def test_datacollector_datasets_of_our_envs_import_exactly(
    task: str, seeds: list[int], steps: int, policy: Policy, datasets_root: Path, tmp_path: Path
) -> None:
    dataset = record(gym.make(gym_id(task)), f"test/{task}/collected-v0", seeds, steps, policy, record_infos=True)
    store_path = tmp_path / f"{task}.zarr"
    argv = ["demos", "import", "minari", f"test/{task}/collected-v0", "--task", task, "--store", str(store_path)]
    assert main(argv) == 0

    episodes = stored_episodes(store_path)
    assert len(episodes) == len(seeds)
    for episode, recorded, seed in zip(episodes, dataset.iterate_episodes(), seeds, strict=True):
        assert np.array_equal(episode.obs, recorded.observations)  # incl. the final observation
        assert np.array_equal(episode.action, recorded.actions)
        assert np.array_equal(episode.terminated, recorded.terminations)
        assert np.array_equal(episode.truncated, recorded.truncations)
        assert np.array_equal(episode.success, recorded.infos["success"][1:])
        assert np.array_equal(episode.reward, recorded.rewards.astype(np.float32))  # both sparse
        assert (episode.seed, episode.source) == (seed, "imported:minari")
    if task != "door":  # the scripted experts succeed, so both reward values occur
        assert all(episode.solved for episode in episodes)


def test_success_recomputed_from_observations_matches_the_simulator(datasets_root: Path, tmp_path: Path) -> None:
    """Without recorded infos, push's success comes from the Fetch rule on the observations: the same steps."""
    seeds = [10, 11, 12]
    with_infos = record(gym.make(gym_id("push")), "test/push/infos-v0", seeds, 50, scripted("push"), record_infos=True)
    record(gym.make(gym_id("push")), "test/push/bare-v0", seeds, 50, scripted("push"))
    summary = import_minari("test/push/bare-v0", "push", tmp_path / "push.zarr")
    assert summary.success_from == {"observations (the task's success rule)"}
    for episode, recorded in zip(stored_episodes(tmp_path / "push.zarr"), with_infos.iterate_episodes(), strict=True):
        assert np.array_equal(episode.success, recorded.infos["success"][1:])
    assert summary.successes == 3


@pytest.mark.parametrize("reward", ["sparse", "dense"])
def test_store_to_minari_to_store_is_exact(reward: str, datasets_root: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "push.zarr"
    collect(CollectConfig("push", 3, store_path, noise=0.1, reward=reward, progress=False))
    if reward == "sparse":  # a second source, and an episode whose seed is unknown (-1)
        record(gym.make(gym_id("push")), "test/push/random-v0", [None], 15, random_actions())
        import_minari("test/push/random-v0", "push", store_path)
    original = stored_episodes(store_path)
    assert main(["demos", "export", "minari", str(store_path), "--out", str(datasets_root)]) == 0

    dataset = minari.load_dataset("awac-robot/push/demos-v0")
    assert (dataset.total_episodes, dataset.total_steps) == (len(original), sum(e.length for e in original))
    env = dataset.recover_environment()
    assert env.spec == gym_env_spec("push", reward)
    first = original[0]
    obs, _ = env.reset(seed=first.seed)
    assert np.array_equal(obs, first.obs[0])
    for step in range(5):  # the recovered env replays the stored episode
        obs, reward_value, *_ = env.step(first.action[step])
        assert np.array_equal(obs, first.obs[step + 1]) and np.float32(reward_value) == first.reward[step]

    back = tmp_path / "back.zarr"
    argv = ["demos", "import", "minari", "awac-robot/push/demos-v0", "--task", "push", "--store", str(back)]
    assert main([*argv, "--reward", reward]) == 0
    assert_same_episodes(stored_episodes(back), original)
    assert {e.source for e in original} == ({"scripted", "imported:minari"} if reward == "sparse" else {"scripted"})
    assert UNKNOWN_SEED in {e.seed for e in original} or reward == "dense"


def _kitchen_policy(teleport_at: int | None) -> Policy:
    """Small random actions; at step `teleport_at` the microwave door and the kettle are put at their goals."""
    goals = {"microwave": [22], "kettle": list(range(23, 30))}

    def start(env: gym.Env, obs: object, seed: int) -> Callable[[object], np.ndarray]:
        rng, step = np.random.default_rng(seed), [0]

        def act(_obs: object) -> np.ndarray:
            if step[0] == teleport_at:
                data = env.unwrapped.data
                data.qpos[goals["microwave"]] = -0.75
                data.qpos[goals["kettle"]] = [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]
                data.qvel[22:] = 0.0
            step[0] += 1
            return (0.1 * rng.uniform(-1.0, 1.0, 9)).astype(np.float32)  # what our env executes, exactly

        return act

    return start


@dataclass
class PolicyActor:
    """A test policy as the rollout's actor, for replaying a recording in our own env."""

    policy: Policy
    seed: int

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._act = self.policy(env, obs, self.seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self._act(obs)


def replay(task: str, seed: int, policy: Policy) -> Episode:
    """The episode our own task env produces for the same seed and actions, up to where it ends."""
    return rollout(make_env(task), PolicyActor(policy, seed), seed)


def assert_same_steps(got: Episode, expected: Episode) -> None:
    for name in ("obs", "action", "reward", "terminated", "truncated", "success"):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name


def test_d4rl_kitchen_layout_maps_onto_the_kitchen_task(datasets_root: Path, tmp_path: Path) -> None:
    """A recording made as D4RL/kitchen/complete-v2 was (four subtasks, no termination, 450 steps) imports
    as the episode our kitchen env produces: cut, terminated, at the step microwave and kettle are both done."""
    policy = _kitchen_policy(teleport_at=10)
    record(gym.make("FrankaKitchen-v1", **D4RL_KITCHEN_KWARGS), "test/kitchen/complete-v0", [0], 30, policy)
    summary = import_minari("test/kitchen/complete-v0", "kitchen", tmp_path / "kitchen.zarr")
    assert summary.cut_episodes == 1 and summary.successes == 1
    (episode,) = stored_episodes(tmp_path / "kitchen.zarr")
    assert episode.length < 30 and episode.terminated[-1] and episode.success.sum() == 1
    assert_same_steps(episode, replay("kitchen", 0, policy))


def test_episodes_longer_than_the_task_are_cut_at_its_time_limit(datasets_root: Path, tmp_path: Path) -> None:
    record(gym.make("AdroitHandDoor-v1", max_episode_steps=230), "test/door/long-v0", [4], 230, random_actions())
    summary = import_minari("test/door/long-v0", "door", tmp_path / "door.zarr")
    (episode,) = stored_episodes(tmp_path / "door.zarr")
    assert summary.cut_episodes == 1 and episode.length == get_task("door").episode_steps == 200
    assert episode.truncated[-1] and not episode.terminated.any()
    assert_same_steps(episode, replay("door", 4, random_actions()))


#: The env each D4RL dataset was recorded in, as its Minari documentation page names it.
D4RL_ENVS = {
    "door": "AdroitHandDoor-v1",
    "pen": "AdroitHandPen-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
    "kitchen": "FrankaKitchen-v1",
}


def test_every_d4rl_id_maps_to_the_task_wrapping_its_env() -> None:
    assert len(D4RL_TASKS) == 15
    for dataset_id, task in D4RL_TASKS.items():
        assert dataset_id.split("/")[1] == task
        assert get_task(task).simulator_id == D4RL_ENVS[task]


class _SuccessAtReset(minari.StepDataCallback):
    """Adroit envs report no success at reset; recording it as False keeps the infos one per observation."""

    def __call__(self, env: gym.Env, **kwargs: object) -> dict:
        step = super().__call__(env, **kwargs)
        step["info"] = {"success": bool(step["info"].get("success", False))}
        return step


@pytest.mark.parametrize("dataset_id", ["D4RL/door/human-v2", "D4RL/pen/expert-v2", "D4RL/hammer/cloned-v2",
                                        "D4RL/relocate/human-v2", "D4RL/kitchen/mixed-v2"])  # fmt: skip
def test_d4rl_ids_import_into_their_task_only(dataset_id: str, datasets_root: Path, tmp_path: Path) -> None:
    """A dataset recorded under a D4RL id in the raw simulator, the way the hub's datasets were made."""
    task = D4RL_TASKS[dataset_id]
    if task == "kitchen":  # mixed-v2's four subtasks; the kitchen infos hold lists, so none are recorded
        kwargs = {**D4RL_KITCHEN_KWARGS, "tasks_to_complete": ["microwave", "kettle", "bottom burner", "light switch"]}
        env, extra = gym.make("FrankaKitchen-v1", **kwargs), {}
    else:
        env, extra = gym.make(D4RL_ENVS[task]), {"record_infos": True, "step_data_callback": _SuccessAtReset}
    record(env, dataset_id, [0, 1], 5, random_actions(0.1), **extra)
    summary = import_minari(dataset_id, task, tmp_path / "ok.zarr")
    assert (summary.env_id, summary.episodes, summary.steps) == (D4RL_ENVS[task], 2, 10)
    other = "door" if task != "door" else "pen"
    with pytest.raises(SpecMismatch, match=f"is D4RL data for task '{task}', not '{other}'"):
        import_minari(dataset_id, other, tmp_path / "wrong.zarr")
    assert not (tmp_path / "wrong.zarr").exists()


def test_success_rule_constants_are_the_simulators() -> None:
    from gymnasium_robotics.envs.franka_kitchen import kitchen_env

    for task in ("reach", "push", "pick_place", "slide"):
        assert make_env(task).unwrapped.distance_threshold == FETCH_GOAL_DISTANCE
    assert kitchen_env.BONUS_THRESH == KITCHEN_DONE_DISTANCE
    assert {goal: len(value) for goal, value in kitchen_env.OBS_ELEMENT_GOALS.items()} == KITCHEN_GOAL_SIZES


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_mismatched_datasets_are_refused_in_one_line_and_write_nothing(
    datasets_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record(gym.make(gym_id("push")), "test/push/a-v0", [0], 5, random_actions())
    record(gym.make("FetchPush-v4"), "test/push/raw-v0", [0], 5, random_actions())
    two_goals = {**D4RL_KITCHEN_KWARGS, "tasks_to_complete": ["microwave", "light switch"]}
    record(gym.make("FrankaKitchen-v1", **two_goals), "test/kitchen/nokettle-v0", [0], 3, random_actions(0.1))
    flattened = gym.wrappers.FlattenObservation(gym.make("FetchPush-v4"))
    record(flattened, "test/push/flat-v0", [0], 3, random_actions())
    existing = tmp_path / "door.zarr"
    collect(CollectConfig("door", 1, existing, progress=False))
    before = stored_episodes(existing)
    new = tmp_path / "new.zarr"

    def refused(dataset: str, task: str, *extra: str, store: Path = new) -> str:
        argv = ["demos", "import", "minari", dataset, "--task", task, "--store", str(store), *extra]
        return _one_line_error(argv, capsys)

    assert "was recorded in awac_robot/push-v0, not in awac_robot/door-v0 or AdroitHandDoor-v1" in refused(
        "test/push/a-v0", "door"
    )
    assert "without kettle of task 'kitchen'" in refused("test/kitchen/nokettle-v0", "kitchen")
    assert "recorded through wrappers (FlattenObservation)" in refused("test/push/flat-v0", "push")
    assert "not the dense reward of task 'push'" in refused("test/push/raw-v0", "push", "--reward", "dense")
    assert "is D4RL data for task 'pen', not 'door'" in refused("D4RL/pen/human-v2", "door")
    assert "is not on this machine" in refused("D4RL/door/human-v2", "door")
    assert "has no data/metadata.json" in refused(str(tmp_path), "door")
    assert not new.exists()
    assert "store" in refused("test/push/a-v0", "push", store=existing)  # a door store cannot take push data
    assert_same_episodes(stored_episodes(existing), before)


def test_a_goal_part_that_is_not_a_box_is_refused() -> None:
    """A Dict's `shape` is None: such a goal part has no fixed width and must be refused, not counted."""
    config = get_task("kitchen")
    space = make_env("kitchen").env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    _check_observation_space(space, config, "the dataset", flat_allowed=False)  # the simulator's own space passes
    goals = space["desired_goal"]
    assert isinstance(goals, gym.spaces.Dict)
    nested = gym.spaces.Dict({"x": gym.spaces.Box(-1.0, 1.0, (1,))})
    odd = gym.spaces.Dict({**space.spaces, "desired_goal": gym.spaces.Dict({**goals.spaces, "kettle": nested})})
    with pytest.raises(SpecMismatch, match=r"the dataset has desired_goal 'kettle' Dict\('x': Box.*needs 75 numbers"):
        _check_observation_space(odd, config, "the dataset", flat_allowed=False)


def test_a_bad_episode_anywhere_leaves_the_store_as_it_was(datasets_root: Path, tmp_path: Path) -> None:
    """The last episode holds a NaN: nothing of the dataset is appended (every episode is checked first)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    existing = tmp_path / "push.zarr"
    collect(CollectConfig("push", 2, existing, progress=False))
    before = stored_episodes(existing)
    buffers = []
    for index, episode in enumerate(before * 2):
        obs = episode.obs.copy()
        obs[-1, 0] = np.nan if index == 3 else obs[-1, 0]
        buffers.append(
            EpisodeBuffer(
                observations=obs,
                actions=episode.action,
                rewards=episode.reward,
                terminations=episode.terminated,
                truncations=episode.truncated,
                infos={"success": np.concatenate([[False], episode.success])},
            )
        )
    minari.create_dataset_from_buffers("test/push/nan-v0", buffers, env=gym_env_spec("push"), algorithm_name="copy")
    with pytest.raises(StoreError, match="episode 3: episode obs contains NaN"):
        import_minari("test/push/nan-v0", "push", existing)
    assert_same_episodes(stored_episodes(existing), before)
    with pytest.raises(StoreError, match="episode 3: episode obs contains NaN"):
        import_minari("test/push/nan-v0", "push", tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()


def test_export_refusals(datasets_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "reach.zarr"
    collect(CollectConfig("reach", 1, store_path, progress=False))
    export = ["demos", "export", "minari", str(store_path), "--out", str(datasets_root)]
    assert "is malformed: use NAMESPACE/NAME-vVERSION" in _one_line_error([*export, "--dataset-id", "x/y"], capsys)
    assert main(export) == 0
    assert "already exists" in _one_line_error(export, capsys)
    assert sorted(p.name for p in (datasets_root / "awac-robot" / "reach").iterdir()) == ["demos-v0"]


def test_without_minari_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['minari'] = None; from awac_robot.cli import main; "
        f"sys.exit(main(['demos', 'import', 'minari', 'D4RL/door/human-v2', '--task', 'door', "
        f"'--store', {str(tmp_path / 'door.zarr')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "awac-robot demos: error: Minari support is not installed: pip install -e '.[minari]' (minari 0.5.4 with h5py)"
    )


def push_buffers(episodes: list[Episode], action_change: Callable[[int, np.ndarray], np.ndarray] | None = None) -> list:
    from minari.data_collector.episode_buffer import EpisodeBuffer

    return [
        EpisodeBuffer(
            observations=episode.obs,
            actions=episode.action if action_change is None else action_change(index, episode.action.copy()),
            rewards=episode.reward,
            terminations=episode.terminated,
            truncations=episode.truncated,
            infos={"success": np.concatenate([[False], episode.success])},
        )
        for index, episode in enumerate(episodes)
    ]


@pytest.mark.parametrize("damage", ["cut file", "missing episode", "wrong count", "string observations", "inf action"])
def test_a_damaged_dataset_is_refused_in_one_line_and_imports_nothing(
    datasets_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    import json

    import h5py

    source = tmp_path / "source.zarr"
    collect(CollectConfig("push", 3, source, progress=False))
    episodes = stored_episodes(source)

    def inf_in_episode_2(index: int, action: np.ndarray) -> np.ndarray:
        if index == 2:
            action[4, 1] = np.inf
        return action

    change = inf_in_episode_2 if damage == "inf action" else None
    minari.create_dataset_from_buffers("test/push/damaged-v0", push_buffers(episodes, change), env=gym_env_spec("push"))
    data = datasets_root / "test" / "push" / "damaged-v0" / "data"
    hdf5 = data / "main_data.hdf5"
    if damage == "cut file":
        hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 2])
    elif damage == "missing episode":
        with h5py.File(hdf5, "r+") as file:
            del file["episode_1"]
    elif damage == "wrong count":
        metadata = json.loads((data / "metadata.json").read_text())
        metadata["total_episodes"] = 5
        (data / "metadata.json").write_text(json.dumps(metadata))
    elif damage == "string observations":
        with h5py.File(hdf5, "r+") as file:  # the flat observations of awac_robot/push-v0, as strings
            episode = file["episode_0"]
            shape = episode["observations"].shape
            del episode["observations"]
            episode.create_dataset("observations", data=np.full(shape, "x", dtype=h5py.string_dtype()))
    existing = tmp_path / "push.zarr"
    shutil.copytree(source, existing)
    for store in (existing, tmp_path / "new.zarr"):
        argv = ["demos", "import", "minari", "test/push/damaged-v0", "--task", "push", "--store", str(store)]
        err = _one_line_error(argv, capsys)
        assert "Minari dataset" in err or "test/push/damaged-v0" in err, err
        if damage == "inf action":
            assert "episode 2 step 4: action entry 1 is inf" in err
    assert_same_episodes(stored_episodes(existing), episodes)
    assert not (tmp_path / "new.zarr").exists()
