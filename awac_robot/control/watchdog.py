"""The robot process's own safety: it holds when commands stop being fresh, and checks what it is told to do.

The controller's safety layer is the first line; this is the second, and it lives on the robot
side because only the robot keeps running when the controller hangs, is stopped (SIGSTOP), is
killed, or keeps writing commands that answer an old observation. Nothing here trusts the
controller: every period the robot asks whether the newest command is fresh, and once
`command_timeout` passes without one while it was moving, it holds, latched until it is stopped.

A command is fresh when its sequence number is higher than the last one accepted and it was
stamped at most `command_timeout` ago (same clock in every process). A fresh command that
answers an observation more than `command_timeout` worth of robot steps old latches the hold
at once (the controller is stuck on old data), and so does one outside the action bounds, or
not finite (the controller's layer never sends one, so the controller is broken). On
tabletop tasks the workspace deltas are shrunk from the robot's own, freshest gripper
position with the same rule as the controller's layer.

What "hold" is depends on the actuator, and the robot process decides it (robot.pose_hold_target):
Adroit hands are position-controlled, so they hold their current joint positions (measured,
inside the joint limits, latched once), not the last target, which may be the very command that
was refused; Fetch and kitchen actions are motions, so they hold by sending 0 there (the Fetch
gripper keeps its last command, so a grasp is not dropped).
"""

from __future__ import annotations

import math

import numpy as np

from awac_robot.control.channels import MODE_HOLD, MODE_NONE, MODE_RUN
from awac_robot.control.limits import SafetyLimits
from awac_robot.control.safety import BAD_OBSERVATION, command_in_bounds, compile_limits, limit_workspace

#: why the robot holds this step (bits in the robot's record and status)
NO_COMMAND = 1 << 0  # no fresh command yet (starting up)
CONTROLLER_HOLD = 1 << 1  # the controller sent the hold
WATCHDOG = 1 << 2  # latched: no fresh command for command_timeout while moving
BAD_COMMAND = 1 << 3  # latched: a command that is not finite or outside the action bounds, or an unknown mode
SUPERVISOR = 1 << 4  # latched: the supervisor told the robot to hold
BAD_POSITION = 1 << 5  # this step: the end-effector position the workspace check needs is not finite
LATCHED = WATCHDOG | BAD_COMMAND | SUPERVISOR

HOLD_REASONS = {
    "no_command": NO_COMMAND,
    "controller_hold": CONTROLLER_HOLD,
    "watchdog": WATCHDOG,
    "bad_command": BAD_COMMAND,
    "supervisor": SUPERVISOR,
    "bad_position": BAD_POSITION,
}


def hold_reason_names(bits: int) -> list[str]:
    return [name for name, bit in HOLD_REASONS.items() if bits & bit]


class RobotGuard:
    """The robot side's decision each step: apply this command, or hold (and why)."""

    def __init__(self, limits: SafetyLimits, task_period: float) -> None:
        self.lim = compile_limits(limits, task_period)
        self.timeout = limits.command_timeout
        #: a command answering an observation more robot steps old than this is stale
        self.max_obs_lag = math.ceil(limits.command_timeout / task_period)
        self.command = np.zeros(limits.act_dim)
        self.mode = MODE_NONE
        self.last_seq = 0
        #: stamp of the last fresh command
        self.last_fresh = -math.inf
        self.latched = 0

    def latch(self, reason: int) -> None:
        self.latched |= reason

    def update(
        self, seq: int, stamp: float, mode: float, obs_version: int, command: np.ndarray, now: float, published: int
    ) -> bool:
        """Take the newest command read from the slot (seq 0: none could be read); True if it was fresh.

        `now` is read after the slot, so an honest stamp is never in the future; `published` is how
        many observations the robot has published so far.
        """
        fresh = seq > self.last_seq and 0.0 <= now - stamp <= self.timeout
        if fresh and not 0 <= published - obs_version <= self.max_obs_lag:
            self.latched |= WATCHDOG  # a new command, computed from data older than the timeout: a stuck controller
            return False
        if fresh:
            # timed from the controller's stamp, not from when this process got to read it: the
            # hold then comes at most command_timeout after the controller's last write, exactly
            self.last_seq, self.last_fresh = seq, stamp
            if mode == MODE_RUN and command_in_bounds(command, self.lim):
                self.command[:] = command
                self.mode = mode
            elif mode == MODE_HOLD:
                self.mode = mode
            else:
                self.latched |= BAD_COMMAND
        elif self.mode == MODE_RUN and now - self.last_fresh > self.timeout:
            self.latched |= WATCHDOG
        return fresh

    def target(self, obs: np.ndarray) -> tuple[np.ndarray | None, int, bool]:
        """The command to apply (None: hold), the hold reasons, and whether the workspace shrank the command."""
        if self.latched:
            return None, self.latched, False
        if self.mode != MODE_RUN:
            return None, NO_COMMAND if self.mode == MODE_NONE else CONTROLLER_HOLD, False
        command = self.command.copy()
        if not self.lim.ws_act.size:
            return command, 0, False
        shrunk = limit_workspace(command, obs, self.lim)
        if shrunk & BAD_OBSERVATION:
            return None, BAD_POSITION, False
        return command, 0, bool(shrunk)
