"""`make_scripted(task)`: the hand-written experts behind `awac-robot collect --demonstrator scripted`.

A demonstration is only useful if a policy that sees the observation can learn from it, so
an expert should act on the task's observation alone: the model's constants and kinematics
(posed from the observed joints on a scratch copy) are fine, the live simulator state, memory
of earlier steps and queues of planned actions are not. `tests/test_scripted.py` holds every
expert to that, and lists the ones that do not yet meet it (door and slide read
the live state). `rollout` scores any demonstrator the same way for the tests and
`bench/demonstrators.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from awac_robot.demonstrators import Demonstrator
from awac_robot.demonstrators.scripted_adroit import DoorExpert, RelocateExpert
from awac_robot.demonstrators.scripted_fetch import PickPlaceExpert, PushExpert, ReachExpert
from awac_robot.demonstrators.scripted_hammer import HammerExpert
from awac_robot.demonstrators.scripted_kitchen import KitchenExpert
from awac_robot.demonstrators.scripted_slide import SlideExpert
from awac_robot.envs import TaskError, get_task

_EXPERTS: dict[str, Callable[[], Demonstrator]] = {
    "door": DoorExpert,
    "relocate": RelocateExpert,
    "hammer": HammerExpert,
    "push": PushExpert,
    "pick_place": PickPlaceExpert,
    "reach": ReachExpert,
    "slide": SlideExpert,
    "kitchen": KitchenExpert,
}


def scripted_tasks() -> list[str]:
    return sorted(_EXPERTS)


def make_scripted(task: str) -> Demonstrator:
    """A fresh scripted expert for `task` (a registered name); one line of advice if there is none."""
    name = get_task(task).name
    if name not in _EXPERTS:
        raise TaskError(
            f"task '{name}' has no scripted demonstrator (scripted: {', '.join(scripted_tasks())}); "
            "'awac-robot tasks' shows the commands that collect demonstrations for every task"
        )
    return _EXPERTS[name]()
