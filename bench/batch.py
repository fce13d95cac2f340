"""Which batch size learns fastest per wall-clock second: offline AWAC on one store, success vs time.

    .venv/bin/python bench/batch.py --store bench_runs/stores/door-expert-DIGEST/store.zarr
        [--task door] [--batches 256 1024] [--samples 6400000] [--points 8] [--eval-episodes 30]
        [--work bench_runs/batch] [--jobs 2]

Each batch size trains offline (`awac-robot train`, one thread, same seed) on the same number
of replay samples (updates = samples / batch), evaluating `--points` times along the way, so
the curves can be read both ways: success per sample seen and success per second of wall
time. With one update per env step online, the update's wall time also sets how fast an
online run moves, so the batch that reaches a given success first here is the one to use.
Run it with `--jobs` equal to the free cores (the runs take one each); a busy machine slows
every run alike, which keeps the comparison fair but not the absolute times.

Measured 2026-11-25 on the bench/learning.py door store (39% success), both runs at once, 6.4 M samples:
  batch  256: 84 updates/s, 21.5 k samples/s; success 97 100 100 97 93 93 90 80% at 38 76 ... 298 s
  batch 1024: 24 updates/s, 24.8 k samples/s; success 70 93 100 100 100 100 100 100% at 32 64 ... 258 s
Per second, 1024 reaches 100% about as soon (96 s vs 76 s) and holds it, while 256 declines after
~3 M samples (its weights' effective sample size falls from ~240 to ~34 of 256 as the critic sharpens).
Online, where every env step waits for one update, 1024 moves 3.5x fewer env steps per second.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from awac_robot.train.runlog import RunLog

ROOT = Path(__file__).resolve().parents[1]


def train(args: argparse.Namespace, batch: int) -> list[dict[str, Any]]:
    """One offline run; returns its evaluations, each with seconds since the run's first metric line."""
    folder = args.work / f"batch{batch}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    updates = args.samples // batch
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "batch_size": batch,
                "threads": 1,
                "eval_episodes": args.eval_episodes,
                "offline_eval_interval": max(updates // args.points, 1),
                "log_interval": max(updates // (4 * args.points), 1),
            }
        )
    )
    command = [
        sys.executable, "-m", "awac_robot", "train", "--task", args.task, "--store", str(args.store),
        "--config", str(config), "--offline-steps", str(updates), "--out", str(folder / "run"), "--no-progress",
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = RunLog(folder / "run").rows()
    start = rows[0]["time"] - rows[0]["updates"] / rows[0]["updates_per_s"]  # back to the first update
    return [{**r, "seconds": r["time"] - start} for r in rows if "eval_success" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--task", default="door")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--samples", type=int, default=6_400_000, help="replay samples per run (256 x 25k updates)")
    parser.add_argument("--points", type=int, default=8, help="evaluations per run")
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs" / "batch")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the training subprocesses
        curves = dict(zip(args.batches, pool.map(lambda b: train(args, b), args.batches), strict=True))
    print(f"offline AWAC on {args.store.name}, {args.samples:,} samples per run, {args.eval_episodes} eval episodes")
    for batch, points in curves.items():
        print(f"batch {batch}:")
        for p in points:
            print(
                f"  {p['updates']:>6} updates  {p['updates'] * batch / 1e6:5.2f} M samples  "
                f"{p['seconds']:6.0f} s  success {p['eval_success']:.0%}"
            )
    for batch, points in curves.items():
        first = next((p for p in points if p["eval_success"] >= 0.8), None)
        when = f"{first['seconds']:.0f} s ({first['updates']} updates)" if first else "never"
        print(f"batch {batch}: first eval >= 80% at {when}")


if __name__ == "__main__":
    main()
