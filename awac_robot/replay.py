"""Stored episodes and deployments simulated again from their seed and actions, checked, and filmed.

The simulator is deterministic, so replaying an episode's actions from `env.reset(seed)`
reproduces its observations, rewards, end flags and success flags bit for bit on the
simulator versions the project pins. The check compares every one of those columns and
names each that differs, from which step and by how much; it does not guess why (another
simulator, another task definition, or a store edited by hand all look alike from here), and
the video then shows the replay, not the recording.

A deployment is replayed from the robot process's own record (`robot.runlog`: the
observation and the applied command of every simulator step, and the seed): the replay
repeats the robot loop's simulator calls in order -- reset, its steps, reset at each
episode's end -- so it meets the same starts, and checks every observation the robot saw.
This runs after the run, in its own process: nothing is ever rendered inside the real-time
robot process. The applied commands are float64, as the robot sent them to the simulator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from awac_robot.control.robot import SIM_DRIVER
from awac_robot.control.runlog import RunLogError, load_log
from awac_robot.control.supervisor import ROBOT_LOG
from awac_robot.envs import TaskEnv, get_spec, make_env
from awac_robot.filming import FilmedEpisode, film_episode, filmed_rollout
from awac_robot.rollout import Step, rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import UNKNOWN_SEED, DemoStore, Episode


class ReplayError(ValueError):
    """An episode that cannot be replayed as asked (out of range, no seed); the message says why."""


@dataclass
class PlaybackActor:
    """Plays a stored action sequence back, one action per step."""

    actions: np.ndarray
    _next: int = 0

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._next = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        action = self.actions[self._next]
        self._next += 1
        return action


@dataclass(frozen=True)
class ColumnDiff:
    """The first step at which a recorded column and its replay disagree, and by how much at most."""

    column: str
    first_step: int
    max_diff: float

    def describe(self) -> str:
        return f"{self.column} first at step {self.first_step} (max difference {self.max_diff:.3g})"


@dataclass(frozen=True)
class ReplayCheck:
    """How a replayed episode compares with the recorded one, column by column."""

    stored_steps: int
    replayed_steps: int
    #: the recorded columns the replay was compared on, in order
    columns: tuple[str, ...]
    #: the columns that differ (empty: every compared value is equal)
    differences: tuple[ColumnDiff, ...] = ()
    #: what is known to be missing from the recording (a run log without its end), or None
    missing: str | None = None

    @property
    def exact(self) -> bool:
        return not self.differences and self.stored_steps == self.replayed_steps

    @property
    def max_obs_diff(self) -> float:
        return max((d.max_diff for d in self.differences if d.column == "obs"), default=0.0)

    @property
    def first_diff_step(self) -> int | None:
        return min((d.first_step for d in self.differences), default=None)

    def describe(self, recording: str = "the store") -> str:
        compared = ", ".join(self.columns)
        note = f"; but {self.missing}" if self.missing else ""
        if self.exact:
            return f"replay matches {recording} exactly ({self.stored_steps} steps; compared: {compared}){note}"
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mujoco", "gymnasium-robotics"))
        parts = [d.describe() for d in self.differences]
        if self.stored_steps != self.replayed_steps:
            parts.append(f"{self.replayed_steps} steps replayed of {self.stored_steps} recorded")
        return f"replay DIFFERS from {recording}: {'; '.join(parts)} (replayed with {versions}){note}"


def column_diff(name: str, recorded: np.ndarray, replayed: np.ndarray) -> ColumnDiff | None:
    """Compare the first min(len) rows of a recorded column with the replay's; None if they are equal."""
    steps = min(len(recorded), len(replayed))
    a = np.asarray(recorded[:steps], dtype=np.float64).reshape(steps, -1)
    b = np.asarray(replayed[:steps], dtype=np.float64).reshape(steps, -1)
    diff = np.abs(a - b)
    diff[np.isnan(a) != np.isnan(b)] = np.inf  # a NaN on one side only is a difference; on both, none
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    per_step = diff.max(axis=1) if diff.size else np.zeros(steps)
    bad = np.flatnonzero(per_step > 0)
    return ColumnDiff(name, int(bad[0]), float(per_step.max())) if bad.size else None


@dataclass
class Replayed:
    index: int
    stored: Episode
    check: ReplayCheck
    film: FilmedEpisode | None  # None when only checked


def read_episodes(store_path: Path, indices: list[int]) -> tuple[DemoStore, dict[int, Episode]]:
    """The episodes `indices` of a store (closed again), checked to be replayable."""
    if not Path(store_path).exists():
        raise FileNotFoundError(f"no demo store at {store_path}")
    with DemoStore.open(store_path) as store:
        count = store.num_episodes
        wrong = [i for i in indices if not 0 <= i < count]
        if wrong:
            raise ReplayError(f"store {store_path} has {count} episodes (0..{count - 1}); no episode {wrong[0]}")
        wanted = set(indices)
        found = {i: e for i, e in zip(itertools.count(), store.episodes(), strict=False) if i in wanted}
    for index, episode in found.items():
        if episode.seed == UNKNOWN_SEED:
            raise ReplayError(
                f"episode {index} of {store_path} has no reset seed (source {episode.source}): nothing to replay from"
            )
    return store, found


