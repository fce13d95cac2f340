"""Minari datasets in and out of the demo store (Minari: Farama's offline-RL dataset format, D4RL's successor).

Import reads a Minari dataset that is on this machine (a directory, or an id under
`MINARI_DATASETS_PATH`; nothing is ever downloaded) into a demo store; export writes a store
as a Minari dataset that `minari.load_dataset` opens and whose env spec names
`awac_robot/<task>-v0` (awac_robot.envs.GymTaskEnv), so `recover_environment()` builds the
task's own env. Decisions (docs/store.md has the user's version):

- A dataset is for a task if its env spec is the task's gymnasium id or the simulator id the
  task wraps (e.g. AdroitHandDoor-v1 for D4RL door data), without extra wrappers, and its
  spaces give the task's observation and action sizes. Anything else is refused in one line
  naming the difference: a dataset without an env spec cannot be checked, so it is refused too.
- Observations are flattened with the task's own rule (awac_robot.envs.flatten_observation);
  a kitchen goal dict may hold more subtasks than ours (the D4RL kitchen datasets hold four)
  and keeps only ours.
- Success per step comes from the recorded `infos["success"]` (or the simulator's own key,
  e.g. Fetch's `is_success`), else from the task's documented rule on the observations
  (awac_robot.success_rules.SUCCESS_FROM_OBS, computed in float64 before the store's float32
  cast); a dataset with neither is refused. Sparse stores get their rewards from it; a dense
  import keeps the recorded rewards only when the recording env was the task's dense env.
- An episode ends where the task's env would have ended it: at the time limit (truncated),
  and for the kitchen at the step all of its subtasks are done (terminated). D4RL kitchen
  episodes run to 450 steps and do not stop at ours, so they are cut; nothing is invented.
- Actions are clipped to [-1, 1], as the simulators clip them before use; the count is reported.
- Every episode is converted and checked (DemoStore.check_episode) before the store is
  created or touched, so a refused import leaves the store as it was; then all episodes are
  published at once (DemoStore.append_many; a new store is built aside), so a process
  killed during the import leaves none of them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

from awac_robot import __version__
from awac_robot.envs import GOAL_DICT_KEYS, TaskConfig, flatten_observation, get_task, gym_env_spec, gym_id
from awac_robot.provenance import Batch
from awac_robot.spec import SpecMismatch, TaskSpec
from awac_robot.store import UNKNOWN_SEED, DemoStore, Episode, StoreError, _one_line, add_episodes, check_source
from awac_robot.success_rules import SUCCESS_FROM_OBS

SOURCE = "imported:minari"
INSTALL_HINT = "Minari support is not installed: pip install -e '.[minari]' (minari 0.5.4 with h5py)"
#: Minari writes seeds as unsigned 64-bit (its autoseed draws 64 random bits); the store holds int64.
MAX_STORE_SEED = 2**63 - 1
#: Episode attribute naming the store source of an exported episode, so a round trip keeps it.
SOURCE_ATTR = "awac_robot_source"
#: The D4RL datasets on the Minari hub and our task for each; their env spec and spaces are still checked.
D4RL_TASKS: dict[str, str] = {
    f"D4RL/{task}/{kind}-v2": task
    for task in ("door", "pen", "hammer", "relocate")
    for kind in ("human", "expert", "cloned")
} | {f"D4RL/kitchen/{kind}-v2": "kitchen" for kind in ("complete", "mixed", "partial")}


class MinariError(StoreError):
    """A Minari dataset that cannot be imported or written as asked; the message is one line."""


def _minari() -> ModuleType:
    try:
        import minari
    except ImportError:
        raise MinariError(INSTALL_HINT) from None
    return minari


@dataclass
class MinariImportSummary:
    dataset_id: str
    env_id: str
    episodes: int = 0
    steps: int = 0
    successes: int = 0
    success_from: set[str] = field(default_factory=set)
    clipped_actions: int = 0
    total_actions: int = 0
    cut_episodes: int = 0
    unknown_seeds: int = 0


@dataclass(frozen=True)
class MinariExportSummary:
    dataset_id: str
    path: Path
    episodes: int
    steps: int


# -- import ------------------------------------------------------------------------------


def dataset_data_dir(dataset: str | Path) -> Path:
    """The `data` directory of a dataset given as its directory, its data directory or its local id."""
    path = Path(dataset)
    for candidate in (path / "data", path):
        if (candidate / "metadata.json").is_file():
            return candidate
    if path.exists():
        raise MinariError(f"{path} is not a Minari dataset: it has no data/metadata.json")
    _minari()
    from minari.storage.datasets_root_dir import get_dataset_path

    root = get_dataset_path(str(dataset))
    if (root / "data" / "metadata.json").is_file():
        return root / "data"
    raise MinariError(
        f"Minari dataset {str(dataset)!r} is not on this machine (looked in {root}) and is never downloaded here: "
        f"run 'minari download {dataset}' where the hub is reachable, copy it under MINARI_DATASETS_PATH, "
        "or pass the dataset's directory"
    )


def open_dataset(dataset: str | Path) -> Any:
    """A `minari.MinariDataset` for a directory or local id; an unreadable one is a one-line error."""
    minari = _minari()
    data_dir = dataset_data_dir(dataset)
    try:
        return minari.MinariDataset(data_dir)
    except Exception as exc:
        raise MinariError(f"{data_dir} is not a readable Minari dataset ({_one_line(exc)})") from None


def check_known_task(dataset_id: str, config: TaskConfig) -> None:
    """A D4RL dataset id names its task: refuse another one before anything is opened."""
    known = D4RL_TASKS.get(dataset_id)
    if known is not None and known != config.name:
        raise SpecMismatch(
            f"Minari dataset {dataset_id} is D4RL data for task {known!r}, not {config.name!r}: "
            f"import it with --task {known}"
        )


def check_dataset_matches(dataset: Any, config: TaskConfig, reward_mode: str) -> str:
    """Refuse, in one line, a dataset that was not recorded in the task's env; returns the recording env id."""
    where = f"Minari dataset {dataset.id}"
    check_known_task(dataset.id, config)
    env_spec = dataset.env_spec
    ours, simulator = gym_id(config.name), config.simulator_id
    if env_spec is None:
        raise SpecMismatch(
            f"{where} records no env spec, so the simulator that made it cannot be checked; "
            f"task {config.name!r} imports data recorded in {ours} or {simulator}"
        )
    if env_spec.id not in (ours, simulator):
        raise SpecMismatch(
            f"{where} was recorded in {env_spec.id}, not in {ours} or {simulator} (task {config.name!r}): "
            "choose the task made from that env"
        )
    if env_spec.additional_wrappers:
        names = ", ".join(wrapper.name for wrapper in env_spec.additional_wrappers)
        raise SpecMismatch(f"{where} was recorded through wrappers ({names}) that change what {env_spec.id} returns")
    _check_action_space(dataset.action_space, config, where)
    _check_observation_space(dataset.observation_space, config, where, flat_allowed=env_spec.id == ours)
    recorded = dataset.storage.metadata.get("awac_robot_task_spec")
    if recorded is not None:
        config.spec.check_matches(TaskSpec.from_json(recorded), where)
    if reward_mode == "dense":
        dense_kwargs = {"task": config.name, "reward": "dense"}
        if env_spec.id == simulator:
            dense_kwargs = {**config.simulator_kwargs, **config.dense_kwargs}
        if env_spec.kwargs != dense_kwargs:
            raise SpecMismatch(
                f"{where} holds the rewards of {env_spec.id} with kwargs {env_spec.kwargs}, not the dense reward of "
                f"task {config.name!r} ({dense_kwargs}): import it into a sparse store (the default)"
            )
    return env_spec.id


