"""The collection loop: run a demonstrator in a task env and append each kept episode to a store.

Episodes come from the shared loop in `rollout.py`, which also adds the documented action
noise (docs/store.md) the same way for scripted, policy and human data, and records the
action the env executed, which is what an off-policy learner needs. Episode i is reset with
seed `seed + i`, and its noise is drawn from a generator seeded the same way, so a run is
reproducible episode by episode.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from awac_robot.demonstrators import Demonstrator
from awac_robot.envs import TaskEnv, make_env
from awac_robot.rollout import rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import DemoStore, Episode


class CollectError(ValueError):
    """A collection request that cannot run as given (the message says how to fix it)."""


@dataclass(frozen=True)
class CollectConfig:
    task: str
    episodes: int
    store: Path
    demonstrator: str = "scripted"
    noise: float = 0.0
    perturb: float = 0.0
    seed: int = 0
    reward: str = "sparse"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise CollectError(f"--episodes must be at least 1, got {self.episodes}")
        if self.noise < 0:
            raise CollectError(f"--noise is a standard deviation and must be >= 0, got {self.noise}")
        if not 0.0 <= self.perturb <= 1.0:
            raise CollectError(f"--perturb is a fraction of episodes and must be in [0, 1], got {self.perturb}")


@dataclass
class CollectSummary:
    """What a run added; `store_*` describe the whole store afterwards."""

    episodes_run: int = 0
    episodes_kept: int = 0
    steps_kept: int = 0
    successes: int = 0
    seconds: float = 0.0
    store_episodes: int = 0
    store_bytes: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes_kept if self.episodes_kept else 0.0


def resolve_demonstrator(name: str, env: TaskEnv) -> Demonstrator:
    """`scripted`, `keyboard` or `policy:PATH.onnx` -> a demonstrator for the env's task."""
    task = env.config.name
    if name == "scripted":
        from awac_robot.demonstrators.scripted import make_scripted

        return make_scripted(task)
    if name == "keyboard":
        from awac_robot.demonstrators.keyboard import make_keyboard

        return make_keyboard(task)
    if name.startswith("policy:") and len(name) > len("policy:"):
        from awac_robot.demonstrators.policy import OnnxPolicyDemonstrator

        return OnnxPolicyDemonstrator(Path(name.removeprefix("policy:")), env.config.spec)
    raise CollectError(f"unknown demonstrator {name!r}: use scripted, keyboard or policy:PATH.onnx")


def run_episode(env: TaskEnv, demo: Demonstrator, seed: int, noise: float = 0.0, perturb: float = 0.0) -> Episode:
    """One demonstrator episode exactly as `collect` records it (the shared loop, with the demonstrator's source)."""
    return rollout(env, demo, seed, source=demo.source, noise=noise, perturb=perturb)


class _BackgroundAppender:
    """Appends episodes on a second thread while the next episode is being stepped.

    Zarr's per-append cost (about 2 ms per array write, more for the obs tail chunk) would
    otherwise add 20-40% to collection time. One episode is handed over at a time, so a kill
    loses at most the episode being written, exactly as a kill mid-append would; every
    published episode stays intact. A failed append is re-raised in the collecting thread.
    """

    def __init__(self, store: DemoStore, spec: TaskSpec) -> None:
        self._store = store
        self._spec = spec
        self._queue: queue.Queue[Episode | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="store-appender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (episode := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._store.append(episode, spec=self._spec)
                except BaseException as exc:  # handed to the collecting thread, never swallowed
                    self._error = exc
            self._queue.task_done()

    def submit(self, episode: Episode) -> None:
        self._queue.join()  # the previous episode is published before the next is handed over
        self._raise_error()
        self._queue.put(episode)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


def collect(config: CollectConfig, demonstrator: Demonstrator | None = None) -> CollectSummary:
    """Run `config.episodes` episodes into `config.store` (created if missing); returns the summary.

    `demonstrator` overrides `config.demonstrator` (for callers that build their own).
    """
    env = make_env(config.task, reward=config.reward)
    demo = demonstrator if demonstrator is not None else resolve_demonstrator(config.demonstrator, env)
    try:
        summary = _collect_into_store(config, env, demo)
    finally:
        env.close()
        if demonstrator is None and hasattr(demo, "close"):  # e.g. the keyboard gives the terminal back
            demo.close()
    summary.store_bytes = DemoStore.open(config.store).size_on_disk()
    return summary


def _collect_into_store(config: CollectConfig, env: TaskEnv, demo: Demonstrator) -> CollectSummary:
    summary = CollectSummary()
    started = time.perf_counter()
    with DemoStore.open_or_create(config.store, env.config.spec, config.reward) as store:
        appender = _BackgroundAppender(store, env.config.spec)
        bar = tqdm(total=config.episodes, unit="ep", desc=f"collect {env.config.name}", disable=not config.progress)
        try:
            for index in range(config.episodes):
                episode = run_episode(env, demo, config.seed + index, config.noise, config.perturb)
                summary.episodes_run += 1
                if demo.keep_episode():
                    appender.submit(episode)
                    summary.episodes_kept += 1
                    summary.steps_kept += episode.length
                    summary.successes += episode.solved
                bar.set_postfix(success=f"{summary.success_rate:.0%}", kept=summary.episodes_kept, refresh=False)
                bar.update()
        finally:
            bar.close()
            appender.finish()
        summary.store_episodes = store.num_episodes
    summary.seconds = time.perf_counter() - started
    return summary
