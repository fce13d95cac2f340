"""Gradient updates per second of the AWAC update, beside this machine's float32 matmul peak.

Usage: .venv/bin/python bench/updates.py [--threads N] [--seconds S] [--batches 256 1024] [--task door]

The update runs on a synthetic batch of the task's sizes (the arithmetic does not depend on
the values). The peak is the best of a few large square matmuls with the same thread
count, so `fraction` reads as "share of what this CPU can do in float32 matmul right now";
it also reports the load average, because the machine may be shared.
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
    """Matmul FLOPs of one update (forward 2, backward 4 per multiply-add) -- to express speed in GFLOP/s."""

    def mlp_macs(sizes: tuple[int, ...]) -> int:
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    actor = mlp_macs((obs_dim, *config.actor_hidden, act_dim))
    critic = config.critic_members * mlp_macs((obs_dim + act_dim, *config.critic_hidden, 1))
    # actor: grad pass on s, no-grad pass on s'; critics: grad pass on (s, a), no-grad passes for target and V.
    macs = 3 * actor + actor + 3 * critic + 2 * critic
    return 2.0 * macs * batch


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


def measure(config: TrainConfig, batch: int, seconds: float) -> float:
    learner, replay = synthetic_setup(config)
    for _ in range(20):
        learner.update(replay.sample(batch))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            learner.update(replay.sample(batch))
        done += 10
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--task", default="door")
    parser.add_argument("--plain-critics", action="store_true", help="critics without LayerNorm (the paper's)")
    args = parser.parse_args()

    config = TrainConfig(task=args.task, threads=args.threads, critic_layer_norm=not args.plain_critics)
    threads = setup_torch(config)
    spec = get_spec(config.task)
    print(f"torch {torch.__version__}, {threads} threads, load average before: {os.getloadavg()[0]:.2f}")
    peak = matmul_peak(2.0)
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    for batch in args.batches:
        rate = measure(config, batch, args.seconds)
        gflops = rate * update_flops(config, spec.obs_dim, spec.act_dim, batch) / 1e9
        print(f"batch {batch}: {rate:.1f} updates/s")
        print(f"  = {gflops:.1f} GFLOP/s in matmuls, fraction of peak {gflops / peak:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
