"""`awac-robot demo`: the whole pipeline once, on settings small enough to watch.

It runs the same subcommands a user would type, in order, so the demo doubles as a
worked example: every step prints the command line it stands for.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from awac_robot.cli.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run collect -> finetune -> export -> deploy -> video once on small settings",
        description=(
            "Run the pipeline end to end: list the tasks, collect scripted demonstrations into a Zarr store, "
            "pretrain AWAC offline and finetune it online, export the policy to ONNX and run it in the real-time "
            "controller process behind the safety layer, then film the deployment from the robot's record. "
            "Everything lands in --out, which is replaced each run."
        ),
    )
    parser.add_argument(
        "--task", default="reach", help="task with a scripted demonstrator (default reach: learns in a minute)"
    )
    parser.add_argument("--episodes", type=int, default=20, help="demonstration episodes to collect")
    parser.add_argument(
        "--noise", type=float, default=0.1, help="action noise while collecting (the hand scripts need <= 0.02)"
    )
    parser.add_argument("--offline-steps", type=int, default=2000, help="offline AWAC updates")
    parser.add_argument("--online-steps", type=int, default=1000, help="online env steps of finetuning")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds the controller runs the policy")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the store, run and policy")
    parser.set_defaults(handler=run)


def _step(title: str, argv: list[str]) -> None:
    from awac_robot.cli import main

    print(f"\n== {title}\n$ awac-robot {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise UserError(f"demo stopped: 'awac-robot {argv[0]}' exited with {code} (its message is above)")
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def run(args: argparse.Namespace) -> int:
    from awac_robot.demonstrators.catalog import task_demonstrators
    from awac_robot.export import card_path
    from awac_robot.outputs import check_output_folder

    if not task_demonstrators(args.task).scripted:
        raise UserError(
            f"the demo collects with a scripted expert and task '{args.task}' has none; "
            "'awac-robot tasks' shows how to collect its demonstrations"
        )
    out: Path = check_output_folder(args.out, "--out", None)
    if out.exists():
        if not (out / ".awac-robot-demo").exists():
            raise UserError(f"{out} exists and was not made by 'awac-robot demo'; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".awac-robot-demo").write_text("made by awac-robot demo; replaced on the next run\n")
    store, run_dir, policy = out / f"{args.task}.zarr", out / "run", out / f"{args.task}.onnx"
    task = ["--task", args.task]
    _step("the tasks", ["tasks"])
    _step(
        "1/5 collect scripted demonstrations",
        ["collect", *task, "--episodes", str(args.episodes), "--store", str(store), "--noise", str(args.noise)]
        + ["--no-progress"],
    )
    _step(
        "2/5 AWAC: pretrain offline, then finetune online (the store keeps every online episode)",
        [
            "finetune",
            *task,
            "--store",
            str(store),
            "--offline-steps",
            str(args.offline_steps),
            "--online-steps",
            str(args.online_steps),
            "--out",
            str(run_dir),
            "--no-progress",
        ],
    )
    _step(
        "3/5 export the policy to ONNX (verified against torch)",
        ["export", "--checkpoint", str(run_dir), "--out", str(policy), "--store", str(store)],
    )
    _step(
        "4/5 deploy: controller process + simulated robot, behind the safety layer",
        ["deploy", "--policy", str(policy), "--duration", str(args.duration), "--log", str(out / "deploy-logs")],
    )
    _step(
        "5/5 film the deployment: the robot's record simulated again after the run, checked and rendered",
        ["replay", "--log", str(out / "deploy-logs"), "--video", str(out / "deploy.mp4")],
    )
    print(
        f"\nDone. Everything is in {out}/: the demonstration store ({store.name}; 'awac-robot demos info {store}'),"
        f" the training run (run/: config.yaml, metrics.jsonl, curve.png, checkpoints), the ONNX policy and its"
        f" card ({policy.name}, {card_path(policy).name}), the controller and robot run logs (deploy-logs/; format"
        f" in docs/deploy.md) and"
        f" the video of the deployment (deploy.mp4)."
    )
    return 0
