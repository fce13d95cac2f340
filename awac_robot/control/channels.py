"""The shared-memory slots between supervisor, robot process and controller process, and their layouts.

One writer per slot:
    obs         robot -> controller   the latest observation, its timestamp, the command the robot applies
    command     controller -> robot   the latest command, its sequence number, whether it is a hold, the
                                      observation it answers (the robot's watchdog judges freshness by these)
    controller  controller -> super.  heartbeat, step count, misses, event counts, latency histogram
    robot       robot -> supervisor   heartbeat, simulator steps, episodes, successes, overruns, why it holds
    supervisor  supervisor -> both    e-stop (controller holds), stop (controller holds and exits), stop robot,
                                      hold robot (the robot holds, latched, whatever the controller sends)

Timestamps are `time.perf_counter()` seconds (CLOCK_MONOTONIC on Linux), one clock for every process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from awac_robot.control.safety import EVENTS
from awac_robot.control.shm import Slot
from awac_robot.spec import TaskSpec

#: command modes
MODE_NONE, MODE_RUN, MODE_HOLD = 0.0, 1.0, 2.0
#: controller states
STATE_STARTING, STATE_RUNNING, STATE_HELD, STATE_DONE, STATE_FAILED = 0.0, 1.0, 2.0, 3.0, 4.0
#: latency histogram: bin i holds latencies in [2**(i/4), 2**((i+1)/4)) microseconds, the last bin everything above
HIST_BINS = 80


@dataclass(frozen=True)
class Layout:
    """Named ranges of a slot's float64 values."""

    fields: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(n for _, n in self.fields)

    def __getitem__(self, name: str) -> slice:
        start = 0
        for key, n in self.fields:
            if key == name:
                return slice(start, start + n)
            start += n
        raise KeyError(name)


def obs_layout(spec: TaskSpec) -> Layout:
    return Layout((("stamp", 1), ("sim_step", 1), ("episode", 1), ("obs", spec.obs_dim), ("applied", spec.act_dim)))


def command_layout(spec: TaskSpec) -> Layout:
    return Layout((("stamp", 1), ("seq", 1), ("mode", 1), ("obs_version", 1), ("command", spec.act_dim)))


CONTROLLER_LAYOUT = Layout(
    (
        ("stamp", 1),
        ("state", 1),
        ("step", 1),
        ("misses", 1),
        ("consecutive_misses", 1),
        ("events", len(EVENTS)),
        ("latency_hist", HIST_BINS),
    )
)
ROBOT_LAYOUT = Layout(
    (("stamp", 1), ("sim_steps", 1), ("episodes", 1), ("successes", 1), ("overruns", 1), ("held_by", 1))
)
SUPERVISOR_LAYOUT = Layout((("estop", 1), ("stop", 1), ("stop_robot", 1), ("hold_robot", 1)))


@dataclass
class Channels:
    obs: Slot
    command: Slot
    controller: Slot
    robot: Slot
    supervisor: Slot

    @classmethod
    def create(cls, spec: TaskSpec) -> Channels:
        return cls(
            obs=Slot.create(obs_layout(spec).size),
            command=Slot.create(command_layout(spec).size),
            controller=Slot.create(CONTROLLER_LAYOUT.size),
            robot=Slot.create(ROBOT_LAYOUT.size),
            supervisor=Slot.create(SUPERVISOR_LAYOUT.size),
        )

    @classmethod
    def attach(cls, names: dict[str, str], spec: TaskSpec) -> Channels:
        return cls(
            obs=Slot.attach(names["obs"], obs_layout(spec).size),
            command=Slot.attach(names["command"], command_layout(spec).size),
            controller=Slot.attach(names["controller"], CONTROLLER_LAYOUT.size),
            robot=Slot.attach(names["robot"], ROBOT_LAYOUT.size),
            supervisor=Slot.attach(names["supervisor"], SUPERVISOR_LAYOUT.size),
        )

    def names(self) -> dict[str, str]:
        return {key: getattr(self, key).name for key in ("obs", "command", "controller", "robot", "supervisor")}

    def close(self) -> None:
        for key in ("obs", "command", "controller", "robot", "supervisor"):
            getattr(self, key).close()


def read_fields(slot: Slot, layout: Layout, patience: float = 0.05) -> dict[str, np.ndarray]:
    """One consistent read of a slot, split into its named fields (for the supervisor, not the hot loop).

    A writer stopped or killed in the middle of a write leaves the slot unreadable for good; after
    `patience` seconds this returns zeros, as if never written, so its heartbeat (stamp 0) reads as lost.
    """
    values = np.zeros(layout.size)
    deadline = time.monotonic() + patience
    while slot.read(values) < 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    return {name: values[layout[name]] for name, _ in layout.fields}
