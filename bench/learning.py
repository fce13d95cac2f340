"""Learning benchmark: offline pretraining + online finetuning on a mixed-quality store, several seeds.

    .venv/bin/python bench/learning.py --task door [--algo awac|bc] [--seeds 3] [--online-steps 100000]
        [--offline-steps 25000] [--eval-every 10000] [--eval-episodes 10] [--config FILE] [--work bench_runs]

Builds the store once (`WORK/TASK-base.zarr`): scripted-demonstrator episodes of which a
share has bursts of random actions (`collect --perturb 0.6` gave 45% success on door in 20
episodes; Gaussian noise alone is all-or-nothing for the door script), plus the
25 human DAPG demos when ../shared/data is there. Every run finetunes its own copy of that
store (finetuning appends to it), through the real `awac-robot finetune` command in a
subprocess, and the figures are read back from the run's metrics.jsonl: eval success after
offline pretraining and every `--eval-every` online env steps, with wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from awac_robot.store import DemoStore

ROOT = Path(__file__).resolve().parents[1]
HUMAN_DEMOS = {"door": ROOT.parent / "shared" / "data" / "adroit" / "door-v0_demos.pickle"}


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "awac_robot", *args], check=True)


def build_store(task: str, path: Path, episodes: int, noise: float, perturb: float) -> None:
    if path.exists():
        return
    staging = path.with_name(path.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    cli(
        "collect", "--task", task, "--episodes", str(episodes), "--store", str(staging),
        "--noise", str(noise), "--perturb", str(perturb), "--no-progress",
    )  # fmt: skip
    human = HUMAN_DEMOS.get(task)
    if human is not None and human.exists():
        cli("demos", "import", "dapg", str(human), "--task", task, "--store", str(staging))
    else:
        print(f"(no human demos for {task} at {human}: scripted data only)")
    staging.rename(path)


def describe_store(path: Path) -> float:
    with DemoStore.open(path) as store:
        meta = store.episode_meta()
        steps = store.num_steps
    print(f"store {path}: {len(meta['source'])} episodes, {steps} steps")
    for source in sorted(set(meta["source"].tolist())):
        mine = meta["source"] == source
        print(f"  {source:<12} {mine.sum():>4} episodes, success {meta['success'][mine].mean():.0%}")
    rate = float(meta["success"].mean())
    print(f"  data success rate {rate:.0%}")
    return rate


def run_seed(args: argparse.Namespace, base: Path, config: Path, seed: int) -> list[dict]:
    folder = args.work / f"{args.task}-{args.algo}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = folder / f"{args.task}.zarr"
    shutil.copytree(base, store)
    started = time.time()
    cli(
        "finetune", "--task", args.task, "--store", str(store), "--config", str(config), "--out", str(folder / "run"),
        "--seed", str(seed), "--algo", args.algo, "--offline-steps", str(args.offline_steps),
        "--online-steps", str(args.online_steps), "--no-progress",
    )  # fmt: skip
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_success" in r]
    offline_end = [r for r in evals if r["phase"] == "offline" and r["updates"] == args.offline_steps]
    points = offline_end[-1:] + [r for r in evals if r["phase"] == "online"]
    for r in points:
        label = "offline end" if r["phase"] == "offline" else f"online {r['env_steps']:>7}"
        print(f"  seed {seed} {label}: success {r['eval_success']:.0%}  wall {r['time'] - started:7.0f} s", flush=True)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="door")
    parser.add_argument("--algo", choices=("awac", "bc"), default="awac")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--online-steps", type=int, default=100_000)
    parser.add_argument("--offline-steps", type=int, default=25_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=50, help="scripted episodes in the store")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise of the scripted episodes")
    parser.add_argument("--perturb", type=float, default=0.6, help="share of scripted episodes with random bursts")
    parser.add_argument("--config", type=Path, help="training config YAML (eval settings are set by this script)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    base = args.work / f"{args.task}-base.zarr"
    build_store(args.task, base, args.episodes, args.noise, args.perturb)
    data_rate = describe_store(base)
    settings = yaml.safe_load(args.config.read_text()) if args.config else {}
    settings.update(
        eval_interval=args.eval_every,
        eval_episodes=args.eval_episodes,
        offline_eval_interval=max(args.offline_steps, 1),
    )
    config = args.work / f"{args.task}-{args.algo}-config.yaml"
    config.write_text(yaml.safe_dump(settings))
    print(
        f"algo {args.algo}, {args.seeds} seeds, {args.offline_steps} offline updates, {args.online_steps} online steps"
    )
    print(f"config overrides: {settings}")
    curves = [run_seed(args, base, config, seed) for seed in range(args.seeds)]

    print(f"\nmean over {args.seeds} seeds ({args.algo}); data success {data_rate:.0%}")
    for column in zip(*curves, strict=False):
        label = "offline end" if column[0]["phase"] == "offline" else f"online {column[0]['env_steps']:>7}"
        rates = [r["eval_success"] for r in column]
        print(f"  {label}: success {np.mean(rates):.0%} (per seed {', '.join(f'{x:.0%}' for x in rates)})")


if __name__ == "__main__":
    main()
