"""Wall time of one finetune, and the CPU time of the trainer process apart from its workers'.

Usage: .venv/bin/python bench/finetune_wall.py --store STORE.zarr [--task door] [--offline-steps 5000]
       [--online-steps 20000] [--config FILE] [--seed 0] [--work bench_runs/wall/NAME]

Runs the trainer in this process on a fresh copy of the store. On a shared machine the wall
time says as much about the other jobs as about the trainer, so it also prints this process's
own CPU seconds (the learner's core: everything the trainer still does itself) beside its
workers' (the other core), and the load average before and after. The script uses only the
Trainer's public entry point, so the same file times a checkout without the workers: run it
with that checkout's venv (`/path/to/other/.venv/bin/python bench/finetune_wall.py ...`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

from awac_robot.train.config import TrainConfig, load_config
from awac_robot.train.finetune import Trainer


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="demo store (copied, never written)")
    parser.add_argument("--task", default="door")
    parser.add_argument("--offline-steps", type=int, default=5000)
    parser.add_argument("--online-steps", type=int, default=20000)
    parser.add_argument("--config", type=Path, help="TrainConfig YAML (default: the defaults)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("bench_runs/wall/run"), help="replaced on every run")
    args = parser.parse_args()

    config = load_config(args.config) if args.config else TrainConfig()
    config = config.replace(
        task=args.task, seed=args.seed, offline_steps=args.offline_steps, online_steps=args.online_steps
    )
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    store = args.work / "store.zarr"
    shutil.copytree(args.store, store)
    load, start = os.getloadavg()[0], time.perf_counter()
    cpu = cpu_seconds(resource.RUSAGE_SELF)
    trainer = Trainer(args.work / "run", store, config, resume=False, online=True, progress=False)
    result = trainer.train()
    wall = time.perf_counter() - start
    own = cpu_seconds(resource.RUSAGE_SELF) - cpu
    workers = cpu_seconds(resource.RUSAGE_CHILDREN)
    steps = (args.offline_steps + args.online_steps) / 1000
    print(
        f"finetune {args.task}: {args.offline_steps} offline updates + {args.online_steps} online env steps, "
        f"{trainer.threads} learner thread(s); final eval success {result.get('success_rate', float('nan')):.2f}"
    )
    print(f"wall {wall:.0f} s ({wall / steps:.1f} s per 1k updates)")
    print(f"CPU: trainer process {own:.0f} s ({own / steps:.1f} s per 1k), its workers {workers:.0f} s")
    print(f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