def _describe(space: gym.Space[Any]) -> str:
    return " ".join(repr(space).split())


def _check_action_space(space: gym.Space[Any], config: TaskConfig, where: str) -> None:
    bounded = (
        isinstance(space, gym.spaces.Box)
        and space.shape == (config.act_dim,)
        and np.all(space.low == -1.0)
        and np.all(space.high == 1.0)
    )
    if not bounded:
        raise SpecMismatch(
            f"{where} has actions {_describe(space)}; task {config.name!r} takes Box(-1.0, 1.0, ({config.act_dim},))"
        )


def _check_observation_space(space: gym.Space[Any], config: TaskConfig, where: str, flat_allowed: bool) -> None:
    needs = f"task {config.name!r} needs {config.obs_dim} numbers"
    if isinstance(space, gym.spaces.Box):
        if config.layout != "flat" and not flat_allowed:
            raise SpecMismatch(
                f"{where} has flat observations {_describe(space)} but {config.simulator_id} returns a goal dict: "
                "their order cannot be checked (record without a flattening wrapper)"
            )
        if space.shape != (config.obs_dim,):
            raise SpecMismatch(f"{where} has observations {_describe(space)}; {needs}")
        return
    if config.layout != "goal_dict" or not isinstance(space, gym.spaces.Dict) or set(space) != set(GOAL_DICT_KEYS):
        raise SpecMismatch(f"{where} has observations {_describe(space)}; {needs} ({config.layout} layout)")
    width = 0
    for key in GOAL_DICT_KEYS:
        part = space[key]
        if isinstance(part, gym.spaces.Dict):
            missing = [goal for goal in config.goal_order if goal not in part.spaces]
            if missing:
                raise SpecMismatch(
                    f"{where} has {key} for subtasks {sorted(part.spaces)}, without {', '.join(missing)} "
                    f"of task {config.name!r}: it cannot be mapped"
                )
            width += sum(_box_size(part[goal], f"{key} {goal!r}", where, needs) for goal in config.goal_order)
        else:
            width += _box_size(part, key, where, needs)
    if width != config.obs_dim:
        raise SpecMismatch(f"{where} has observations of {width} numbers once flattened; {needs}")


