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
from awac_robot.train.finetune import Trainer, TrainingError
from awac_robot.train.runlog import RunLogError, check_tensorboard

# Flags that override the config file; None means "not given".
OVERRIDES = ("offline_steps", "online_steps", "seed", "algo", "sources")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar: one plain line per metrics row instead"
        )
        parser.add_argument(
            "--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard/"
        )
        parser.set_defaults(handler=run_training, online=online)

    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint or an ONNX policy on fresh episodes",
        description=(
            "Run the deterministic policy of a checkpoint (or a run's latest) or of an exported ONNX file on "
            "the trainer's evaluation episodes (the same seeds, so the figures compare), print each episode "
            "and the success rate with its 95% Wilson interval."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint file (e.g. RUN/checkpoints/best.pt) or run folder")
    source.add_argument("--policy", type=Path, help="ONNX policy from 'awac-robot export'")
    parser.add_argument("--episodes", type=int, help="episodes (default: the run's eval_episodes; ONNX: 30)")
    parser.add_argument("--seed", type=int, help="evaluation seed set (default: the run's seed; ONNX: 0)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="score on the report seeds, as the trainer scores its handed-over and final policy (the same for every "
        "run seed; default episodes: the run's report_episodes, ONNX: 100)",
    )
    parser.add_argument("--video", type=Path, metavar="DIR", help="also write one mp4 per episode into DIR")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--force", action="store_true", help="replace videos of an earlier evaluation in --video DIR")
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
            config, store, out = None, args.store, args.out  # None: the store the run recorded
        else:
            config = resolve_config(args)
            store = args.store or Path("demos") / f"{Path(args.task).stem}.zarr"
            out = args.out or Path("runs") / f"{config.task}-{config.algo}-s{config.seed}"
        if args.tensorboard:
            check_tensorboard()
        trainer = Trainer(
            out,
            store,
            config,
            resume=args.resume,
            online=args.online,
            progress=not args.no_progress,
            tensorboard=args.tensorboard,
        )
        for warning in trainer.warnings:
            print(f"awac-robot {args.command}: warning: {warning}", file=sys.stderr)
        for note in trainer.notes:
            print(note, flush=True)
        result = trainer.train()
    except (ConfigError, TrainingError, StoreError, RunLogError) as exc:
        raise UserError(str(exc)) from None
    reports = "".join(
        f"; {name} policy {r['success_rate']:.2f} over {r['episodes']} report episodes"
        for name, r in trainer.reports.items()
    )
    print(
        f"run {out}: {trainer.counters.updates} updates, {trainer.counters.env_steps} online env steps, "
        f"eval success {result.get('success_rate', float('nan')):.2f} over {result.get('episodes', 0)} episodes"
        f"{reports}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from awac_robot.filming import FilmedEpisode
    from awac_robot.outputs import check_output_folder
    from awac_robot.rollout import FunctionActor, check_seed
    from awac_robot.train.evaluation import REPORT, SELECT, deterministic_actor, eval_seed, run_evaluation
    from awac_robot.video import write_video

    if args.checkpoint is not None:
        loaded = load_actor(args.checkpoint)
        actor, spec, run_id, step = deterministic_actor(loaded.policy), loaded.spec, loaded.run_id, loaded.step
        episodes, seed = (
            loaded.config.report_episodes if args.report else loaded.config.eval_episodes,
            loaded.config.seed,
        )
        source = str(args.checkpoint)
    else:
        from awac_robot.onnx_policy import OnnxPolicy

        policy = OnnxPolicy(args.policy)
        actor, spec, run_id, step = FunctionActor(policy), policy.spec, policy.metadata.run_id, policy.metadata.step
        episodes, seed = TrainConfig.report_episodes if args.report else TrainConfig.eval_episodes, 0
        source = str(args.policy)
    episodes = args.episodes if args.episodes is not None else episodes
    purpose = REPORT if args.report else SELECT
    seed = args.seed if args.seed is not None else seed
    if episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {episodes}")
    check_seed(seed)
    if args.video is not None:
        check_output_folder(args.video, "--video", None)
        earlier = sorted(args.video.glob("episode_*.mp4")) if args.video.is_dir() else []
        if earlier and not args.force:
            raise UserError(
                f"--video {args.video} holds videos of an earlier evaluation ({earlier[0].name}, ...): choose "
                "another folder, or pass --force to replace them"
            )
    env = make_env(spec.name, reward="sparse", render_mode="rgb_array" if args.video else None)
    spec.check_matches(env.config.spec, f"policy {source}")
    written: list[Path] = []

    def save_video(index: int, film: FilmedEpisode) -> None:
        outcome = "solved" if film.episode.solved else "failed"
        path = args.video / f"episode_{index:03d}_seed_{eval_seed(seed, index, purpose)}_{outcome}.mp4"
        written.append(write_video(path, film.frames, film.fps))

    try:
        result = run_evaluation(actor, env, episodes, seed, save_video if args.video else None, purpose)
    finally:
        env.close()
    low, high = result.interval
    if args.json:
        payload = {
            "policy": source,
            "task": spec.name,
            "run_id": run_id,
            "step": step,
            "seed": seed,
            "purpose": purpose,
        }
        print(json.dumps({**payload, **result.to_dict(), "videos": [str(p) for p in written]}))
        return 0
    print(
        f"{source}: run {run_id} update {step}, task {spec.name}, {episodes} episodes, "
        f"seeds {eval_seed(seed, 0, purpose)}..{eval_seed(seed, episodes - 1, purpose)} "
        + ("(the report seeds)" if args.report else f"(evaluation seed set {seed})")
    )
    print(f"{'episode':>7} {'seed':>8} {'steps':>5} {'return':>8}  {'solved':<6} {'at step':>7}")
    for index, score in enumerate(result.scores):
        at = "-" if score.solved_at is None else str(score.solved_at)
        print(
            f"{index:>7} {score.seed:>8} {score.steps:>5} {score.total_return:>8.1f}  "
            f"{'yes' if score.solved else 'no':<6} {at:>7}"
        )
    print(
        f"success {result.success_rate:.2f} ({result.successes}/{episodes}), 95% interval [{low:.2f}, {high:.2f}] "
        f"(Wilson); mean return {result.mean_return:.1f}"
    )
    if written:
        print(f"videos: {len(written)} in {args.video}")
    return 0
