"""What the demo store costs: collection overhead, load and sampling speed, size on disk, codec choice.

Usage: .venv/bin/python bench/store.py [--task door] [--episodes 20] [--demonstrator scripted|linear]
                                       [--rounds 3] [--steps 1000000] [--big-store /tmp/awac_bench_1m.zarr] [--rebuild]

1. Collection: steps/s of `collect` (store writes on a background thread), of the same loop
   appending synchronously, and of stepping the same env + demonstrator with no store;
   interleaved rounds, best of each reported beside every run.
2. A 1M-step store of the door task's sizes, filled through `DemoStore.append` with
   synthetic-but-realistic episodes (smooth random-walk observations, smooth actions, sparse
   rewards): append rate, `load_transitions` rate, random batches of 256 per second from
   the loaded arrays vs the same-shaped arrays made directly in numpy, size on disk vs raw.
   The store is kept at --big-store and reused unless --rebuild.
3. Codecs (the docs/store.md choice): ratio and encode/decode speed on real collected data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numcodecs
import numpy as np

from awac_robot.collect import CollectConfig, collect, resolve_demonstrator, run_episode
from awac_robot.demonstrators import Demonstrator
from awac_robot.envs import TaskEnv, get_spec, make_env
from awac_robot.store import DemoStore, Episode, Transitions

EPISODE_STEPS = 1000  # long synthetic episodes: the append count (not the step count) sets build time


class LinearDemonstrator:
    """A fixed random linear policy, for when no scripted expert exists for the task."""

    source = "policy"

    def __init__(self, spec_seed: int = 7) -> None:
        self._seed = spec_seed
        self._weights: np.ndarray | None = None

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        if self._weights is None:
            rng = np.random.default_rng(self._seed)
            self._weights = rng.normal(size=(env.config.act_dim, env.config.obs_dim))

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(np.tanh(self._weights @ obs), dtype=np.float32)

    def keep_episode(self) -> bool:
        return True


def _demonstrator(name: str, env: TaskEnv) -> Demonstrator:
    return LinearDemonstrator() if name == "linear" else resolve_demonstrator(name, env)


def bench_collection(task: str, episodes: int, demonstrator: str, noise: float, rounds: int) -> list[Episode]:
    """Steps/s (wall) and CPU ms per 1000 steps of the three ways, interleaved over `rounds`.

    Wall speed shows what a user waits for; CPU time (all threads of this process) shows what
    the store costs regardless of how busy the other core is, which on a shared machine is
    the steadier figure.
    """
    env = make_env(task)
    demo = _demonstrator(demonstrator, env)
    wall: dict[str, list[float]] = {"bare": [], "sync": [], "collect": []}
    cpu: dict[str, list[float]] = {"bare": [], "sync": [], "collect": []}
    recorded: list[Episode] = []

    def measure(name: str, work: Callable[[], int]) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        steps = work()
        wall[name].append(steps / (time.perf_counter() - started))
        cpu[name].append((time.process_time() - cpu_started) / steps * 1e6)

    def bare() -> int:
        recorded[:] = [run_episode(env, demo, seed, noise) for seed in range(episodes)]
        return sum(e.length for e in recorded)

    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(rounds):

            def synchronous(round_index: int = round_index) -> int:
                with DemoStore.create(Path(tmp) / f"sync{round_index}.zarr", env.config.spec) as store:
                    for seed in range(episodes):
                        store.append(run_episode(env, demo, seed, noise))
                    return store.num_steps

            def collected(round_index: int = round_index) -> int:
                path = Path(tmp) / f"collect{round_index}.zarr"
                config = CollectConfig(task=task, episodes=episodes, store=path, noise=noise, progress=False)
                return collect(config, demonstrator=demo).steps_kept

            measure("bare", bare)
            measure("sync", synchronous)
            measure("collect", collected)
    print(f"== collection: {task}, {rounds} rounds of {episodes} episodes, demonstrator {demonstrator}, noise {noise}")
    labels = {"bare": "env + demonstrator, no store", "sync": "+ synchronous append", "collect": "awac-robot collect"}
    best_wall = {name: max(values) for name, values in wall.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}
    for name, label in labels.items():
        wall_cost = "" if name == "bare" else f" (cost {1 - best_wall[name] / best_wall['bare']:+.0%})"
        cpu_cost = "" if name == "bare" else f" (+{best_cpu[name] / best_cpu['bare'] - 1:.0%})"
        runs = ", ".join(f"{rate:.0f}" for rate in wall[name])
        print(
            f"   {label:<29}: best {best_wall[name]:5.0f} steps/s{wall_cost:<13} "
            f"CPU {best_cpu[name]:5.0f} us/step{cpu_cost:<8}  wall runs: {runs}"
        )
    print(f"   load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return recorded


def synthetic_episode(rng: np.random.Generator, obs_dim: int, act_dim: int, seed: int) -> Episode:
    """Smooth sensor-like observations and actions; success from a random step on in a third of episodes."""
    obs = (rng.normal(0, 0.5, obs_dim) + np.cumsum(rng.normal(0, 0.01, (EPISODE_STEPS + 1, obs_dim)), axis=0)).astype(
        np.float32
    )
    action = np.clip(np.cumsum(rng.normal(0, 0.05, (EPISODE_STEPS, act_dim)), axis=0), -1, 1)
    success = np.zeros(EPISODE_STEPS, dtype=bool)
    if seed % 3 == 0:
        success[rng.integers(EPISODE_STEPS // 2, EPISODE_STEPS) :] = True
    truncated = np.zeros(EPISODE_STEPS, dtype=bool)
    truncated[-1] = True
    return Episode(
        obs=obs,
        action=action,
        reward=np.where(success, 0.0, -1.0),
        terminated=np.zeros(EPISODE_STEPS, dtype=bool),
        truncated=truncated,
        success=success,
        source="scripted",
        seed=seed,
    )


def build_big_store(path: Path, steps: int, rebuild: bool) -> None:
    if path.exists() and not rebuild and DemoStore.open(path).num_steps >= steps:
        return
    shutil.rmtree(path, ignore_errors=True)
    spec = get_spec("door")
    rng = np.random.default_rng(0)
    count, seconds = steps // EPISODE_STEPS, 0.0
    with DemoStore.create(path, spec) as store:
        for seed in range(count):
            episode = synthetic_episode(rng, spec.obs_dim, spec.act_dim, seed)
            started = time.perf_counter()
            store.append(episode)
            seconds += time.perf_counter() - started
    print(
        f"   built {path}: {count} appends of {EPISODE_STEPS} steps, {seconds / count * 1e3:.1f} ms each "
        f"({count * EPISODE_STEPS / seconds:,.0f} steps/s appended)"
    )


def batches_per_second(data: Transitions, seconds: float = 2.0, batch: int = 256) -> float:
    rng = np.random.default_rng(0)
    arrays = (data.obs, data.action, data.reward, data.next_obs, data.terminal)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        index = rng.integers(0, len(data.reward), batch)
        for array in arrays:
            array[index]
        count += 1
    return count / seconds


def bench_big_store(path: Path, steps: int, rebuild: bool) -> None:
    print(f"== {steps:,}-step store (door sizes: obs 39, act 28)")
    build_big_store(path, steps, rebuild)
    store = DemoStore.open(path)
    data = store.load_transitions()
    print(
        f"   load_transitions: {len(data):,} transitions in {data.load_seconds:.2f} s "
        f"({len(data) / data.load_seconds:,.0f} transitions/s)"
    )
    rng = np.random.default_rng(1)
    plain = Transitions(
        obs=rng.normal(size=data.obs.shape).astype(np.float32),
        action=rng.normal(size=data.action.shape).astype(np.float32),
        reward=rng.normal(size=data.reward.shape).astype(np.float32),
        next_obs=rng.normal(size=data.next_obs.shape).astype(np.float32),
        terminal=np.zeros(data.terminal.shape, dtype=np.float32),
        success=np.zeros(data.success.shape, dtype=bool),
    )
    loaded, baseline = batches_per_second(data), batches_per_second(plain)
    print(
        f"   random batches of 256: loaded {loaded:,.0f}/s, plain numpy {baseline:,.0f}/s "
        f"(ratio {loaded / baseline:.2f})"
    )
    raw = data.obs.nbytes + data.action.nbytes + data.reward.nbytes + 3 * len(data)
    disk = store.size_on_disk()
    print(
        f"   size on disk {disk / 1e6:.1f} MB; raw per-step arrays {raw / 1e6:.1f} MB "
        f"(float32 obs/action/reward + bool flags); ratio {raw / disk:.2f}x"
    )


def bench_codecs(episodes: list[Episode]) -> None:
    obs = np.concatenate([e.obs[:-1] for e in episodes])
    action = np.concatenate([e.action for e in episodes])
    print(f"== codecs on collected data ({len(obs)} steps; obs and action, float32)")
    codecs = {
        "zstd-3 + shuffle": numcodecs.Blosc("zstd", 3, numcodecs.Blosc.SHUFFLE),
        "zstd-3, no shuffle": numcodecs.Blosc("zstd", 3, numcodecs.Blosc.NOSHUFFLE),
        "zstd-3 + bitshuffle": numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE),
        "lz4-5 + shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
        "zstd-9 + shuffle": numcodecs.Blosc("zstd", 9, numcodecs.Blosc.SHUFFLE),
    }
    for name, codec in codecs.items():
        for label, array in (("obs", obs), ("action", action)):
            encode = _best_seconds(partial(codec.encode, array))
            encoded = codec.encode(array)
            decode = _best_seconds(partial(codec.decode, encoded))
            print(
                f"   {name:<20} {label:<6} ratio {array.nbytes / len(encoded):5.2f}x  "
                f"encode {array.nbytes / encode / 1e6:6.0f} MB/s  decode {array.nbytes / decode / 1e6:6.0f} MB/s"
            )


def _best_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    """Best of a few runs: the machine is shared, and the minimum is the least disturbed figure."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="door")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--demonstrator", default="scripted", help="scripted, policy:PATH.onnx or linear")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--big-store", type=Path, default=Path(tempfile.gettempdir()) / "awac_bench_1m.zarr")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    recorded = bench_collection(args.task, args.episodes, args.demonstrator, args.noise, args.rounds)
    bench_big_store(args.big_store, args.steps, args.rebuild)
    bench_codecs(recorded)


if __name__ == "__main__":
    main()
