"""Task YAML -> gymnasium env with a flat float32 observation, [-1, 1] actions and `info["success"]`.

Every other stage sees tasks only through this module: the store, the trainer and the
controller never need to know that Fetch returns dicts, that Adroit reports success under
one key and Fetch under another, or that the kitchen counts subtasks.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import io
import math
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from awac_robot.gl import RenderError, ensure_backend, requested_backend
from awac_robot.spec import TaskSpec
from awac_robot.yaml_files import read_mapping, reject_unknown

REWARD_MODES = ("sparse", "dense")
RENDER_MODES = ("rgb_array",)
#: Frame size when rendering; 320 px keeps a 200-step mp4 small and renders in ~45 ms here.
FRAME_SIZE = 320
LAYOUTS = ("flat", "goal_dict")
GOAL_DICT_KEYS = ("observation", "achieved_goal", "desired_goal")


#: What a task name may be: it names files and folders (demos/NAME.zarr, runs/NAME-...), so no path characters.
TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
#: A gymnasium id without a "module:" prefix (gymnasium imports that module when the env is made).
SIMULATOR_ID = re.compile(r"(?:[A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+-v\d+")
#: A word a simulator argument may be (e.g. "dense", "light switch"): no path separators, no "..".
PLAIN_WORD = re.compile(r"[A-Za-z0-9_ -]{0,64}")
#: Bounds of a task file's numbers: anything outside is a typo (1e12 steps, a NaN or 1 ns period).
MIN_PERIOD, MAX_PERIOD = 1e-4, 10.0
MAX_EPISODE_STEPS = 1_000_000
MAX_DIM = 10_000


class TaskError(ValueError):
    """A task name or task YAML the registry cannot use; the message says how to fix it."""


@dataclass(frozen=True)
class TaskConfig:
    """One task as declared in `envs/<name>.yaml`."""

    name: str
    domain: str
    description: str
    simulator_id: str
    simulator_kwargs: dict[str, Any]
    dense_kwargs: dict[str, Any]
    episode_steps: int
    control_period: float
    reward: str
    success_info_key: str | None
    success_all_subtasks: bool
    layout: str
    obs_dim: int
    act_dim: int
    obs_names: tuple[str, ...] = field(default_factory=tuple)
    act_names: tuple[str, ...] = field(default_factory=tuple)
    goal_order: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            name=self.name,
            domain=self.domain,
            obs_dim=self.obs_dim,
            act_dim=self.act_dim,
            act_low=(-1.0,) * self.act_dim,
            act_high=(1.0,) * self.act_dim,
            control_period=self.control_period,
            episode_steps=self.episode_steps,
            obs_names=self.obs_names,
            act_names=self.act_names,
        )


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise TaskError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TaskError(f"{where}: field '{key}' must be {names}, got {value!r}")
    return value


def load_task_file(path: str | Path) -> TaskConfig:
    """Parse and validate one task YAML; every error names the file and the field."""
    where = str(path)
    data = read_mapping(path, "task file", TaskError)
    reject_unknown(
        data,
        {
            "name",
            "domain",
            "description",
            "simulator",
            "episode_steps",
            "control_period",
            "reward",
            "success",
            "observation",
            "action",
        },
        where,
        TaskError,
    )
    sim = _field(data, "simulator", dict, where)
    reject_unknown(sim, {"id", "kwargs", "dense_kwargs"}, where, TaskError, "simulator.")
    success = _field(data, "success", dict, where)
    reject_unknown(success, {"info_key", "all_subtasks"}, where, TaskError, "success.")
    if ("info_key" in success) == bool(success.get("all_subtasks")):
        raise TaskError(f"{where}: field 'success' needs exactly one of 'info_key' or 'all_subtasks: true'")
    obs = _field(data, "observation", dict, where)
    reject_unknown(obs, {"layout", "size", "names", "goal_order"}, where, TaskError, "observation.")
    act = _field(data, "action", dict, where)
    reject_unknown(act, {"size", "names"}, where, TaskError, "action.")
    layout = _field(obs, "layout", str, f"{where}: observation")
    if layout not in LAYOUTS:
        raise TaskError(f"{where}: field 'observation.layout' must be one of {LAYOUTS}, got {layout!r}")
    reward = data.get("reward", "sparse")
    if reward not in REWARD_MODES:
        raise TaskError(f"{where}: field 'reward' must be one of {REWARD_MODES}, got {reward!r}")
    period = _field(data, "control_period", (int, float), where)
    if not (math.isfinite(period) and MIN_PERIOD <= period <= MAX_PERIOD):
        raise TaskError(
            f"{where}: field 'control_period' must be in [{MIN_PERIOD:g}, {MAX_PERIOD:g}] s, got {period!r}"
        )
    steps = _field(data, "episode_steps", int, where)
    if not 1 <= steps <= MAX_EPISODE_STEPS:
        raise TaskError(f"{where}: field 'episode_steps' must be in [1, {MAX_EPISODE_STEPS}], got {steps!r}")
    name = _field(data, "name", str, where)
    if not TASK_NAME.fullmatch(name):
        raise TaskError(
            f"{where}: field 'name' is {name!r}: a task name is a letter then letters, digits, '_' or '-' (at most "
            "64), since it names files and folders (demos/NAME.zarr)"
        )
    simulator_id = _field(sim, "id", str, f"{where}: simulator")
    if not SIMULATOR_ID.fullmatch(simulator_id) or simulator_id.startswith(f"{GYM_NAMESPACE}/"):
        raise TaskError(
            f"{where}: field 'simulator.id' is {simulator_id!r}: give a registered gymnasium id such as "
            "AdroitHandDoor-v1 (a 'module:' prefix would import code named by the file, and awac_robot/ ids are "
            "the tasks themselves)"
        )
    for key in ("kwargs", "dense_kwargs"):
        _check_kwargs(sim.get(key) or {}, where, f"simulator.{key}")
    for field_name, size in (("observation.size", obs.get("size")), ("action.size", act.get("size"))):
        if isinstance(size, int) and not 1 <= size <= MAX_DIM:
            raise TaskError(f"{where}: field '{field_name}' must be in [1, {MAX_DIM}], got {size}")
    try:
        config = TaskConfig(
            name=name,
            domain=_field(data, "domain", str, where),
            description=data.get("description", ""),
            simulator_id=simulator_id,
            simulator_kwargs=dict(sim.get("kwargs") or {}),
            dense_kwargs=dict(sim.get("dense_kwargs") or {}),
            episode_steps=steps,
            control_period=float(period),
            reward=reward,
            success_info_key=_field(success, "info_key", str, f"{where}: success") if "info_key" in success else None,
            success_all_subtasks=bool(success.get("all_subtasks")),
            layout=layout,
            obs_dim=_field(obs, "size", int, f"{where}: observation"),
            act_dim=_field(act, "size", int, f"{where}: action"),
            obs_names=tuple(obs.get("names") or ()),
            act_names=tuple(act.get("names") or ()),
            goal_order=tuple(obs.get("goal_order") or ()),
            source=where,
        )
        config.spec  # noqa: B018 - validates sizes against names
    except ValueError as exc:
        if isinstance(exc, TaskError):
            raise
        raise TaskError(f"{where}: {exc}") from None
    return config


def _check_kwargs(kwargs: Any, where: str, field_name: str) -> None:
    """Simulator arguments are settings (numbers, flags, words and lists of them), never a path to a file:
    a task file that pointed the simulator at a model or asset file would have it read whatever it names."""
    if not isinstance(kwargs, dict):
        raise TaskError(f"{where}: field '{field_name}' must be a mapping of simulator arguments")
    for key, value in kwargs.items():
        for item in value if isinstance(value, list) else [value]:
            plain = isinstance(item, (bool, int, float)) or (isinstance(item, str) and PLAIN_WORD.fullmatch(item))
            if not plain:
                raise TaskError(
                    f"{where}: field '{field_name}.{key}' is {value!r}: simulator arguments are numbers, flags, "
                    "words or lists of them (a task file names no files)"
                )


def builtin_task_files() -> dict[str, Path]:
    """The YAMLs in `envs/`, shipped inside the package as `awac_robot.task_files`."""
    root = resources.files("awac_robot.task_files")
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml")}


_registered: dict[str, TaskConfig] = {}


def register_task(path: str | Path) -> TaskConfig:
    """Add a user's own task YAML to the registry, under a name no built-in task has.

    A file that took a built-in task's name would change what that name means for every stage
    that looks it up - stores, runs and deployments of it - so it is refused; the built-in file
    itself, given by its path, is the task it always was.
    """
    config = load_task_file(path)
    builtin = builtin_task_files().get(config.name)
    if builtin is not None and not _same_file(builtin, Path(path)):
        raise TaskError(
            f"{path}: field 'name' is '{config.name}', a built-in task (envs/{config.name}.yaml): give your task "
            "a name of its own"
        )
    _registered[config.name] = config
    return config


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def task_names() -> list[str]:
    return sorted(set(builtin_task_files()) | set(_registered))


def get_task(task: str) -> TaskConfig:
    """A task by registered name, or by path to a YAML file (anything ending in .yaml/.yml)."""
    if task.endswith((".yaml", ".yml")):
        return register_task(task)
    if task in _registered:
        return _registered[task]
    files = builtin_task_files()
    if task not in files:
        known = task_names()
        close = difflib.get_close_matches(task, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise TaskError(f"unknown task '{task}'.{hint} Known tasks: {', '.join(known)}")
    config = load_task_file(files[task])
    if config.name != task:
        raise TaskError(f"{files[task]}: field 'name' is '{config.name}' but the file is named '{task}'")
    return config


def get_spec(task: str) -> TaskSpec:
    return get_task(task).spec


def _import_simulators() -> None:
    requested_backend()  # MuJoCo raises a bare RuntimeError on import for a bad MUJOCO_GL
    # gymnasium-robotics prints a notice about the Adroit *dense* rewards on import; the
    # default here is sparse, and the README says which dense variant this version uses.
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def flatten_observation(
    obs: Any, config: TaskConfig, *, steps: int | None = None, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """A simulator observation as the task's flat vector (float32 unless asked), in the order the README documents.

    With `steps`, `obs` holds that many observations stacked along the first axis of every
    leaf (a recorded episode) and the result has shape (steps, obs_dim). A goal dict may
    hold more subtasks than `goal_order` only then: a recording made with other kitchen
    subtasks keeps ours, the rest are not part of the task. `dtype=np.float64` keeps a
    recording's precision for recomputing success exactly as the simulator did.
    """
    rows = 1 if steps is None else steps

    def part(value: Any) -> np.ndarray:
        return np.asarray(value, dtype=np.float64).reshape(rows, -1)

    if config.layout == "flat":
        parts = [part(obs)]
    else:
        parts = [_goal_part(obs[key], key, config, part, allow_extra=steps is not None) for key in GOAL_DICT_KEYS]
    flat = np.concatenate(parts, axis=1).astype(dtype)
    if flat.shape[1] != config.obs_dim:
        raise TaskError(
            f"{config.source}: simulator gives {flat.shape[1]} observation numbers, "
            f"field 'observation.size' says {config.obs_dim}"
        )
    return flat[0] if steps is None else flat


def _goal_part(
    value: Any, key: str, config: TaskConfig, part: Callable[[Any], np.ndarray], allow_extra: bool
) -> np.ndarray:
    if not isinstance(value, dict):
        return part(value)
    missing = set(config.goal_order) - set(value)
    if missing or (not allow_extra and set(value) != set(config.goal_order)):
        raise TaskError(f"{config.source}: field 'observation.goal_order' must list {sorted(value)} for '{key}'")
    return np.concatenate([part(value[goal]) for goal in config.goal_order], axis=1)


class TaskEnv(gym.Wrapper[np.ndarray, np.ndarray, Any, Any]):
    """Flattens observations, unifies success and applies the reward mode.

    Sparse reward is the AWAC paper's binary reward: 0 on a step where the task is
    solved, -1 otherwise, computed from the same success signal every task reports, so a
    store's rewards can always be recomputed from its `success` column.
    """

    def __init__(self, env: gym.Env, config: TaskConfig, reward: str, seed: int | None = None) -> None:
        super().__init__(env)
        self.config = config
        self.reward_mode = reward
        self._first_seed = seed
        self._film: Film | None = None
        self._film_step = 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(config.obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(config.act_dim,), dtype=np.float32)

    def flatten(self, obs: Any) -> np.ndarray:
        return flatten_observation(obs, self.config)

    def _success(self, info: dict[str, Any]) -> bool:
        key = self.config.success_info_key
        if key is None:  # the task file set `success.all_subtasks: true` instead (load_task_file)
            done = info.get("episode_task_completions", [])
            return len(done) == len(self.config.goal_order)
        return bool(info.get(key, False))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        obs, info = self.env.reset(seed=seed, options=options)
        info["success"] = self._success(info)
        self._film_step = 0
        self._shoot()
        return self.flatten(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.config.act_dim,):
            raise TaskError(f"task '{self.config.name}' takes {self.config.act_dim} action numbers, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise TaskError(f"task '{self.config.name}': non-finite action {action.tolist()} refused")
        obs, reward, terminated, truncated, info = self.env.step(np.clip(action, -1.0, 1.0))
        success = self._success(info)
        info["success"] = success
        if self.reward_mode == "sparse":
            reward = 0.0 if success else -1.0
        self._film_step += 1
        self._shoot()
        return self.flatten(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray:
        """The current scene as an (H, W, 3) uint8 frame (the env must be made with `render_mode="rgb_array"`)."""
        self._check_can_render()
        frame = self.env.render()
        assert isinstance(frame, np.ndarray)  # what gymnasium's "rgb_array" mode renders
        _close_before_gl_teardown(self)
        return frame

    @contextlib.contextmanager
    def filming(self, every: int = 1) -> Iterator[Film]:
        """Within the block, each reset and every `every`-th step of an episode are filmed."""
        self._check_can_render()
        self._film = Film(every)
        try:
            yield self._film
        finally:
            self._film = None

    def _check_can_render(self) -> None:
        if self.render_mode != "rgb_array":
            raise RenderError(f"the {self.config.name} env was made without render_mode='rgb_array': it cannot render")

    def _shoot(self) -> None:
        film = self._film
        if film is not None and self._film_step % film.every == 0:
            film.frames.append(self.render())
            film.steps.append(self._film_step)


@dataclass
class Film:
    """Frames of an env being filmed; `steps[j]` is the episode step frame j shows (0: right after reset)."""

    every: int
    frames: list[np.ndarray] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


_rendering_envs: weakref.WeakSet[TaskEnv] = weakref.WeakSet()


def _close_before_gl_teardown(env: TaskEnv) -> None:
    """Close rendering envs at exit before MuJoCo's EGL display is terminated (else each prints a traceback).

    MuJoCo registers its own exit handler when the first GL context is made, i.e. during the
    first render; handlers run last-registered-first, so ours is registered after that.
    """
    if not _rendering_envs:
        atexit.register(_close_rendering_envs)
    _rendering_envs.add(env)


def _close_rendering_envs() -> None:
    for env in list(_rendering_envs):
        env.close()


def make_env(
    task: str,
    reward: str = "sparse",
    seed: int | None = None,
    render_mode: str | None = None,
    size: int = FRAME_SIZE,
) -> TaskEnv:
    """Build a task's env. `seed` seeds the first reset and the action space.

    The time limit comes from the task YAML and is reported as truncation, so a learner
    never treats the end of an episode as a terminal state. `render_mode="rgb_array"`
    renders offscreen `size` x `size` frames (headless: EGL, see gl.py); rendering never
    changes the simulation, so a rendered episode equals an unrendered one.
    """
    if reward not in REWARD_MODES:
        raise TaskError(f"unknown reward mode '{reward}': use one of {', '.join(REWARD_MODES)}")
    if render_mode not in (None, *RENDER_MODES):
        raise TaskError(f"unknown render mode '{render_mode}': use one of {', '.join(RENDER_MODES)}")
    config = get_task(task)
    kwargs = dict(config.simulator_kwargs)
    if reward == "dense":
        kwargs.update(config.dense_kwargs)
    if render_mode is not None:
        ensure_backend()  # before MuJoCo's GL modules load: the backend cannot change afterwards
        kwargs.update(render_mode=render_mode, width=size, height=size)
    _import_simulators()
    if config.simulator_id not in gym.registry:
        raise TaskError(
            f"{config.source}: field 'simulator.id' is '{config.simulator_id}', which no installed simulator "
            "registers: give a registered gymnasium id (e.g. AdroitHandDoor-v1, FetchPush-v4)"
        )
    # gymnasium's passive checker warns that the kitchen reuses observation arrays; the
    # wrapper copies every observation into a fresh flat array, so the warning is noise.
    env = gym.make(config.simulator_id, max_episode_steps=config.episode_steps, disable_env_checker=True, **kwargs)
    wrapped = TaskEnv(env, config, reward, seed)
    if seed is not None:
        wrapped.action_space.seed(seed)
    return wrapped


#: Namespace of the gymnasium ids under which every built-in task is registered (`awac_robot/door-v0`).
GYM_NAMESPACE = "awac_robot"
GYM_VERSION = 0


def gym_id(task: str) -> str:
    return f"{GYM_NAMESPACE}/{task}-v{GYM_VERSION}"


class GymTaskEnv(gym.Env[np.ndarray, np.ndarray]):
    """A task as a plain gymnasium env, so `gym.make("awac_robot/door-v0")` builds what `make_env` builds.

    This is the entry point a Minari dataset's env spec names: Minari's `recover_environment`
    and any tool that records through `gym.make` get our flat observation, [-1, 1] actions,
    reward mode and time limit without knowing awac-robot. It is an env, not a wrapper, so its
    spec is its own id and not the simulator's with our wrapper appended. The info is only
    `{"success": bool}`, the same keys at reset and at every step, which is what Minari's
    DataCollector needs to record infos (the simulators' own infos change keys between reset
    and step, and the kitchen's hold lists of names).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: str, reward: str = "sparse") -> None:
        self.task_env = make_env(task, reward)
        self.observation_space = self.task_env.observation_space
        self.action_space = self.task_env.action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.task_env.reset(seed=seed, options=options)
        return obs, {"success": bool(info["success"])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.task_env.step(action)
        return obs, reward, terminated, truncated, {"success": bool(info["success"])}

    def close(self) -> None:
        self.task_env.close()


def gym_env_spec(task: str, reward: str = "sparse") -> EnvSpec:
    """The gymnasium spec that builds `task` through GymTaskEnv (what `awac_robot/<task>-v0` is registered as).

    The time limit is applied inside make_env (from the task YAML), so the spec adds none.
    """
    return EnvSpec(
        id=gym_id(task),
        entry_point=f"{__name__}:GymTaskEnv",
        kwargs={"task": task, "reward": reward},
        disable_env_checker=True,
    )


def _register_gym_ids() -> None:
    # Registered on import, as gymnasium-robotics registers its own ids.
    for task in builtin_task_files():
        spec = gym_env_spec(task)
        if spec.id not in gym.registry:
            gym.register(spec.id, spec.entry_point, kwargs=spec.kwargs, disable_env_checker=spec.disable_env_checker)


_register_gym_ids()
