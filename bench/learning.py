"""Learning benchmark: offline pretraining + online finetuning on a mixed-quality store, several seeds.

    .venv/bin/python bench/learning.py --task door [--algo awac [bc]] [--seeds 3] [--jobs 2]
        [--online-steps 100000] [--offline-steps 25000] [--eval-every 10000] [--eval-episodes 30]
        [--config FILE] [--work bench_runs] [--data expert|scripted] [--episodes 50] [--noise SIGMA]
        [--perturb FRACTION]

Builds the store once per data setting (`WORK/stores/TASK-DATA-DIGEST/`, bench/stores.py), plus
the 25 human DAPG demos when ../shared/data is there. Its episodes come from one of two demonstrators:
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
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from runner import ROOT, FinetuneJob, FinetuneResult, describe_eval, run_finetune, success
from stores import DAPG_EXPERTS, HUMAN_DEMOS, BuiltStore, StoreRecipe, cached_store

DEFAULT_NOISE = {"expert": 0.2, "scripted": 0.0}
DEFAULT_PERTURB = {"expert": 0.0, "scripted": 0.6}


def choose_data(args: argparse.Namespace) -> str:
    """The demonstrator for the store: the requested one, or the scripted one when the expert is missing."""
    expert = DAPG_EXPERTS.get(args.task)
    if args.data == "expert" and (expert is None or not expert.exists()):
        where = f"at {expert}" if expert else f"for {args.task} (only {', '.join(DAPG_EXPERTS)} has one)"
        print(f"(no DAPG expert {where}: falling back to the scripted demonstrator)")
        return "scripted"
    return str(args.data)


def build_store(args: argparse.Namespace, data: str) -> BuiltStore:
    human = HUMAN_DEMOS.get(args.task)
    with_human = human is not None and human.exists()
    if not with_human:
        print(f"(no human demos for {args.task} at {human}: demonstrator data only)")
    recipe = StoreRecipe(
        "dapg-expert" if data == "expert" else "scripted",
        episodes=args.episodes,
        noise=DEFAULT_NOISE[data] if args.noise is None else args.noise,
        perturb=DEFAULT_PERTURB[data] if args.perturb is None else args.perturb,
        human_demos=with_human,
    )
    store = cached_store(args.work / "stores", f"{args.task}-{data}", args.task, recipe)
    print(f"store {store.path} ({recipe.describe()}): {store.summary()}")
    return store


def run_seed(args: argparse.Namespace, store: BuiltStore, algo: str, seed: int) -> FinetuneResult:
    """One run, its offline phase then its online phase forked from it (bench/runner.py); points printed as logged."""
    label = store.path.parent.name
    offline = FinetuneJob(
        label=f"{algo} seed {seed} offline",
        task=args.task,
        store=store.path,
        folder=args.work / f"{label}-{algo}-s{seed}-offline",
        algo=algo,
        seed=seed,
        offline_steps=args.offline_steps,
        online_steps=0,
        config=write_config(args, label, algo),
    )
    start = offline.run_dir / "checkpoints" / f"ckpt_{args.offline_steps:09d}.pt"
    online = dataclasses.replace(
        offline, label=f"{algo} seed {seed}", folder=args.work / f"{label}-{algo}-s{seed}",
        online_steps=args.online_steps, start=start,
    )  # fmt: skip
    results = []
    for job in (offline, online):
        results.append(run_finetune(job))
        if results[-1].failed:
            failed = results[-1]
            raise RuntimeError(f"{job.label}: exited {failed.returncode}: {failed.last_output} (log {job.log})")
    # the online phase's evaluations include the offline ones it was forked with; its clock starts with them
    return dataclasses.replace(results[1], started=results[0].started)


def write_config(args: argparse.Namespace, label: str, algo: str) -> Path:
    """The run config: the --config file's settings with this script's evaluation schedule."""
    settings = yaml.safe_load(args.config.read_text()) if args.config else {}
    settings.update(
        eval_interval=args.eval_every,
        eval_episodes=args.eval_episodes,
        offline_eval_interval=max(args.offline_steps, 1),
    )
    config: Path = args.work / f"{label}-{algo}-config.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def summarise(algo: str, results: list[FinetuneResult], data_rate: float) -> None:
    print(f"\nmean over {len(results)} seeds ({algo}); data success {data_rate:.0%}")
    for column in zip(*(r.evals for r in results), strict=False):
        rates = [success(row) for row in column]
        walls = [row["time"] - r.started for row, r in zip(column, results, strict=True)]
        per_seed = ", ".join(f"{x:.0%}" for x in rates)
        print(
            f"  {describe_eval(column[0])}: success {np.mean(rates):.0%} (per seed {per_seed})"
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
    store = build_store(args, choose_data(args))
    print(
        f"{' and '.join(args.algo)}: {args.seeds} seeds, {args.offline_steps} offline updates, "
        f"{args.online_steps} online steps, {args.jobs} at a time; config {args.config or 'defaults'}"
    )
    runs = [(algo, seed) for algo in args.algo for seed in range(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the finetune subprocesses
        results = list(pool.map(lambda run: run_seed(args, store, *run), runs))
    for algo in args.algo:
        summarise(algo, [r for (a, _), r in zip(runs, results, strict=True) if a == algo], store.success)


if __name__ == "__main__":
    main()