def _box_size(space: gym.Space[Any], name: str, where: str, needs: str) -> int:
    """The numbers a part of a goal-dict observation flattens to; only a Box flattens to a fixed count."""
    if not isinstance(space, gym.spaces.Box):
        raise SpecMismatch(f"{where} has {name} {_describe(space)}; {needs}")
    return int(np.prod(space.shape))


def _lengths(value: Any) -> set[int]:
    """Lengths along the first axis of every array in a (nested dict) observation."""
    if isinstance(value, dict):
        return set().union(*(_lengths(part) for part in value.values()))
    return {len(value)}


def _recorded_success(
    infos: dict[str, Any] | None, config: TaskConfig, steps: int, where: str
) -> tuple[np.ndarray, str] | None:
    """Success after each step from the infos, if recorded: T entries, or T + 1 with the reset's first."""
    for key in dict.fromkeys(k for k in ("success", config.success_info_key) if k):
        if infos and key in infos:
            values = np.asarray(infos[key])
            if values.shape == (steps + 1,):
                values = values[1:]
            if values.shape != (steps,):
                raise MinariError(
                    f"{where}: infos[{key!r}] has shape {values.shape}, expected ({steps},) or ({steps + 1},)"
                )
            return values.astype(bool), f"infos['{key}']"
    return None


def _episode_success(data: Any, obs64: np.ndarray, config: TaskConfig, where: str) -> tuple[np.ndarray, str]:
    steps = len(data.rewards)
    recorded = _recorded_success(data.infos, config, steps, where)
    if recorded is not None:
        return recorded
    rule = SUCCESS_FROM_OBS.get(config.name)
    if rule is None:
        raise MinariError(
            f"{where} records no infos['success'] and task {config.name!r} has no documented success rule on "
            f"observations: record it with minari.DataCollector(gym.make('{gym_id(config.name)}'), record_infos=True)"
        )
    return rule(obs64[1:], config.spec), "observations (the task's success rule)"


def _task_end(success: np.ndarray, config: TaskConfig) -> tuple[int, bool]:
    """Steps the task's own env would have run, and whether it ends there by termination (not the data's end)."""
    steps = len(success)
    if config.success_all_subtasks and success.any():
        # FrankaKitchen-v1 terminates once every subtask of the task is done (terminate_on_tasks_completed).
        done = int(np.argmax(success)) + 1
        if done <= min(steps, config.episode_steps):
            return done, True
    return min(steps, config.episode_steps), False


def _seed(episode_metadata: dict[str, Any]) -> int | None:
    """The recorded reset seed; UNKNOWN_SEED when none was recorded, None when it does not fit the store's int64."""
    seed = episode_metadata.get("seed")
    if seed is None:
        return UNKNOWN_SEED
    seed = int(seed)
    return seed if 0 <= seed <= MAX_STORE_SEED else None


def _source(episode_metadata: dict[str, Any]) -> str:
    """An episode exported from a store keeps its source (checked like any other); the rest are 'imported:minari'."""
    source = str(episode_metadata.get(SOURCE_ATTR, SOURCE))
    check_source(source)
    return source


def convert_episodes(
    dataset: Any, config: TaskConfig, reward_mode: str, env_id: str
) -> tuple[list[Episode], MinariImportSummary]:
    """Every episode of `dataset` as the task's Episode (read into memory), with what the conversion did."""
    where = f"Minari dataset {dataset.id}"
    try:
        return _convert(dataset, config, reward_mode, env_id)
    except (MinariError, SpecMismatch):
        raise
    except Exception as exc:  # h5py and numpy raise many types for a damaged, cut or foreign data file
        raise MinariError(
            f"{where}: its data cannot be read as episodes ({_one_line(exc)}): restore the dataset or record it "
            "again; nothing was imported"
        ) from None


