"""`awac-robot export` (checkpoint -> verified ONNX + card) and `awac-robot deploy` (run it behind the safety layer)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from awac_robot.cli.errors import UserError

if TYPE_CHECKING:
    from awac_robot.control.drivers.loading import DriverDefinition
    from awac_robot.control.limits import DeployConfig
    from awac_robot.spec import TaskSpec


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = subparsers.add_parser(
        "export",
        help="export a checkpoint to a verified ONNX policy with a policy card (NAME.card.yaml beside it)",
        description=(
            "Write the deterministic policy (the averaged actor by default) of a checkpoint (or a run folder's "
            "latest) as ONNX, with the task spec "
            "and run in its metadata. onnxruntime must match torch within 1e-5 on >= 1000 observations "
            "(from --store, else from rollouts in the task) or nothing is written."
        ),
    )
    export.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    export.add_argument("--out", type=Path, required=True, help="ONNX file to write, e.g. policies/door.onnx")
    export.add_argument("--store", type=Path, help="verify on observations from this demo store")
    export.add_argument("--verify", type=int, default=2000, help="rollout observations when no --store (>= 1000)")
    export.add_argument(
        "--force", action="store_true", help="replace files at --out (and its card) that awac-robot did not write"
    )
    export.set_defaults(handler=run_export)

    deploy = subparsers.add_parser(
        "deploy",
        help="run an exported policy on a robot (default: the simulated one) behind the safety layer",
        description=(
            "Start the robot process (around the --robot driver, default the simulated task) and a fixed-rate "
            "controller process running the ONNX policy behind "
            "the safety limits; print live status, and a summary at the end. Ctrl-C stops cleanly (the robot holds). "
            "Exits 1 if the run failed (a process died, a heartbeat stopped, the robot held on its own)."
        ),
    )
    deploy.add_argument("--policy", type=Path, required=True, help="ONNX policy from 'awac-robot export'")
    deploy.add_argument("--task", help="task the robot runs (default: the policy's task; a mismatch refuses to start)")
    deploy.add_argument("--rate", type=float, help="controller rate in Hz (default: the limits file's)")
    add_limits_arguments(deploy)
    deploy.add_argument("--duration", type=float, default=30.0, help="seconds to run (0: until Ctrl-C)")
    deploy.add_argument("--estop-file", help="creating this file e-stops the controller")
    deploy.add_argument(
        "--log", type=Path, help="run folder for the logs (must not exist or be empty; default deploy/logs/TASK-TIME)"
    )
    deploy.add_argument("--seed", type=int, default=0, help="seed of the simulated task")
    add_robot_arguments(deploy)
    deploy.add_argument("--json", action="store_true", help="print the summary as JSON")
    deploy.set_defaults(handler=run_deploy)


def add_robot_arguments(parser: argparse.ArgumentParser) -> None:
    """--robot and --robot-config, shared by `deploy` and `check-robot`."""
    parser.add_argument(
        "--robot",
        default="sim",
        help="the robot driver: a name registered in the entry-point group awac_robot.robots (built in: sim, "
        "network) or PACKAGE.MODULE:CLASS (default: sim, the simulated task)",
    )
    parser.add_argument("--robot-config", type=Path, help="YAML file of the driver's settings (its Settings fields)")


def robot_definition(args: argparse.Namespace) -> DriverDefinition:
    """The checked driver definition of --robot / --robot-config, or a one-line UserError."""
    from awac_robot.control.drivers.loading import DriverError, define

    try:
        return define(args.robot, args.robot_config)
    except DriverError as exc:
        raise UserError(str(exc)) from None


def add_limits_arguments(parser: argparse.ArgumentParser) -> None:
    """--limits / --no-limits-file, shared by `deploy` and `check-robot`."""
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument(
        "--limits", type=Path, help="controller and safety limits file (default: the one shipped for the task)"
    )
    limits.add_argument(
        "--no-limits-file",
        action="store_true",
        help="run without a limits file, behind the task's built-in default bounds (derived from the task spec)",
    )


def limits_in_force(args: argparse.Namespace, spec: TaskSpec) -> tuple[DeployConfig, str]:
    """The limits of --limits / --no-limits-file / the shipped file, and how to say which is in force."""
    from awac_robot.control.limits import default_config, load_config, shipped_limits_file, shipped_tasks

    if args.no_limits_file:
        return default_config(spec), f"built-in default bounds of task {spec.name} (--no-limits-file)"
    if args.limits is not None:
        return checked(lambda: load_config(args.limits, spec)), f"{args.limits} (--limits)"
    shipped = shipped_limits_file(spec.name)
    if shipped is None:
        raise UserError(
            f"no limits file for task '{spec.name}' (shipped: {', '.join(shipped_tasks())}): pass --limits "
            f"FILE, or --no-limits-file to run behind the task's built-in default bounds"
        )
    return checked(lambda: load_config(shipped, spec)), f"{shipped} (shipped with awac-robot)"


def checked(make: Callable[[], DeployConfig]) -> DeployConfig:
    """`make()`, its LimitsError turned into the one-line UserError."""
    from awac_robot.control.limits import LimitsError

    try:
        return make()
    except LimitsError as exc:
        raise UserError(str(exc)) from None


def run_export(args: argparse.Namespace) -> int:
    from awac_robot.export import (
        ExportError,
        check_export_paths,
        export_actor,
        load_checkpoint,
        rollout_observations,
        store_observations,
    )
    from awac_robot.store import StoreError

    check_export_paths(args.out, args.force)  # before the work: a path that will be refused is said first
    actor = load_checkpoint(args.checkpoint)
    if args.store is not None:
        try:
            obs, source = store_observations(args.store, actor.spec), f"store {args.store}"
        except StoreError as exc:
            raise UserError(f"{exc} (or export without --store to verify on rollouts)") from None
    else:
        if args.verify < 1000:
            raise UserError(f"--verify {args.verify} is too few: export verifies on at least 1000 observations")
        obs, source = rollout_observations(actor, args.verify), f"{args.verify} rollout steps in task {actor.spec.name}"
    try:
        report = export_actor(actor, args.out, obs, source, force=args.force)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    print(
        f"exported {actor.spec.name} run {actor.run_id} step {actor.step} -> {report.onnx_path} "
        f"(card {report.card_path}); onnxruntime vs torch max abs diff {report.max_abs_diff:.2e} "
        f"on {report.verified_on} observations from {report.obs_source}"
    )
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    from awac_robot.control.limits import with_overrides
    from awac_robot.control.runlog import format_summary
    from awac_robot.control.supervisor import DeployError, Supervisor
    from awac_robot.envs import get_spec
    from awac_robot.onnx_policy import OnnxPolicy

    driver = robot_definition(args)
    policy = OnnxPolicy(args.policy)
    task = args.task or policy.spec.name
    spec = get_spec(task)
    policy.check_spec(spec)
    config, said = limits_in_force(args, spec)
    config = checked(lambda: with_overrides(config, spec, rate=args.rate, estop_file=args.estop_file))
    print(f"deploy: limits in force: {said}", flush=True)
    run_dir = args.log or Path("deploy") / "logs" / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = Supervisor(args.policy, config, args.duration or None, run_dir, seed=args.seed, robot=driver).run()
    except DeployError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(
            json.dumps(
                {"log": str(result.run_dir), "robot": result.robot, "problems": result.problems, **result.summary},
                indent=2,
            )
        )
    else:
        print(format_summary(result.summary))
        robot = result.robot
        print(
            f"robot: {robot['sim_steps']} simulator steps, {robot['episodes']} episodes ended, "
            f"{robot['successes']} solved, {robot['overruns']} simulator overruns"
        )
        print(f"logs: {result.run_dir}/  (format: docs/deploy.md)")
    if not result.ok:
        print(f"awac-robot deploy: FAILED: {'; '.join(result.problems)}", file=sys.stderr)
        return 1
    return 0
