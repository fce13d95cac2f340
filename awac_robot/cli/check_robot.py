"""`awac-robot check-robot`: the fault drills against a robot driver, judged from the robot's own record."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from awac_robot.cli.deploy import add_limits_arguments, add_robot_arguments, limits_in_force, robot_definition
from awac_robot.cli.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser(
        "check-robot",
        help="run the fault drills (controller stopped or killed, stale state, bad commands, e-stop, workspace "
        "wall) against a robot driver",
        description=(
            "Drill the robot side before it moves a real arm: each drill starts the robot process around the "
            "--robot driver (with a controller running a constant drill policy, or a test controller writing "
            "commands itself), injects one fault at a seeded random moment and reads the robot's own record. "
            "Prints PASS/FAIL per drill with the measured hold latency; exits 1 if any drill fails."
        ),
    )
    check.add_argument("--task", required=True, help="the task whose observation and action layout the robot speaks")
    add_robot_arguments(check)
    add_limits_arguments(check)
    check.add_argument("--drills", help="comma-separated drills to run (default: all that apply to the task)")
    check.add_argument("--seed", type=int, default=0, help="seed of the fault moments (and of a simulated robot)")
    check.add_argument(
        "--log", type=Path, help="folder for the drills' records (must not exist or be empty; default deploy/drills/)"
    )
    check.set_defaults(handler=run_check_robot)


def run_check_robot(args: argparse.Namespace) -> int:
    from awac_robot.control.drills import DrillKit
    from awac_robot.envs import get_spec

    spec = get_spec(args.task)
    driver = robot_definition(args)
    config, said = limits_in_force(args, spec)
    root = args.log or Path("deploy") / "drills" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} already holds drill records: choose another --log (records are never overwritten)")
    print(f"check-robot: {driver.target} on task {spec.name}; limits {said}; records in {root}/", flush=True)
    kit = DrillKit(spec, config, driver, root, seed=args.seed)
    names = kit.available()
    if args.drills:
        asked = [d.strip() for d in args.drills.split(",") if d.strip()]
        unknown = [d for d in asked if d not in names]
        if unknown:
            raise UserError(f"--drills: no drill {unknown[0]!r} for task {spec.name} (drills: {', '.join(names)})")
        names = asked
    results = kit.run(names)
    passed = sum(r.passed for r in results)
    print(f"check-robot: {passed} of {len(results)} drills passed on {driver.target} (task {spec.name})")
    return 0 if passed == len(results) else 1