def _convert(
    dataset: Any, config: TaskConfig, reward_mode: str, env_id: str
) -> tuple[list[Episode], MinariImportSummary]:
    summary = MinariImportSummary(dataset_id=dataset.id, env_id=env_id)
    episode_metadata = list(dataset.storage.get_episode_metadata(dataset.episode_indices))
    if len(episode_metadata) != dataset.total_episodes:
        raise MinariError(
            f"Minari dataset {dataset.id} declares {dataset.total_episodes} episodes and its data file holds "
            f"{len(episode_metadata)}: restore the dataset or record it again; nothing was imported"
        )
    episodes = []
    for data, meta in zip(dataset.iterate_episodes(), episode_metadata, strict=True):
        where = f"Minari dataset {dataset.id} episode {data.id}"
        steps = len(data.rewards)
        if steps == 0:
            raise MinariError(f"{where} has no steps")
        if _lengths(data.observations) != {steps + 1}:
            raise MinariError(
                f"{where} has {sorted(_lengths(data.observations))} observations for {steps} steps; "
                f"a Minari episode holds {steps + 1} (the last is the final observation)"
            )
        if isinstance(dataset.observation_space, gym.spaces.Box):  # already flat: our env, or a flat simulator
            obs64 = np.asarray(data.observations, dtype=np.float64).reshape(steps + 1, -1)
        else:
            obs64 = flatten_observation(data.observations, config, steps=steps + 1, dtype=np.float64)
        actions = np.asarray(data.actions, dtype=np.float64)
        if actions.shape != (steps, config.act_dim):
            raise MinariError(f"{where} has actions of shape {actions.shape}, expected ({steps}, {config.act_dim})")
        if not np.isfinite(actions).all():
            step, entry = np.argwhere(~np.isfinite(actions))[0]
            raise MinariError(
                f"{where} step {step}: action entry {entry} is {actions[step, entry]} (not finite, so no clipping "
                "can say what was done): fix or drop the episode; nothing was imported"
            )
        success, success_from = _episode_success(data, obs64, config, where)
        end, terminated_here = _task_end(success, config)
        terminated = np.asarray(data.terminations, dtype=bool)[:end].copy()
        truncated = np.asarray(data.truncations, dtype=bool)[:end].copy()
        if end < steps or terminated_here:  # the flags our env returns on that step
            ended = (terminated_here, end == config.episode_steps)
            changed = end < steps or (terminated[-1], truncated[-1]) != ended
            summary.cut_episodes += changed
            terminated[-1], truncated[-1] = ended
        success = success[:end]
        reward = np.where(success, 0.0, -1.0) if reward_mode == "sparse" else np.asarray(data.rewards)[:end]
        seed = _seed(meta)
        summary.unknown_seeds += seed is None
        episodes.append(
            Episode(
                obs=obs64[: end + 1],
                action=np.clip(actions[:end], -1.0, 1.0),
                reward=reward,
                terminated=terminated,
                truncated=truncated,
                success=success,
                source=_source(meta),
                seed=UNKNOWN_SEED if seed is None else seed,
            )
        )
        summary.episodes += 1
        summary.steps += end
        summary.successes += bool(success.any())
        summary.success_from.add(success_from)
        summary.clipped_actions += int((np.abs(actions[:end]) > 1.0).sum())
        summary.total_actions += actions[:end].size
    if not episodes:
        raise MinariError(f"Minari dataset {dataset.id} has no episodes")
    return episodes, summary


def import_minari(
    dataset: str | Path, task: str, store_path: str | Path, reward_mode: str = "sparse"
) -> MinariImportSummary:
    """Append every episode of a local Minari dataset to the store at `store_path` (created if missing).

    All or nothing: the dataset is converted and every episode checked before the store is
    created or appended to, then every episode is published at once.
    """
    config = get_task(task)
    spec = config.spec
    store_path = Path(store_path)
    check_known_task(str(dataset), config)
    opened = open_dataset(dataset)
    env_id = check_dataset_matches(opened, config, reward_mode)
    # An existing store is opened (and checked for task and reward) before the slow conversion.
    store = DemoStore.open_or_create(store_path, spec, reward_mode) if store_path.exists() else None
    try:
        episodes, summary = convert_episodes(opened, config, reward_mode, env_id)
        where = f"store {store_path} (task {spec.name!r})"
        for index, episode in zip(opened.episode_indices, episodes, strict=True):
            try:
                DemoStore.check_episode(episode, spec, reward_mode, where)
            except StoreError as exc:
                raise MinariError(f"Minari dataset {opened.id} episode {index}: {exc}") from None
        batch = Batch.now("import", "minari", {"dataset_id": opened.id, "env_id": env_id, "dataset": str(dataset)})
        if store is None:
            add_episodes(store_path, spec, reward_mode, episodes, batch)
        else:
            store.start_batch(batch)
            store.append_many(episodes, spec=spec)
    finally:
        if store is not None:
            store.close()
    return summary


