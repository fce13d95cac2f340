"""Where the time of one AWAC update goes: matmuls, elementwise work, the optimizer, per-op overhead.

Usage: .venv/bin/python bench/profile_update.py [--threads 1] [--batches 256 1024] [--updates 100] [--compile]
    [--table]

Every aten kernel the update runs (below autograd, so the backward's kernels too) is timed
and put in one of a few groups; what is left of the update's total is time spent outside any
kernel (Python, the autograd engine, the dispatcher, the optimizer's Python loop). With one
thread the clock is the thread's CPU time, which a busy machine barely distorts; with more
threads it has to be wall time (the work runs on OpenMP workers), so read those figures
beside the load average. The update runs on bench/updates.py's synthetic batch. `--table`
also prints torch.profiler's own table (wall time) for the same updates. With `--compile`
the fused kernels torch.compile writes are no aten kernels: their time shows as "outside
kernels", beside the matmuls, which it leaves to aten.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from updates import matmul_peak, synthetic_setup

from awac_robot.train.config import TrainConfig, setup_torch

MATMUL = {"mm", "addmm", "bmm", "baddbmm"}
OPTIMIZER = {"_fused_adam_", "_foreach_lerp_", "_foreach_add_"}
NORM = {"native_layer_norm", "native_layer_norm_backward"}
VIEWS = {"detach", "expand", "t", "transpose", "view", "slice", "select", "squeeze", "unsqueeze", "alias", "as_strided"}


def group(name: str, args: tuple[Any, ...]) -> str:
    if name in MATMUL:
        return "matmul"
    if name in OPTIMIZER:
        return "optimizer + Polyak"
    if name in NORM:
        return "layer norm"
    if name in VIEWS:
        return "views"
    large = any(isinstance(a, torch.Tensor) and a.numel() >= 4096 for a in args)
    return "elementwise (>= 4096 elements)" if large else "small ops (< 4096 elements)"


def matmul_flops(name: str, args: tuple[Any, ...]) -> int:
    """2 * m * k * n (times the batch) of mm / addmm / bmm / baddbmm from their operands' shapes."""
    a, b = args[-2:] if name in ("addmm", "baddbmm") else args[:2]
    return int(2 * a.numel() * b.shape[-1])


class KernelClock(TorchDispatchMode):
    """Sums the time and count of every aten kernel per group, and the matmuls' FLOPs."""

    def __init__(self, clock: Callable[[], int]) -> None:
        # unannotated in torch; mypy does not apply untyped_calls_exclude (pyproject.toml) to a super() call
        super().__init__()  # type: ignore[no-untyped-call]
        self.clock = clock
        self.time: dict[str, int] = defaultdict(int)
        self.count: dict[str, int] = defaultdict(int)
        self.flops = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        start = self.clock()
        out = func(*args, **(kwargs or {}))
        name = func._overloadpacket.__name__
        key = group(name, args)
        self.time[key] += self.clock() - start
        self.count[key] += 1
        if key == "matmul":
            self.flops += matmul_flops(name, args)
        return out


CLOCK_NAME = {time.thread_time_ns: "CPU", time.perf_counter_ns: "wall"}


def clock_of(config: TrainConfig) -> Callable[[], int]:
    """The thread's CPU time when one thread does all the work, else wall time."""
    return time.thread_time_ns if config.threads == 1 else time.perf_counter_ns


def run(step: Callable[[], object], updates: int, clock: Callable[[], int]) -> float:
    start = clock()
    for _ in range(updates):
        step()
    return (clock() - start) / updates


def kernel_split(step: Callable[[], object], updates: int, clock: Callable[[], int], total: float, peak: float) -> None:
    kernels = KernelClock(clock)
    with kernels:
        run(step, updates, clock)
    inside = sum(kernels.time.values()) / updates
    for key in sorted(kernels.time, key=lambda k: -kernels.time[k]):
        t = kernels.time[key] / updates
        print(f"  {key:31s} {t / 1e6:6.2f} ms {t / total:6.1%}  {kernels.count[key] / updates:4.0f} kernels")
    outside = total - inside
    print(f"  {'outside kernels':31s} {outside / 1e6:6.2f} ms {outside / total:6.1%}  (Python, autograd, dispatch)")
    print(f"  {sum(kernels.count.values()) / updates:.0f} aten kernels per update")
    flops = kernels.flops / updates
    rate = flops / (kernels.time["matmul"] / updates)
    print(f"  matmuls: {flops / 1e6:.0f} MFLOP per update at {rate:.1f} GFLOP/s ({rate / peak:.2f} of the peak)")


def profiled_split(step: Callable[[], object], updates: int) -> None:
    """The compiled update's matmuls against the rest, from torch.profiler (wall time: a dispatch mode cannot
    watch compiled code)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(step, updates, time.perf_counter_ns)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key.removeprefix("aten::") in MATMUL)
    print(f"  matmul {matmul / updates / 1e3:.2f} ms, everything else {(total - matmul) / updates / 1e3:.2f} ms (wall)")


def profile_batch(config: TrainConfig, batch: int, updates: int, peak: float, table: bool) -> None:
    learner, replay = synthetic_setup(config)

    def step() -> object:
        return learner.update(replay.sample(batch))

    clock = clock_of(config)
    for _ in range(20):
        step()
    total = run(step, updates, clock)
    label = CLOCK_NAME[clock]
    print(f"batch {batch}: {total / 1e6:.2f} ms {label} per update = {1e9 / total:.1f} updates/s ({label} clock)")
    if config.compile:
        profiled_split(step, updates)
    else:
        kernel_split(step, updates, clock, total, peak)
    if table:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(step, updates, clock)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="the compiled update (TrainConfig.compile)")
    parser.add_argument("--table", action="store_true", help="also print torch.profiler's table")
    args = parser.parse_args()
    config = TrainConfig(threads=args.threads, compile=args.compile)
    threads = setup_torch(config)
    print(f"torch {torch.__version__}, {threads} threads, load average {os.getloadavg()[0]:.2f}")
    peak = matmul_peak(2.0, clock_of(config))
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s ({CLOCK_NAME[clock_of(config)]} clock)")
    for batch in args.batches:
        profile_batch(config, batch, args.updates, peak, args.table)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
