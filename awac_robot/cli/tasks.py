"""`awac-robot tasks`: the task registry at a glance."""

from __future__ import annotations

import argparse

from awac_robot.envs import get_task, register_task, task_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="list the registered tasks",
        description="List the tasks declared in envs/*.yaml (plus any --register'ed YAML) with their sizes and rates.",
    )
    parser.add_argument(
        "--register", metavar="YAML", action="append", default=[], help="also load a task YAML of your own"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for path in args.register:
        register_task(path)
    header = f"{'task':<12} {'domain':<10} {'simulator':<24} {'obs':>4} {'act':>4} {'steps':>6} {'rate Hz':>8}  reward"
    print(header)
    print("-" * len(header))
    for name in task_names():
        task = get_task(name)
        print(
            f"{task.name:<12} {task.domain:<10} {task.simulator_id:<24} {task.obs_dim:>4} {task.act_dim:>4} "
            f"{task.episode_steps:>6} {1.0 / task.control_period:>8.1f}  {task.reward}"
        )
    return 0
