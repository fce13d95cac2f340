"""Gradient updates per second of the AWAC update, at 1 and 2 threads, beside this machine's float32 matmul peak.

Usage: .venv/bin/python bench/updates.py [--threads 1 2] [--seconds S] [--batches 256 1024] [--task door]
    [--compile] [--plain-critics]

The update runs on a synthetic batch of the task's sizes (the arithmetic does not depend on
the values). The peak is the best of a few large square matmuls with the same thread count,
so `fraction` reads as "share of what this CPU can do in float32 matmul right now". Each row
also gives the process CPU time per update and the load average: on a shared machine the
wall rate says what a run gets, the CPU time (at one thread) what the update costs. With two
threads the CPU time includes OpenMP's spin-waiting, so it is no measure of work there.
The issue-13 targets are printed as PASS/FAIL lines; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch

from awac_robot.envs import get_spec
from awac_robot.train.awac import AWACLearner
from awac_robot.train.build import build_learner
from awac_robot.train.config import TrainConfig, setup_torch
from awac_robot.train.replay import Replay

#: (threads, batch) -> updates/s wanted (issue 13), and why
TARGETS = {
    (2, 256): (150.0, "issue 13, both cores"),
    (2, 1024): (50.0, "issue 13, both cores"),
    (1, 256): (145.0, "a 100k-step finetune (125k updates) in 900 s on the learner's one core"),
}


def matmul_peak(seconds: float, clock: Callable[[], int] = time.perf_counter_ns) -> float:
    """Best-observed float32 GFLOP/s of a 1024x1024 matmul, timed by `clock` (nanoseconds)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = clock()
        for _ in range(5):
            torch.mm(a, b)
        best = max(best, 5 * 2 * 1024**3 / (clock() - start))
    return best


def update_flops(config: TrainConfig, obs_dim: int, act_dim: int, batch: int) -> float:
    """FLOPs of the dense layers of one update (2 per multiply-add), counted as the update runs them."""

    def layer_macs(sizes: tuple[int, ...]) -> list[int]:
        return [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]

    actor = layer_macs((obs_dim, *config.actor_hidden, act_dim))
    critic = [config.critic_members * m for m in layer_macs((obs_dim + act_dim, *config.critic_hidden, 1))]
    critic_obs = config.critic_members * obs_dim * config.critic_hidden[0]  # part of critic[0]
    # forward: the actor at s and s'; the target critics at s'; the critics at (s, a) and, sharing the
    # observation part of the first layer, at (s, a_pi)
    forward = 2 * sum(actor) + 3 * sum(critic) - critic_obs
    # backward: input and weight gradients of every layer but the first, whose input needs none
    backward = 2 * sum(actor) - actor[0] + 2 * sum(critic) - critic[0]
    return 2.0 * (forward + backward) * batch


def synthetic_setup(config: TrainConfig) -> tuple[AWACLearner, Replay]:
    """A fresh learner for the config's task and a replay of random transitions of the task's sizes."""
    spec = get_spec(config.task)
    learner = build_learner(config, spec)
    gen = torch.Generator().manual_seed(0)
    n = 50_000
    data = SimpleNamespace(
        obs=torch.randn(n, spec.obs_dim, generator=gen),
        action=torch.rand(n, spec.act_dim, generator=gen) * 2 - 1,
        reward=-torch.ones(n),
        next_obs=torch.randn(n, spec.obs_dim, generator=gen),
        terminal=torch.zeros(n),
    )
    return learner, Replay.from_offline(spec.obs_dim, spec.act_dim, data, capacity=n, seed=0)


def measure(config: TrainConfig, batch: int, seconds: float) -> tuple[float, float, float]:
    """(updates per wall second, process CPU seconds per update, seconds of warm-up incl. any compiling)."""
    learner, replay = synthetic_setup(config)
    start = time.perf_counter()
    for _ in range(20):
        learner.update(replay.sample(batch))
    warmup = time.perf_counter() - start
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            learner.update(replay.sample(batch))
        done += 10
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done, warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (0 = all cores)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--task", default="door")
    parser.add_argument("--compile", action="store_true", help="the compiled update (TrainConfig.compile)")
    parser.add_argument("--plain-critics", action="store_true", help="critics without LayerNorm (the paper's)")
    args = parser.parse_args()

    spec = get_spec(args.task)
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}
    print(f"torch {torch.__version__}, compile {args.compile}, OpenMP environment {env or 'default'}")
    rates: dict[tuple[int, int], float] = {}
    for requested in args.threads:
        config = TrainConfig(
            task=args.task, threads=requested, critic_layer_norm=not args.plain_critics, compile=args.compile
        )
        threads = setup_torch(config)
        peak = matmul_peak(2.0)
        print(f"{threads} thread(s): float32 matmul peak {peak:.1f} GFLOP/s, load average {os.getloadavg()[0]:.2f}")
        for batch in args.batches:
            rate, cpu, warmup = measure(config, batch, args.seconds)
            rates[threads, batch] = rate
            gflops = rate * update_flops(config, spec.obs_dim, spec.act_dim, batch) / 1e9
            print(
                f"  batch {batch:5d}: {rate:6.1f} updates/s, {gflops:5.1f} GFLOP/s = {gflops / peak:.2f} of peak, "
                f"CPU {cpu * 1e3:.2f} ms/update, warm-up {warmup:.1f} s, load average {os.getloadavg()[0]:.2f}"
            )
    for (threads, batch), (wanted, why) in TARGETS.items():
        if (threads, batch) in rates:
            verdict = "PASS" if rates[threads, batch] >= wanted else "FAIL"
            print(f"target {threads} thread(s), batch {batch}: >= {wanted:.0f} updates/s ({why}): {verdict}")


if __name__ == "__main__":
    main()
