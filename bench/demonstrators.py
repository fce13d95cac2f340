"""Demonstrators: how often each succeeds, and whether a policy that sees only the observation learns from it.

    .venv/bin/python bench/demonstrators.py [--tasks door push] [--out bench_runs/demonstrators]
        [--noise 0 0.05 0.1 0.3 0.5] [--success-only] [--demonstrator scripted|policy:PATH.onnx]
        [--episodes 50] [--first-seed 0] [--bc-episodes 50 200] [--updates 10000] [--eval-episodes 100]

First, per task and noise level, the demonstrator's success over seeded episodes, on the
episode's last step ("final") and on any step ("any", the store's `success`), and its speed
(wall time per episode, steps per second, times faster than the task's control rate), run
through `collect.run_episode`, the loop `collect` records with. `--demonstrator
policy:policies/pen-dapg.onnx --tasks pen` measures an imported expert the same way;
`--success-only` stops there.

Then, per task, whether the default demonstrator teaches (docs/demonstrators.md): the
commands `awac-robot tasks` gives for the task collect 50 clean episodes (seeds 0-49; pen's
DAPG expert is imported from the reference data first), `awac-robot train --algo bc
--offline-steps 10000` (default config otherwise) learns from them and `awac-robot evaluate`
scores its final weights on 100 evaluation episodes (their own seeds) with a 95% Wilson
interval; the ratio is BC's success over the demonstrator's. Where that ratio is below 0.8 the
store is grown to 200 episodes (seeds 50-199) and BC trained and scored again. Each task's row
is written to `awac_robot/demonstrators/teaching.json` (other tasks' rows are kept), which
`awac-robot tasks` shows beside each demonstrator.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from runner import AWAC_ROBOT, ROOT, awac_robot
from stores import REFERENCE

from awac_robot.collect import resolve_demonstrator, run_episode
from awac_robot.demonstrators.catalog import TEACHING, task_demonstrators
from awac_robot.demonstrators.scripted import scripted_tasks
from awac_robot.envs import builtin_task_files, make_env
from awac_robot.store import DemoStore

#: below this share of the demonstrator's success, BC is also trained on the larger store
TEACHES = 0.8


def success_table(tasks: list[str], demonstrator: str, seeds: range, noises: list[float]) -> None:
    print(f"{demonstrator} demonstrator, seeds {seeds.start}-{seeds.stop - 1}")
    print(f"{'task':<12} {'noise':>5} {'final':>7} {'any':>7} {'ms/ep':>7} {'steps/s':>8} {'x real-time':>11}")
    for task in tasks:
        env = make_env(task)
        demo = resolve_demonstrator(demonstrator, env)
        for noise in noises:
            start = time.perf_counter()
            results = [run_episode(env, demo, seed, noise) for seed in seeds]
            elapsed = time.perf_counter() - start
            final = np.mean([r.success[-1] for r in results])
            any_ = np.mean([r.solved for r in results])
            rate = sum(r.length for r in results) / elapsed
            print(
                f"{task:<12} {noise:>5.2f} {final:>7.0%} {any_:>7.0%} {1000 * elapsed / len(results):>7.1f} "
                f"{rate:>8.0f} {rate * env.config.control_period:>11.1f}",
                flush=True,
            )
        env.close()


def collect_default(task: str, store: Path, episodes: int, first_seed: int, folder: Path) -> str:
    """Run the commands `awac-robot tasks` gives for `task`, for `episodes` episodes from `first_seed`; their name."""
    demos = task_demonstrators(task)
    for command in demos.commands(store):
        argv = shlex.split(command)[1:]
        if argv[0] == "collect":
            argv[argv.index("--episodes") + 1] = str(episodes)
            argv += ["--seed", str(first_seed), "--no-progress"]
            if "--demonstrator" in argv and argv[argv.index("--demonstrator") + 1].startswith("policy:policies/"):
                at = argv.index("--demonstrator") + 1
                argv[at] = f"policy:{folder / argv[at].removeprefix('policy:')}"
        elif argv[0] == "import-policy":
            if (folder / argv[argv.index("--out") + 1]).exists():
                continue  # imported for the first episodes already
            argv[2] = str(REFERENCE / argv[2])
            argv[argv.index("--out") + 1] = str(folder / argv[argv.index("--out") + 1])
            argv += ["--verify", "1000", "--eval-episodes", "0"]
        awac_robot(*argv)
    return demos.names()[0] if demos.scripted or demos.published is None else f"{demos.published.format} expert"


def bc_success(task: str, store: Path, run: Path, updates: int, eval_episodes: int) -> dict[str, Any]:
    """Train BC on `store` with the product's command and score its final weights; the evaluation's JSON."""
    started = time.perf_counter()
    awac_robot(
        "train", "--task", task, "--store", str(store), "--algo", "bc", "--offline-steps", str(updates),
        "--out", str(run), "--no-progress",
    )  # fmt: skip
    trained = time.perf_counter() - started
    out = subprocess.run(
        [*AWAC_ROBOT, "evaluate", "--checkpoint", str(run), "--episodes", str(eval_episodes), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["train_seconds"] = trained
    result["eval_seconds"] = time.perf_counter() - started - trained
    return result


def teach(task: str, folder: Path, sizes: list[int], updates: int, eval_episodes: int) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = folder / f"{task}.zarr"
    row: dict[str, Any] = {"updates": updates, "eval_episodes": eval_episodes, "stores": []}
    collected = 0
    for size in sorted(sizes):
        if row["stores"] and row["stores"][-1]["ratio"] >= TEACHES:
            break
        started = time.perf_counter()
        row["demonstrator"] = collect_default(task, store, size - collected, collected, folder)
        collected = size
        demo = float(np.mean(DemoStore.open(store).episode_meta()["success"]))
        collect_seconds = time.perf_counter() - started
        result = bc_success(task, store, folder / f"bc-{size}", updates, eval_episodes)
        bc = float(result["success_rate"])
        entry = {
            "episodes": size,
            "demonstrator_success": demo,
            "bc_success": bc,
            "bc_ci95": [float(x) for x in result["ci95"]],
            "ratio": bc / demo if demo > 0 else 0.0,
            "collect_seconds": round(collect_seconds, 1),
            "train_seconds": round(result["train_seconds"], 1),
            "eval_seconds": round(result["eval_seconds"], 1),
        }
        row["stores"].append(entry)
        low, high = entry["bc_ci95"]
        print(
            f"{task:<12} {row['demonstrator']:<14} {size:>4} {demo:>6.0%} {bc:>6.0%} [{low:.2f}, {high:.2f}] "
            f"{entry['ratio']:>6.2f}   collect {collect_seconds:.0f} s, train {result['train_seconds']:.0f} s, "
            f"evaluate {result['eval_seconds']:.0f} s",
            flush=True,
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task with a default demonstrator")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per row of the success table")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.3, 0.5])
    parser.add_argument("--demonstrator", default="scripted", help="success table: scripted or policy:PATH.onnx")
    parser.add_argument("--first-seed", type=int, default=0, help="success table seeds FIRST .. FIRST+EPISODES-1")
    parser.add_argument("--success-only", action="store_true", help="the success table alone, no BC")
    parser.add_argument("--bc-episodes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--updates", type=int, default=10_000, help="BC updates (train --offline-steps)")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "demonstrators")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    defaults = [t for t in builtin_task_files() if task_demonstrators(t).scripted or task_demonstrators(t).published]
    if args.noise:
        shown = [t for t in args.tasks or scripted_tasks() if args.demonstrator != "scripted" or t in scripted_tasks()]
        success_table(shown, args.demonstrator, seeds, args.noise)
    if args.success_only:
        return
    print(f"\nBC, {args.updates} updates on the default demonstrator's clean episodes, {args.eval_episodes} evals")
    print(f"{'task':<12} {'demonstrator':<14} {'eps':>4} {'demo':>6} {'BC':>6} {'95% interval':<12} {'ratio':>6}")
    for task in args.tasks or sorted(defaults):
        row = teach(task, args.out / task, args.bc_episodes, args.updates, args.eval_episodes)
        record = json.loads(TEACHING.read_text()) if TEACHING.exists() else {}
        record[task] = {**row, "commit": commit(), "command": f"bench/demonstrators.py --tasks {task}"}
        TEACHING.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
    print("\nevery task measured so far (docs/demonstrators.md):\n")
    print(markdown_table(json.loads(TEACHING.read_text())))


def markdown_table(record: dict[str, Any]) -> str:
    """The docs' table of every measured task: demonstrator success, BC's at 50 (and 200) episodes, the ratios."""
    lines = [
        "| task | demonstrator | demo success (50) | BC, 50 episodes [95%] | ratio | BC, 200 episodes [95%] | ratio "
        "| commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, row in record.items():
        cells = [task, row["demonstrator"], f"{row['stores'][0]['demonstrator_success']:.0%}"]
        for store in row["stores"]:
            low, high = store["bc_ci95"]
            cells += [f"{store['bc_success']:.0%} [{low:.0%}, {high:.0%}]", f"{store['ratio']:.2f}"]
        cells += [""] * (7 - len(cells)) + [row["commit"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "awac_robot"], cwd=ROOT, capture_output=True, text=True)
    return head.strip() + ("+changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
