"""`awac-robot collect`: fill a demo store from a demonstrator (scripted expert, ONNX policy or keyboard)."""

from __future__ import annotations

import argparse
from pathlib import Path

from awac_robot.cli.errors import UserError
from awac_robot.collect import CollectConfig, CollectError, CollectSummary, collect
from awac_robot.envs import get_task
from awac_robot.store import StoreError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record demonstration episodes into a Zarr demo store",
        description=(
            "Run a demonstrator in a task env and append every kept episode to a demo store "
            "(created if missing; an existing store must be for the same task and reward mode). "
            "Episode i uses seed SEED+i, so a run is reproducible. Without --seed, a store that already "
            "holds episodes of the demonstrator is continued after its highest seed."
        ),
    )
    parser.add_argument("--task", required=True, help="task name (see 'awac-robot tasks') or a task YAML")
    parser.add_argument("--episodes", type=int, default=50, help="episodes to run (default 50)")
    parser.add_argument("--store", type=Path, help="demo store directory (default demos/TASK.zarr)")
    parser.add_argument(
        "--demonstrator",
        default="scripted",
        metavar="scripted|keyboard|policy:PATH.onnx",
        help="who picks the actions (default scripted)",
    )
    parser.add_argument(
        "--noise", type=float, default=0.0, metavar="SIGMA", help="Gaussian action noise std, then clip to [-1, 1]"
    )
    parser.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of episodes with bursts of random actions (mixed-quality data; default 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the first episode (default: 0, or one past the highest seed the demonstrator has in the store; "
        "seeds the store already holds for it are refused)",
    )
    parser.add_argument("--reward", choices=("sparse", "dense"), default="sparse", help="reward the store records")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:

    try:
        config = CollectConfig(
            task=args.task,
            episodes=args.episodes,
            store=args.store or default_store(args.task),
            demonstrator=args.demonstrator,
            noise=args.noise,
            perturb=args.perturb,
            seed=args.seed,
            reward=args.reward,
            progress=not args.no_progress,
        )
        summary = collect(config, announce=print)
    except (StoreError, CollectError) as exc:
        raise UserError(str(exc)) from None
    print(format_summary(config, summary))
    return 0


def default_store(task: str) -> Path:
    """Where the trainer looks by default too (`awac-robot train --store`)."""
    return Path("demos") / f"{get_task(task).name}.zarr"


def format_summary(config: CollectConfig, summary: CollectSummary) -> str:
    dropped = summary.episodes_run - summary.episodes_kept
    speed = summary.steps_kept / summary.seconds if summary.seconds else 0.0
    perturbation = [f"noise {config.noise}"] if config.noise else []
    perturbation += [f"{config.perturb:.0%} perturbed episodes"] if config.perturb else []
    how = f" with {' and '.join(perturbation)}" if perturbation else ""
    return "\n".join(
        [
            f"collected {summary.episodes_kept} episodes ({dropped} dropped), {summary.steps_kept} steps "
            f"in {summary.seconds:.1f} s ({speed:.0f} steps/s)",
            f"success rate {summary.success_rate:.1%} ({summary.successes}/{summary.episodes_kept}){how}",
            f"store {config.store}: {summary.store_episodes} episodes, {summary.store_bytes / 1e6:.2f} MB on disk",
        ]
    )
