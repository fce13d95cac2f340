"""The collection loop: run a demonstrator in a task env and append each kept episode to a store.

Episodes come from the shared loop in `rollout.py`, which also adds the documented action
noise (docs/store.md) the same way for scripted, policy and human data, and records the
action the env executed, which is what an off-policy learner needs. Episode i is reset with
seed `seed + i`, and its noise is drawn from a generator seeded the same way, so a run is
reproducible episode by episode.

A store that already holds episodes of the same demonstrator is continued after its
highest seed rather than given the same (byte-identical) episodes again; an explicit first
seed that would repeat some is refused. Every run is recorded as one provenance batch.
"""

from __future__ import annotations

import hashlib
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from awac_robot.demonstrators import Demonstrator
from awac_robot.envs import TaskEnv, make_env
from awac_robot.outputs import STORE, check_output_folder
from awac_robot.provenance import Batch
from awac_robot.rollout import check_seed, rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import DemoStore, Episode, StoreError


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
    #: first episode's seed; None continues after the highest seed the demonstrator has in the store (0 if none)
    seed: int | None = None
    reward: str = "sparse"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise CollectError(f"--episodes must be at least 1, got {self.episodes}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise CollectError(f"--noise is a standard deviation and must be finite and >= 0, got {self.noise}")
        check_seed(self.seed)
        if self.seed is not None:
            check_seed(self.seed + self.episodes - 1, "--seed (plus --episodes - 1, the last episode's)")
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
    first_seed: int = 0
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


def demonstrator_identity(name: str, demo: Demonstrator | None = None) -> tuple[str, dict[str, str]]:
    """How the store names a demonstrator, and its arguments, for provenance and for continuing seeds.

    A policy is named by its resolved path and recorded with its SHA-256; a demonstrator object
    handed to `collect` directly is named by its class.
    """
    if demo is not None:
        return f"{type(demo).__module__}.{type(demo).__qualname__}", {}
    if name.startswith("policy:"):
        path = Path(name.removeprefix("policy:")).resolve()
        return f"policy:{path}", {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return name, {}


def seeds_used(store: DemoStore, demonstrator: str, source: str) -> set[int]:
    """Seeds of the store's episodes from `demonstrator` (episodes of a batch that names none: from `source`)."""
    meta = store.episode_meta()
    named = [batch.demonstrator for batch in store.batches]
    return {
        int(seed)
        for seed, batch, episode_source in zip(meta["seed"], meta["batch"], meta["source"], strict=True)
        if seed >= 0 and (named[batch] == demonstrator or (named[batch] is None and episode_source == source))
    }


def plan_first_seed(store: DemoStore, config: CollectConfig, demonstrator: str, source: str) -> tuple[int, str | None]:
    """The first seed to run, and the line to show when an earlier collection is being continued."""
    used = seeds_used(store, demonstrator, source)
    following = max(used) + 1 if used else 0
    if config.seed is None:
        if not used:
            return 0, None
        held = f"store {store.path} already holds seeds {format_seeds(used)} from {demonstrator}"
        return following, f"{held}: continuing at seed {following}"
    repeated = used & set(range(config.seed, config.seed + config.episodes))
    if repeated:
        raise CollectError(
            f"store {store.path} already holds seeds {format_seeds(repeated)} from {demonstrator}, which --seed "
            f"{config.seed} --episodes {config.episodes} would repeat: leave out --seed to continue at seed {following}"
        )
    return config.seed, None


def format_seeds(seeds: set[int]) -> str:
    """`{0, 1, 2, 5}` -> "0-2, 5": the runs of consecutive seeds, the first few of them."""
    ordered = sorted(seeds)
    runs: list[list[int]] = []
    for seed in ordered:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    text = [f"{low}-{high}" if high > low else str(low) for low, high in runs[:4]]
    return ", ".join(text) + (f" and {len(runs) - 4} more runs" if len(runs) > 4 else "")


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


def collect(
    config: CollectConfig, demonstrator: Demonstrator | None = None, announce: Callable[[str], None] | None = None
) -> CollectSummary:
    """Run `config.episodes` episodes into `config.store` (created if missing); returns the summary.

    `demonstrator` overrides `config.demonstrator` (for callers that build their own);
    `announce` is handed the line that says an earlier collection is being continued.
    """
    check_output_folder(config.store, "--store", STORE)
    env = make_env(config.task, reward=config.reward)
    demo = demonstrator if demonstrator is not None else resolve_demonstrator(config.demonstrator, env)
    created = not Path(config.store).exists()
    try:
        identity = demonstrator_identity(config.demonstrator, demonstrator)
        summary = _collect_into_store(config, env, demo, identity, announce)
    except BaseException:
        if created and Path(config.store).exists() and _holds_no_episodes(config.store):
            shutil.rmtree(config.store)  # all or nothing: a store this call made and filled with nothing goes again
        raise
    finally:
        env.close()
        if demonstrator is None and hasattr(demo, "close"):  # e.g. the keyboard gives the terminal back
            demo.close()
    summary.store_bytes = DemoStore.open(config.store).size_on_disk()
    return summary


def _holds_no_episodes(path: Path) -> bool:
    try:
        with DemoStore.open(path) as store:
            return store.num_episodes == 0
    except (StoreError, OSError):
        return False


def _collect_into_store(
    config: CollectConfig,
    env: TaskEnv,
    demo: Demonstrator,
    identity: tuple[str, dict[str, str]],
    announce: Callable[[str], None] | None,
) -> CollectSummary:
    summary = CollectSummary()
    started = time.perf_counter()
    name, demo_args = identity
    with DemoStore.open_or_create(config.store, env.config.spec, config.reward) as store:
        summary.first_seed, continuing = plan_first_seed(store, config, name, demo.source)
        if continuing and announce is not None:
            announce(continuing)
        arguments = {**demo_args, "task": config.task, "episodes": config.episodes, "reward": config.reward}
        store.start_batch(Batch.now("collect", name, arguments, noise=config.noise, perturb=config.perturb))
        appender = _BackgroundAppender(store, env.config.spec)
        bar = tqdm(total=config.episodes, unit="ep", desc=f"collect {env.config.name}", disable=not config.progress)
        try:
            for index in range(config.episodes):
                episode = run_episode(env, demo, summary.first_seed + index, config.noise, config.perturb)
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
