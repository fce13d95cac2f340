"""`awac-robot tasks`: the task registry at a glance, with each task's demonstrators."""

from __future__ import annotations

import argparse

from awac_robot.cli.collect import default_store
from awac_robot.demonstrators.catalog import LEGEND, measured_teaching, task_demonstrators
from awac_robot.envs import get_task, register_task, task_names


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="list the registered tasks",
        description=(
            "List the tasks declared in envs/*.yaml (plus any --register'ed YAML) with their sizes, rates and "
            "demonstrators, and the commands that fill a store with successful demonstrations for each."
        ),
    )
    parser.add_argument(
        "--register", metavar="YAML", action="append", default=[], help="also load a task YAML of your own"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for path in args.register:
        register_task(path)
    header = (
        f"{'task':<12} {'domain':<10} {'simulator':<24} {'obs':>4} {'act':>4} {'steps':>6} {'rate Hz':>8}  "
        f"{'reward':<7} demonstrators"
    )
    print(header)
    print("-" * len(header))
    names = task_names()
    for name in names:
        task = get_task(name)
        demos = ", ".join(task_demonstrators(name).names())
        print(
            f"{task.name:<12} {task.domain:<10} {task.simulator_id:<24} {task.obs_dim:>4} {task.act_dim:>4} "
            f"{task.episode_steps:>6} {1.0 / task.control_period:>8.1f}  {task.reward:<7} {demos}"
        )
    print("\ndemonstrators:")
    for short, how in LEGEND:
        print(f"  {short:<12} {how}")
    print("\nmeasured (bench/demonstrators.py, docs/demonstrators.md): the default demonstrator's success over 50")
    print("seeded episodes, and BC's (train --algo bc) over 100 evaluation episodes after learning from them:")
    for name in names:
        print(f"  {name:<12} {measured_teaching(name) or 'not measured'}")
    print("\na store of successful demonstrations, per task:")
    for name in names:
        print(f"  {name:<12} {' && '.join(task_demonstrators(name).commands(default_store(name)))}")
    return 0
