"""`awac-robot train | finetune | evaluate`: learn a policy from a store, improve it online, score it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from awac_robot.cli.errors import UserError
from awac_robot.envs import make_env
from awac_robot.store import StoreError
from awac_robot.train.checkpoint import load_actor
from awac_robot.train.config import ConfigError, TrainConfig, load_config
from awac_robot.train.evaluation import evaluate
from awac_robot.train.finetune import Trainer, TrainingError

# Flags that override the config file; None means "not given".
OVERRIDES = ("offline_steps", "online_steps", "seed", "algo", "sources")


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, online, text in (
        ("finetune", True, "pretrain offline on the store, then finetune online, adding every episode to the store"),
        ("train", False, "offline training only: learn from the store without touching the env"),
    ):
        parser = subparsers.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]} (AWAC).")
        parser.add_argument("--task", required=True, help="task name (see `awac-robot tasks`) or task YAML")
        parser.add_argument(
            "--store", type=Path, help="demo store (default demos/TASK.zarr; with --resume, the run's own store)"
        )
        parser.add_argument(
            "--sources",
            type=lambda text: text.split(","),
            metavar="SOURCE,...",
            help="store sources to pretrain on, e.g. human,scripted or online:RUN_ID (default: every "
            "demonstration source, no online episodes); a family (online, imported) selects all its members",
        )
        parser.add_argument(
            "--config", type=Path, help="YAML training config (keys of TrainConfig; unknown keys are errors)"
        )
        parser.add_argument("--offline-steps", type=int, help="gradient updates on the store before going online")
        if online:
            parser.add_argument("--online-steps", type=int, help="env steps of online finetuning")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--algo", choices=("awac", "bc"), help="bc = behaviour cloning baseline, same networks")
        parser.add_argument("--out", type=Path, help="run folder (default runs/TASK-ALGO-sSEED)")
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.set_defaults(handler=run_training, online=online)

    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on fresh episodes",
        description="Run the deterministic policy of a checkpoint (or a run's latest) and print its success rate.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed set")
    parser.set_defaults(handler=run_evaluate)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    config = load_config(args.config) if args.config else TrainConfig()
    changes = {key: getattr(args, key, None) for key in OVERRIDES}
    changes = {key: value for key, value in changes.items() if value is not None}
    return config.replace(task=args.task, **changes)


def run_training(args: argparse.Namespace) -> int:

    try:
        if args.resume:
            if args.out is None:
                raise UserError("--resume needs --out RUN_FOLDER (the run to continue)")
            given = [f"--{k.replace('_', '-')}" for k in ("config", *OVERRIDES) if getattr(args, k, None) is not None]
            if given:
                raise UserError(f"--resume continues with the run's saved config; drop {', '.join(given)}")
            config, store = None, args.store  # None: the store the run recorded
        else:
            config = resolve_config(args)
            store = args.store or Path("demos") / f"{Path(args.task).stem}.zarr"
        out = args.out or Path("runs") / f"{config.task}-{config.algo}-s{config.seed}"
        trainer = Trainer(out, store, config, resume=args.resume, online=args.online, progress=not args.no_progress)
        for warning in trainer.warnings:
            print(f"awac-robot {args.command}: warning: {warning}", file=sys.stderr)
        for note in trainer.notes:
            print(note, flush=True)
        result = trainer.train()
    except (ConfigError, TrainingError, StoreError) as exc:
        raise UserError(str(exc)) from None
    print(
        f"run {out}: {trainer.counters.updates} updates, {trainer.counters.env_steps} online env steps, "
        f"eval success {result.get('success_rate', float('nan')):.2f} over {result.get('episodes', 0)} episodes"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    loaded = load_actor(args.checkpoint)
    env = make_env(loaded.config.task, reward="sparse")
    result = evaluate(loaded.policy, env, args.episodes, args.seed)
    print(
        f"{loaded.run_id} update {loaded.step}: success {result['success_rate']:.2f} "
        f"({round(result['success_rate'] * args.episodes)}/{args.episodes}), mean return {result['return']:.1f}"
    )
    return 0