# -- export ------------------------------------------------------------------------------


def default_dataset_id(task: str) -> str:
    return f"awac-robot/{task}/demos-v0"


def _check_dataset_id(dataset_id: str) -> None:
    _minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: no -vN version
        raise MinariError(
            f"dataset id {dataset_id!r} is malformed: use NAMESPACE/NAME-vVERSION, e.g. {default_dataset_id('door')}"
        ) from None


def _requirements() -> list[str]:
    """What `recover_environment` checks (and warns about) before it builds the env: the pinned simulator stack."""
    pinned = [f"awac-robot=={__version__}"]
    pinned += [f"{name}=={metadata.version(name)}" for name in ("gymnasium", "gymnasium-robotics", "mujoco")]
    return pinned


def export_minari(store_path: str | Path, out_dir: str | Path, dataset_id: str | None = None) -> MinariExportSummary:
    """Write the store's episodes as the Minari dataset OUT_DIR/DATASET_ID (OUT_DIR acts as MINARI_DATASETS_PATH).

    The dataset is built in a hidden sibling directory and renamed into place once minari's own
    loader has opened it, so a failed or killed export leaves no dataset at the target.
    """
    minari = _minari()
    with DemoStore.open(store_path) as store:
        return _export(minari, store, Path(out_dir), dataset_id)


def _export(minari: ModuleType, store: DemoStore, out_dir: Path, dataset_id: str | None) -> MinariExportSummary:
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    store_path = store.path
    task = store.spec.name
    config = get_task(task)
    config.spec.check_matches(store.spec, f"store {store_path}")
    dataset_id = dataset_id or default_dataset_id(task)
    _check_dataset_id(dataset_id)
    # Absolute: minari 0.5.4 joins a relative data path onto itself when it sizes the dataset.
    target = Path(out_dir).resolve() / dataset_id
    if target.exists():
        raise MinariError(f"{target} already exists: choose another --dataset-id or --out")
    episodes = list(store.episodes())
    if not episodes:
        raise MinariError(f"store {store_path} has no episodes to export")
    staging = target.with_name(f".{target.name}.exporting-{time.time_ns()}")
    staging.mkdir(parents=True)
    try:
        storage = MinariStorage.new(
            staging / "data",
            observation_space=gym.spaces.Box(-np.inf, np.inf, shape=(config.obs_dim,), dtype=np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, shape=(config.act_dim,), dtype=np.float32),
            env_spec=gym_env_spec(task, store.reward_mode),
            data_format="hdf5",
        )
        sources = sorted({episode.source for episode in episodes})
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "minari_version": minari.__version__,
                "algorithm_name": f"awac-robot demo store ({', '.join(sources)})",
                "author": {"awac-robot"},
                "description": f"Episodes of awac-robot task {task!r} ({store.reward_mode} reward) from {store_path}.",
                "requirements": _requirements(),
                "awac_robot_task_spec": store.spec.to_json(),
                "awac_robot_reward_mode": store.reward_mode,
            }
        )
        storage.update_episodes(_buffers(episodes, EpisodeBuffer))
        callback = minari.EpisodeMetadataCallback()
        storage.update_episode_metadata(
            [{**callback({"rewards": episode.reward}), SOURCE_ATTR: episode.source} for episode in episodes]
        )
        written = minari.MinariDataset(staging / "data")
        if written.total_episodes != len(episodes) or written.total_steps != store.num_steps:
            raise MinariError(f"{staging} holds {written.total_episodes} episodes after writing {len(episodes)}")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MinariExportSummary(dataset_id=dataset_id, path=target, episodes=len(episodes), steps=store.num_steps)


def _buffers(episodes: Iterable[Episode], buffer_type: type) -> list[Any]:
    """Minari episode buffers; infos["success"] has the reset's entry first, as minari.DataCollector records it."""
    return [
        buffer_type(
            seed=None if episode.seed == UNKNOWN_SEED else episode.seed,
            observations=episode.obs,
            actions=episode.action,
            rewards=episode.reward,
            terminations=episode.terminated,
            truncations=episode.truncated,
            # No built-in task is solved at reset: GymTaskEnv reports False there, and so does the export.
            infos={"success": np.concatenate([[False], episode.success])},
        )
        for episode in episodes
    ]