def compare_episode(stored: Episode, replayed: Episode) -> ReplayCheck:
    """Every column of a stored episode that re-simulation produces again, against the replay's.

    The actions are what the replay plays, so they are not compared; the truncation flag of the
    last step is not either, since the replay ends there because the stored episode did (the
    step counts say whether both ended at the same step).
    """
    columns = {
        "obs": (stored.obs, replayed.obs),
        "reward": (stored.reward, replayed.reward),
        "terminated": (stored.terminated, replayed.terminated),
        "truncated": (stored.truncated[:-1], replayed.truncated[: stored.length - 1]),
        "success": (stored.success, replayed.success),
    }
    found = (column_diff(name, *pair) for name, pair in columns.items())
    return ReplayCheck(stored.length, replayed.length, tuple(columns), tuple(d for d in found if d is not None))


def compare_robot_record(obs: np.ndarray, replayed: Episode, missing: str | None) -> ReplayCheck:
    """A robot record's observations (row t: before command t) against a replayed episode's."""
    found = column_diff("obs", obs, replayed.obs)
    return ReplayCheck(len(obs), replayed.length, ("obs",), () if found is None else (found,), missing)


def replay_episodes(
    store_path: Path, indices: list[int], size: int | None = None, caption: str = "{task} episode {index} (seed {seed})"
) -> list[Replayed]:
    """Re-simulate the episodes `indices` of a store, each checked against the store; filmed at `size` px if given.

    `caption` heads every frame; it may use {task}, {index} and {seed}.
    """
    store, episodes = read_episodes(store_path, indices)
    task = store.spec.name
    env = _replay_env(task, size, reward=store.reward_mode)
    results = []
    try:
        for index in indices:
            stored = episodes[index]

            def at_stored_end(step: Step, stored: Episode = stored) -> bool:
                return step.index + 1 >= stored.length  # an episode cut short (budget, a person) ends there again

            actor = PlaybackActor(stored.action)
            if size is None:
                film, replayed = None, rollout(env, actor, stored.seed, source=stored.source, on_step=at_stored_end)
            else:
                text = caption.format(task=task, index=index, seed=stored.seed)
                film = filmed_rollout(env, actor, stored.seed, text, source=stored.source, on_step=at_stored_end)
                replayed = film.episode
            results.append(Replayed(index, stored, compare_episode(stored, replayed), film))
    finally:
        env.close()
    return results


@dataclass
class DeployedEpisode:
    """One robot episode of a deployment (the last is usually cut short by the end of the run)."""

    index: int
    steps: int
    check: ReplayCheck
    replayed: Episode
    film: FilmedEpisode | None


def replay_deployment(run: Path, size: int | None = None) -> list[DeployedEpisode]:
    """Re-simulate every robot episode of a deploy run folder (or its robot.runlog); filmed at `size` px if given."""
    path = Path(run) / ROBOT_LOG if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise FileNotFoundError(f"no robot record at {path}: pass a deploy run folder (`awac-robot deploy --log DIR`)")
    try:
        columns, meta = load_log(path)
    except RunLogError as exc:
        raise ReplayError(str(exc)) from None
    if "seed" not in meta or "applied" not in columns:
        raise ReplayError(f"{path} records no seed or no applied commands (an older deploy): it cannot be replayed")
    if meta["seed"] is None:
        raise ReplayError(f"{path}: the deployment ran without a seed, so its starts cannot be reproduced")
    driver = meta.get("robot", {}).get("target", SIM_DRIVER)  # records from before drivers: the simulator
    if driver != SIM_DRIVER:
        raise ReplayError(
            f"{path}: the deployment drove {driver}, not the simulated robot: there is nothing to re-simulate"
        )
    spec = TaskSpec.from_dict(meta["task_spec"])
    get_spec(spec.name).check_matches(spec, f"robot record {path}")
    if not len(columns["episode"]):
        raise ReplayError(f"{path} holds no simulator steps")
    missing = None
    if str(meta.get("exit", "")).startswith("killed"):
        missing = (
            f"the record has no end ({meta['exit']}): steps after its last {len(columns['episode'])} are missing "
            "and were not checked"
        )
    env = _replay_env(spec.name, size, seed=int(meta["seed"]))  # the robot's env: its first reset takes the seed
    results = []
    try:
        for index in np.unique(columns["episode"]).tolist():
            rows = np.flatnonzero(columns["episode"] == index)
            obs, applied = columns["obs"][rows], columns["applied"][rows]

            def run_robot_episode(applied: np.ndarray = applied) -> Episode:
                return _robot_episode(env, applied)

            if size is None:
                film, replayed = None, run_robot_episode()
            else:
                film = film_episode(env, run_robot_episode, f"{spec.name} deployment, episode {index}")
                replayed = film.episode
            last = index == columns["episode"][-1]
            check = compare_robot_record(obs, replayed, missing if last else None)
            results.append(DeployedEpisode(index, len(rows), check, replayed, film))
    finally:
        env.close()
    return results


def _replay_env(task: str, size: int | None, reward: str = "sparse", seed: int | None = None) -> TaskEnv:
    """The env to re-simulate in; it renders `size` x `size` frames when the replay is filmed."""
    if size is None:
        return make_env(task, reward, seed)
    return make_env(task, reward, seed, render_mode="rgb_array", size=size)


def _robot_episode(env: TaskEnv, applied: np.ndarray) -> Episode:
    """The robot loop's simulator calls for one episode: an unseeded reset, then each applied command in turn."""
    obs, _ = env.reset()
    observations, rewards, terminated, truncated, success = [obs], [], [], [], []
    for command in applied:
        obs, reward, term, trunc, info = env.step(command)
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        success.append(info["success"])
        if term or trunc:
            break
    steps = len(rewards)
    return Episode(
        obs=np.stack(observations),
        action=applied[:steps],
        reward=np.asarray(rewards),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
        success=np.asarray(success),
        source="policy",
    )
