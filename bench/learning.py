"""Learning benchmark: offline pretraining + online finetuning on a mixed-quality store, several seeds.

    .venv/bin/python bench/learning.py --task door [--algo awac [bc]] [--seeds 3] [--jobs 2]
        [--online-steps 100000] [--offline-steps 25000] [--eval-every 10000] [--eval-episodes 30]
        [--config FILE] [--work bench_runs] [--data expert|scripted] [--episodes 50] [--noise SIGMA]
        [--perturb FRACTION]

Builds the store once per data setting (`WORK/TASK-DATA-...-base.zarr`), plus the 25 human DAPG
demos when ../shared/data is there. Its episodes come from one of two demonstrators:
- `expert` (the default when the reference data is there): the DAPG door expert exported to
  ONNX and run by `collect --demonstrator policy:...` with Gaussian action noise (default 0.2:
  45% success in 20 episodes; 0.0 gave 100%, 0.4 gave 0%). It sees only the observation, so
  its actions are a function the actor can imitate.
- `scripted`: the scripted door demonstrator with a share of episodes hit by bursts of random
  actions (`--perturb 0.6` gave 45% success in 20 episodes; Gaussian noise alone is all-or-nothing
  for the script). The script acts on hidden state (hinge velocity, an internal release phase),
  and AWAC, even BC, learned nothing from it (0% eval success), hence the expert data.
Every run finetunes its own copy of that store (finetuning appends to it), through the real
`awac-robot finetune` command in a subprocess, and the figures are read from the run's
metrics.jsonl as it is written: eval success after offline pretraining and every `--eval-every`
online env steps, with wall time and updates/s.

Measured 2026-11-25 (`--algo awac bc --seeds 3 --jobs 2 --eval-every 5000 --eval-episodes 30`, default
config: lambda 1.0, batch 256, averaged policy 0.005, uniform replay, threads 1; expert data: 50 episodes
at noise 0.2 (44%) + 25 human (28%), store success 39%), mean of 3 seeds:
  AWAC: offline 88% (80, 87, 97); online 5k 92, 10k 94, 20k 97, 30k 88, 40k 91, 50k 86, 55k 78 (lowest),
        60k 86, 70k 90, 80k 93, 90k 91, 100k 97% (97, 97, 97); ~1700 s per run at 75-90 updates/s.
  BC:   offline 98% (100, 100, 93); online 5k 96, 10k 82, 20k 66, 50k 59, 100k 56% (0, 83, 83); ~520 s.
The exploring (sampling) actor's own online episodes succeed far less than the evaluated policy:
AWAC 33 / 62 / 57% of 500 per seed (rising from 19-39% in the first 100 to 33-73% in the last), BC
4 / 45 / 42% (falling): most online data are failures, which BC copies and AWAC weighs down.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from awac_robot.dapg_policy import import_dapg_policy
from awac_robot.store import DemoStore
from awac_robot.train.runlog import RunLog

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "adroit"
HUMAN_DEMOS = {"door": REFERENCE / "door-v0_demos.pickle"}
EXPERTS = {"door": REFERENCE / "door_expert.npz"}
DEFAULT_NOISE = {"expert": 0.2, "scripted": 0.0}
DEFAULT_PERTURB = {"expert": 0.0, "scripted": 0.6}


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "awac_robot", *args], check=True)


def export_expert(task: str, weights: Path, out: Path) -> Path:
    """The DAPG expert as an awac-robot ONNX policy (`awac-robot import-policy dapg`)."""
    if out.exists():
        return out
    report = import_dapg_policy(weights, task, out, verify=1000, eval_episodes=0)
    print(f"imported {weights.name} to {out} (max |onnx - numpy| {report.export.max_abs_diff:.1e})")
    return out


def choose_data(args: argparse.Namespace) -> str:
    """The demonstrator for the store: the requested one, or the scripted one when the expert is missing."""
    expert = EXPERTS.get(args.task)
    if args.data == "expert" and (expert is None or not expert.exists()):
        where = f"at {expert}" if expert else f"for {args.task} (only {', '.join(EXPERTS)} has one)"
        print(f"(no DAPG expert {where}: falling back to the scripted demonstrator)")
        return "scripted"
    return args.data


def build_store(args: argparse.Namespace, data: str, noise: float, perturb: float, path: Path) -> None:
    if path.exists():
        return
    staging = path.with_name(path.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    demonstrator = "scripted"
    if data == "expert":
        policy = export_expert(args.task, EXPERTS[args.task], args.work / f"{args.task}_expert.onnx")
        demonstrator = f"policy:{policy}"
    cli(
        "collect", "--task", args.task, "--episodes", str(args.episodes), "--store", str(staging),
        "--demonstrator", demonstrator, "--noise", str(noise), "--perturb", str(perturb), "--no-progress",
    )  # fmt: skip
    human = HUMAN_DEMOS.get(args.task)
    if human is not None and human.exists():
        cli("demos", "import", "dapg", str(human), "--task", args.task, "--store", str(staging))
    else:
        print(f"(no human demos for {args.task} at {human}: demonstrator data only)")
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


def curve_points(run_dir: Path, offline_steps: int) -> list[dict]:
    """The eval at the end of offline pretraining, then every online eval, each with the last updates/s logged."""
    points, speed = [], float("nan")
    for row in RunLog(run_dir).rows():  # complete lines only: the run is still writing
        speed = row.get("updates_per_s", speed)
        if "eval_success" not in row:  # metric lines and events (start, resume, redo)
            continue
        if row["phase"] == "online" or row["updates"] == offline_steps:
            points.append({**row, "updates_per_s": speed})
    return points


def run_seed(args: argparse.Namespace, base: Path, algo: str, seed: int) -> list[dict]:
    """One finetune run; its points are printed as they are logged, so a run cut short still reports."""
    config = write_config(args, base, algo)
    folder = args.work / f"{base.name.removesuffix('-base.zarr')}-{algo}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = folder / f"{args.task}.zarr"
    shutil.copytree(base, store)
    started = time.time()
    command = [
        sys.executable, "-m", "awac_robot",
        "finetune", "--task", args.task, "--store", str(store), "--config", str(config), "--out", str(folder / "run"),
        "--seed", str(seed), "--algo", algo, "--offline-steps", str(args.offline_steps),
        "--online-steps", str(args.online_steps), "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command)
    shown: list[dict] = []
    while True:
        finished = process.poll() is not None  # checked before reading, so the last lines are never missed
        shown_before = len(shown)
        shown = curve_points(folder / "run", args.offline_steps)
        for r in shown[shown_before:]:
            label = "offline end" if r["phase"] == "offline" else f"online {r['env_steps']:>7}"
            print(
                f"  {algo} seed {seed} {label}: success {r['eval_success']:.0%}  wall {r['time'] - started:7.0f} s"
                f"  ({r['updates_per_s']:.0f} updates/s)",
                flush=True,
            )
        if finished:
            break
        time.sleep(5)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return [{**r, "started": started} for r in shown]


def write_config(args: argparse.Namespace, base: Path, algo: str) -> Path:
    """The run config: the --config file's settings with this script's evaluation schedule."""
    settings = yaml.safe_load(args.config.read_text()) if args.config else {}
    settings.update(
        eval_interval=args.eval_every,
        eval_episodes=args.eval_episodes,
        offline_eval_interval=max(args.offline_steps, 1),
    )
    config = args.work / f"{base.name.removesuffix('-base.zarr')}-{algo}-config.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def summarise(algo: str, curves: list[list[dict]], data_rate: float) -> None:
    print(f"\nmean over {len(curves)} seeds ({algo}); data success {data_rate:.0%}")
    for column in zip(*curves, strict=False):
        label = "offline end" if column[0]["phase"] == "offline" else f"online {column[0]['env_steps']:>7}"
        rates = [r["eval_success"] for r in column]
        walls = [r["time"] - r["started"] for r in column]
        print(
            f"  {label}: success {np.mean(rates):.0%} (per seed {', '.join(f'{x:.0%}' for x in rates)})"
            f"  wall {np.mean(walls):.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="door")
    parser.add_argument("--algo", choices=("awac", "bc"), nargs="+", default=["awac"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each takes one core: threads 1)")
    parser.add_argument("--online-steps", type=int, default=100_000)
    parser.add_argument("--offline-steps", type=int, default=25_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument(
        "--data", choices=("expert", "scripted"), default="expert", help="demonstrator of the store's episodes"
    )
    parser.add_argument("--episodes", type=int, default=50, help="demonstrator episodes in the store")
    parser.add_argument("--noise", type=float, help="Gaussian action noise (default: expert 0.2, scripted 0.0)")
    parser.add_argument("--perturb", type=float, help="share of episodes with random bursts (expert 0, scripted 0.6)")
    parser.add_argument("--config", type=Path, help="training config YAML (eval settings are set by this script)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    data = choose_data(args)
    noise = DEFAULT_NOISE[data] if args.noise is None else args.noise
    perturb = DEFAULT_PERTURB[data] if args.perturb is None else args.perturb
    base = args.work / f"{args.task}-{data}-e{args.episodes}-n{noise:g}-p{perturb:g}-base.zarr"
    build_store(args, data, noise, perturb, base)
    data_rate = describe_store(base)
    print(
        f"{' and '.join(args.algo)}: {args.seeds} seeds, {args.offline_steps} offline updates, "
        f"{args.online_steps} online steps, {args.jobs} at a time; config {args.config or 'defaults'}"
    )
    runs = [(algo, seed) for algo in args.algo for seed in range(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the finetune subprocesses
        curves = list(pool.map(lambda run: run_seed(args, base, *run), runs))
    for algo in args.algo:
        summarise(algo, [curve for (a, _), curve in zip(runs, curves, strict=True) if a == algo], data_rate)


if __name__ == "__main__":
    main()
