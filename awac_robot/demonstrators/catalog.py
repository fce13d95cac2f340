"""Which demonstrators each task has, and the commands that fill a store with successful demonstrations.

One table for `awac-robot tasks` and for every "collect one first" hint, so no hint names a
command that fails for its task: a task with a scripted expert is collected with it; a task
without one (pen) from an expert published elsewhere, imported as an ONNX policy first; a
gripper task also by keyboard; any task from an ONNX policy of your own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from awac_robot.demonstrators.keyboard import drives
from awac_robot.demonstrators.scripted import scripted_tasks
from awac_robot.envs import get_task

#: episodes the hints suggest collecting: enough for offline pretraining to learn from
HINT_EPISODES = 100

#: what `bench/demonstrators.py` measured per task: the default demonstrator's success over 50 seeded
#: episodes and what BC learned from them (docs/demonstrators.md); written by that script only
TEACHING = Path(__file__).with_name("teaching.json")


@dataclass(frozen=True)
class PublishedExpert:
    """An expert policy published by another project, and how `awac-robot import-policy` reads it."""

    format: str
    #: the file name it is published under (DAPG: `<task>_expert.npz`, format in docs/demonstrators.md)
    weights: str

    def policy_path(self, task: str) -> Path:
        return Path("policies") / f"{task}-{self.format}.onnx"


#: experts of other projects that import as ONNX demonstrators: the DAPG Adroit experts (door and pen
#: are the ones measured here; the hammer expert has the same format, its weights were not at hand,
#: and hammer has a scripted expert too)
PUBLISHED_EXPERTS: dict[str, PublishedExpert] = {
    "door": PublishedExpert("dapg", "door_expert.npz"),
    "hammer": PublishedExpert("dapg", "hammer_expert.npz"),
    "pen": PublishedExpert("dapg", "pen_expert.npz"),
}


@dataclass(frozen=True)
class TaskDemonstrators:
    task: str
    scripted: bool
    keyboard: bool
    published: PublishedExpert | None

    def names(self) -> list[str]:
        """Short names of the demonstrators this task has (`LEGEND` says how each is used)."""
        names = ["scripted"] if self.scripted else []
        names += ["keyboard"] if self.keyboard else []
        names += [f"{self.published.format} expert"] if self.published is not None else []
        return [*names, "policy"]

    def commands(self, store: Path) -> list[str]:
        """Shell commands, in order, that leave a store of successful demonstrations at `store`."""
        collect = f"awac-robot collect --task {self.task} --episodes {HINT_EPISODES} --store {store}"
        if self.scripted:
            return [collect]
        if self.published is not None:
            policy = self.published.policy_path(self.task)
            return [
                f"awac-robot import-policy {self.published.format} {self.published.weights} --task {self.task} "
                f"--out {policy}",
                f"{collect} --demonstrator policy:{policy}",
            ]
        if self.keyboard:
            return [f"awac-robot collect --task {self.task} --episodes 20 --store {store} --demonstrator keyboard"]
        return [f"{collect} --demonstrator policy:YOUR_POLICY.onnx"]


#: how each demonstrator name of `TaskDemonstrators.names` is used
LEGEND = (
    ("scripted", "the built-in expert, collect's default"),
    ("keyboard", "you, at the terminal: --demonstrator keyboard"),
    (
        "dapg expert",
        "awac-robot import-policy dapg TASK_expert.npz --task TASK --out policies/TASK-dapg.onnx, "
        "then --demonstrator policy:policies/TASK-dapg.onnx",
    ),
    ("policy", "any exported policy of the task: --demonstrator policy:PATH.onnx"),
)


def task_demonstrators(task: str) -> TaskDemonstrators:
    config = get_task(task)
    scripted = config.name in scripted_tasks()
    return TaskDemonstrators(config.name, scripted, drives(config), PUBLISHED_EXPERTS.get(config.name))


def measured_teaching(task: str) -> str | None:
    """`demo 100%, BC 94% on 50 episodes`: the bench's last figures for `task`'s default demonstrator, if measured."""
    if not TEACHING.exists():
        return None
    row = json.loads(TEACHING.read_text()).get(task)
    if row is None:
        return None
    parts = [f"{store['bc_success']:.0%} on {store['episodes']}" for store in row["stores"]]
    return f"{row['demonstrator']} {row['stores'][0]['demonstrator_success']:.0%}, BC {', '.join(parts)} episodes"


def collect_hint(task: str, store: Path) -> str:
    """`collect one first: ...` naming the command(s) that work for `task`."""
    demos = task_demonstrators(task)
    commands = demos.commands(store)
    text = "collect one first: " + " then ".join(f"`{command}`" for command in commands)
    if demos.published is not None and not demos.scripted:
        text += f" ({demos.published.weights} is the {demos.published.format.upper()} project's published expert)"
    return text
