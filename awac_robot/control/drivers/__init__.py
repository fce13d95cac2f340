"""Robot drivers: what the robot process calls to reach an actual robot, and the contract each one keeps.

The robot process (awac_robot/control/robot.py) owns everything that makes a robot safe to
drive from a separate controller: the shared-memory slots, the guard (command freshness,
bounds, rate, workspace, measured-state freshness, hold), the heartbeat and the robot's own
record, robot.runlog. A driver only does the three things that differ from robot to robot:
read the newest measured state, apply a command, hold. So a driver written for a new arm gets
the whole robot-side guard without copying it, and `awac-robot check-robot` drills it.

    sim.py       the MuJoCo task stepped once per period (the default robot)
    network.py   a robot reached over UDP: the driver, the server beside the arm, a lossy link for drills
    loading.py   `--robot` / `--robot-config`: finding a driver class, checking its settings, building it

Drivers are found by `PACKAGE.MODULE:CLASS` or by a name an installed package registers in the
entry-point group `awac_robot.robots` (docs/deploy.md, "Writing a hardware driver").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from awac_robot.spec import TaskSpec


@dataclass(frozen=True)
class NoSettings:
    """The settings of a driver that takes none (any field in --robot-config is then an error)."""


@dataclass
class Measurement:
    """One measured state of the robot, as the driver last received it.

    `obs` is in the task's observation layout (float32, shape (obs_dim,)); `stamp` is the
    `time.perf_counter()` time at which it was *measured* (not read, not received): every
    freshness check downstream judges the state by it. `applied` is the command (task action
    units, float64, (act_dim,)) the robot was executing when it was measured; before the
    first command, the robot's hold. `episode` and `solved` count the episodes a simulated
    robot has ended and solved so far (a real arm leaves both 0).
    """

    obs: np.ndarray
    stamp: float
    applied: np.ndarray
    episode: int = 0
    solved: int = 0


class RobotDriver(ABC):
    """The robot as the robot process sees it; subclass it for a new robot.

    The robot process constructs the driver as `Driver(spec, settings, seed)`: `spec` is the
    task (observation layout, action units and bounds, control period), `settings` an
    instance of the class attribute `Settings` (a dataclass; its fields are what
    `--robot-config` may set, checked before the driver sees them), `seed` the deployment's
    seed (meaningful to simulators). Construction may take its time (connecting, homing);
    nothing real-time runs yet.

    Then, once per robot period (the task's control period), the process calls `read()`,
    decides, and calls exactly one of `apply(command)` or `hold()`. The contract:

      - None of the three blocks: each returns within a small part of the period. A driver
        whose robot talks slowly keeps a receiver of its own (a thread, a socket buffer) and
        hands over the newest state it has.
      - `read()` returns the newest measured state with the time it was measured. If nothing
        new arrived it returns the previous one with its old stamp (never a fresh stamp on old
        data): the guard holds when the state gets older than `stale_after`.
      - `apply(command)` gets a command the guard has checked: finite, inside the action
        bounds, within the rate limit, its end-effector deltas shrunk to the workspace box.
      - `hold()` keeps the robot where it is by the robot's own means: position-controlled
        joints hold their measured positions (latched once, on the first call after an
        apply, never the last target, which may be what was refused), motions stop. It is
        called every period for as long as the hold lasts, and the robot must also hold by
        itself if the robot process stops calling (killed, stalled): that part is the
        robot's or its server's job, below this interface.
      - `close()` releases the robot; the process calls it once on the way out.

    What the guard cannot do for a driver: it sees commands and measured states, not forces.
    Torque and current limits, collision detection and the arm's own emergency stop stay with
    the arm and its vendor controller.
    """

    Settings: ClassVar[type[Any]] = NoSettings

    @abstractmethod
    def read(self) -> Measurement:
        """The newest measured state (see the class docstring)."""

    @abstractmethod
    def apply(self, command: np.ndarray) -> None:
        """Send a checked command (task action units, float64, shape (act_dim,))."""

    @abstractmethod
    def hold(self) -> None:
        """Keep the current pose by the robot's own means (called every period while holding)."""

    def close(self) -> None:  # noqa: B027 - optional for drivers that hold nothing open
        """Release whatever the driver opened."""


def check_measurement(measurement: Measurement, spec: TaskSpec) -> None:
    """Refuse a measurement whose shapes do not fit the task: a driver bug, found at the first read."""
    obs, applied = np.shape(measurement.obs), np.shape(measurement.applied)
    if obs != (spec.obs_dim,) or applied != (spec.act_dim,):
        raise TypeError(
            f"the driver's Measurement has obs of shape {obs} and applied of shape {applied}; task {spec.name} "
            f"needs ({spec.obs_dim},) and ({spec.act_dim},)"
        )
