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
not finite (the controller's layer never sends one, so the controller is broken). A command
that moves further from the last accepted one than the rate limit allows for the controller
steps and the time between them is limited to that reach, the way the controller's layer limits
it, so even a controller without a safety layer never makes the robot jump. On tabletop tasks
the workspace deltas are shrunk from the robot's own, freshest gripper position with the same
rule as the controller's layer. The measured state itself must be fresh: one older than
`stale_after` at a decision (a sensor, a driver or a link that stopped delivering) holds the
robot for as long as it stays old, since a robot that cannot see itself cannot keep a gripper
in its box.

What "hold" is depends on the actuator, and the driver decides it (for the simulated robot drivers/sim.py):
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
STALE_STATE = 1 << 6  # this step: the newest measured state is older than stale_after
LATCHED = WATCHDOG | BAD_COMMAND | SUPERVISOR

HOLD_REASONS = {
    "no_command": NO_COMMAND,
    "controller_hold": CONTROLLER_HOLD,
    "watchdog": WATCHDOG,
    "bad_command": BAD_COMMAND,
    "supervisor": SUPERVISOR,
    "bad_position": BAD_POSITION,
    "stale_state": STALE_STATE,
}


def hold_reason_names(bits: int) -> list[str]:
    return [name for name, bit in HOLD_REASONS.items() if bits & bit]


class RobotGuard:
    """The robot side's decision each step: apply this command, or hold (and why)."""

    def __init__(self, limits: SafetyLimits, task_period: float, controller_period: float) -> None:
        self.lim = compile_limits(limits, task_period)
        self.timeout = limits.command_timeout
        self.stale_after = limits.stale_after
        #: the controller's period and its rate limit per period: what one controller step may change
        self.controller_period = controller_period
        self.max_rate = np.array(limits.max_rate)
        #: a command answering an observation more robot steps old than this is stale
        self.max_obs_lag = math.ceil(limits.command_timeout / task_period)
        self.command = np.zeros(limits.act_dim)
        self.mode = MODE_NONE
        self.last_seq = 0
        #: stamp of the last fresh command
        self.last_fresh = -math.inf
        #: sequence number and stamp of the last accepted run command (0: none yet)
        self.run_seq, self.run_stamp = 0, -math.inf
        #: whether the rate limit changed the command in force
        self.limited = False
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
                reachable = self._rate_limited(seq, stamp, command)
                self.limited = bool((reachable != command).any())
                self.command[:] = reachable
                self.mode = mode
                self.run_seq, self.run_stamp = seq, stamp
            elif mode == MODE_HOLD:
                self.mode = mode
            else:
                self.latched |= BAD_COMMAND
        elif self.mode == MODE_RUN and now - self.last_fresh > self.timeout:
            self.latched |= WATCHDOG
        return fresh

    def _rate_limited(self, seq: int, stamp: float, command: np.ndarray) -> np.ndarray:
        """`command` limited to what an honest controller can reach from the last accepted run command.

        The controller's layer moves each dimension by at most max_rate * period per step, and a motion
        dimension may also slow down towards 0 at any step, so after k steps a position dim lies within
        k steps of the last command and a motion dim within k steps of [min(0, last), max(0, last)]. k is
        the sequence numbers between the two, bounded by their stamps (plus one period of send jitter) so
        that a controller skipping sequence numbers gains nothing. An honest controller's commands are
        never changed. The first command is not limited: the controller limits it from the applied command
        it read, which the robot may have changed since. Inside the bounds in, inside the bounds out.
        """
        if not self.run_seq:
            return command
        steps = min((seq - self.run_seq) * self.controller_period, stamp - self.run_stamp + self.controller_period)
        allowed = self.max_rate * steps + 1e-9
        last = self.command
        low = np.where(self.lim.motion, np.minimum(last, 0.0), last) - allowed
        high = np.where(self.lim.motion, np.maximum(last, 0.0), last) + allowed
        limited: np.ndarray = np.minimum(np.maximum(command, low), high)
        return limited

    def target(self, obs: np.ndarray, state_age: float) -> tuple[np.ndarray | None, int, bool]:
        """The command to apply (None: hold), the hold reasons, and whether the workspace shrank the command.

        `state_age` is how old the measured state `obs` is at this decision (seconds; NaN: never measured).
        """
        if self.latched:
            return None, self.latched, False
        if not state_age <= self.stale_after:
            return None, STALE_STATE, False
        if self.mode != MODE_RUN:
            return None, NO_COMMAND if self.mode == MODE_NONE else CONTROLLER_HOLD, False
        command = self.command.copy()
        if not self.lim.ws_act.size:
            return command, 0, False
        shrunk = limit_workspace(command, obs, self.lim)
        if shrunk & BAD_OBSERVATION:
            return None, BAD_POSITION, False
        return command, 0, bool(shrunk)
