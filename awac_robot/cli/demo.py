"""`awac-robot demo`: the main job end to end, small enough to watch on a laptop."""

from __future__ import annotations

import argparse

import numpy as np

from awac_robot.cli import tasks
from awac_robot.envs import make_env


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline once on small settings",
        description="List the tasks, then run one episode of door and push and print whether they succeeded.",
    )
    parser.set_defaults(handler=run)


def _episode(task: str, seed: int) -> tuple[int, bool]:
    env = make_env(task, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    steps, success, done = 0, False, False
    while not done:
        _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        steps, success, done = steps + 1, success or info["success"], terminated or truncated
    return steps, success


def run(args: argparse.Namespace) -> int:
    print("== tasks")
    tasks.run(argparse.Namespace(register=[]))
    for task in ("door", "push"):
        steps, success = _episode(task, seed=0)
        print(f"== {task}: one random-action episode, {steps} steps, success={success}")
    return 0
