"""The safety layer: pure functions over (action, state, limits) -> (command, events).

Nothing here does I/O, reads a clock or keeps state between calls; the controller passes in
everything (the raw action, the observation, the last command it sent, the observation's
age, the deadline-miss count) and logs what comes back. That makes every check testable
alone and a step replayable from its log row.

Invariants every command returned here satisfies (tests/test_safety.py checks them on
arbitrary inputs):
  - it is finite and inside [act_low, act_high]; on position dims it is also inside the joint
    margin, or (if the last command was not) at most max_rate * period closer to it;
  - per dimension it differs from the last command by at most max_rate * period, except
    that a motion dimension (`rate_dims`: deltas, velocities) may always slow down, i.e.
    move towards 0 without crossing it: stopping is never a jump in the pose;
  - on tabletop tasks, a delta never takes the end effector further outside the workspace box.

Events are bit flags (plain ints, cheap in the 500 Hz loop); `event_names` decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from awac_robot.control.limits import SafetyLimits

NON_FINITE_ACTION = 1 << 0  # the policy produced NaN/inf: hold and raise a fault
BAD_OBSERVATION = 1 << 1  # the end-effector position needed by the workspace check is not finite: hold
CLIPPED = 1 << 2  # an entry was outside the action bounds
JOINT_MARGIN = 1 << 3  # a position target was inside the margin at the joint limits
RATE_LIMITED = 1 << 4  # an entry changed faster than max_rate allows
WORKSPACE = 1 << 5  # a delta would have taken the end effector (further) outside the box
STALE_OBSERVATION = 1 << 6  # safe stop: the newest observation is older than stale_after
DEADLINE_MISSES = 1 << 7  # safe stop: more than max_consecutive_misses deadline misses in a row
ESTOP = 1 << 8  # safe stop: signal, e-stop file or supervisor command
HOLD = 1 << 9  # this step sent the hold command

EVENTS = {
    "non_finite_action": NON_FINITE_ACTION,
    "bad_observation": BAD_OBSERVATION,
    "clipped": CLIPPED,
    "joint_margin": JOINT_MARGIN,
    "rate_limited": RATE_LIMITED,
    "workspace": WORKSPACE,
    "stale_observation": STALE_OBSERVATION,
    "deadline_misses": DEADLINE_MISSES,
    "estop": ESTOP,
    "hold": HOLD,
}
SAFE_STOP = STALE_OBSERVATION | DEADLINE_MISSES | ESTOP


def event_names(events: int) -> list[str]:
    return [name for name, bit in EVENTS.items() if events & bit]


def count_events(events: np.ndarray) -> dict[str, int]:
    """How many steps raised each event, from a log's per-step event column."""
    events = np.asarray(events, dtype=np.int64)
    return {name: int(np.count_nonzero(events & bit)) for name, bit in EVENTS.items()}


@dataclass(frozen=True)
class StepLimits:
    """SafetyLimits turned into arrays for one controller period (built once, before the loop)."""

    bound_low: np.ndarray
    bound_high: np.ndarray
    inner_low: np.ndarray  # bounds tightened by the joint margin on position dims
    inner_high: np.ndarray
    max_step: np.ndarray  # max change per period
    motion: np.ndarray  # bool mask of rate_dims
    ws_obs: np.ndarray
    ws_act: np.ndarray
    ws_low: np.ndarray
    ws_high: np.ndarray
    ws_scale: float
    stale_after: float
    max_consecutive_misses: int


def compile_limits(limits: SafetyLimits, period: float) -> StepLimits:
    low, high = np.array(limits.act_low), np.array(limits.act_high)
    motion = np.zeros(limits.act_dim, dtype=bool)
    motion[list(limits.rate_dims)] = True
    margin = np.where(motion, 0.0, limits.joint_margin)
    return StepLimits(
        bound_low=low,
        bound_high=high,
        inner_low=low + margin,
        inner_high=high - margin,
        max_step=np.array(limits.max_rate) * period,
        motion=motion,
        ws_obs=np.array(limits.workspace_obs, dtype=np.intp),
        ws_act=np.array(limits.workspace_act, dtype=np.intp),
        ws_low=np.array(limits.workspace_low, dtype=np.float64),
        ws_high=np.array(limits.workspace_high, dtype=np.float64),
        ws_scale=limits.workspace_scale,
        stale_after=limits.stale_after,
        max_consecutive_misses=limits.max_consecutive_misses,
    )


def hold_command(last_command: np.ndarray, lim: StepLimits) -> np.ndarray:
    """The safe state: keep every position target where it was, stop every motion dimension."""
    return np.where(lim.motion, 0.0, last_command)


def filter_action(
    action: np.ndarray, obs: np.ndarray, last_command: np.ndarray, lim: StepLimits
) -> tuple[np.ndarray, int]:
    """The command to send for the policy's raw `action`, and the events raised on the way.

    `last_command` is the command sent in the previous period (the robot's currently applied
    command before the first step); it always satisfies the bounds, so the rate window
    around it intersects them and the clipping order below cannot leave the bounds.
    """
    action = np.asarray(action, dtype=np.float64)
    if not np.isfinite(action).all():
        return hold_command(last_command, lim), NON_FINITE_ACTION | HOLD
    inner = np.minimum(np.maximum(action, lim.inner_low), lim.inner_high)
    command = np.minimum(np.maximum(inner, last_command - lim.max_step), last_command + lim.max_step)
    events = 0
    if (command != action).any():  # the common case is no change at all: classify only when needed
        if (action < lim.bound_low).any() or (action > lim.bound_high).any():
            events |= CLIPPED
        if (inner != np.minimum(np.maximum(action, lim.bound_low), lim.bound_high)).any():
            events |= JOINT_MARGIN
        if (command != inner).any():
            events |= RATE_LIMITED
    if lim.ws_act.size:
        workspace = limit_workspace(command, obs, lim)
        if workspace & BAD_OBSERVATION:
            return hold_command(last_command, lim), events | BAD_OBSERVATION | HOLD
        events |= workspace
    return command, events


def limit_workspace(command: np.ndarray, obs: np.ndarray, lim: StepLimits) -> int:
    """Shrink (in place) the workspace deltas of `command` so the end effector measured in `obs` never moves
    further outside the box; WORKSPACE if anything changed, BAD_OBSERVATION (nothing changed) if the position
    is not finite. The controller's safety layer and the robot process both apply it."""
    position = np.asarray(obs, dtype=np.float64)[lim.ws_obs]
    if not np.isfinite(position).all():
        return BAD_OBSERVATION
    # allowed delta per axis: up to the box face, and never outward once outside it
    up = np.maximum((lim.ws_high - position) / lim.ws_scale, 0.0)
    down = np.minimum((lim.ws_low - position) / lim.ws_scale, 0.0)
    delta = command[lim.ws_act]
    kept = np.minimum(np.maximum(delta, down), up)
    if (kept != delta).any():
        command[lim.ws_act] = kept
        return WORKSPACE
    return 0


def command_in_bounds(command: np.ndarray, lim: StepLimits) -> bool:
    """The robot process's check of what arrives: finite and inside the action bounds (for the hands, the
    joint limits). The controller's layer never sends anything else, so a miss means a broken controller."""
    return bool(np.isfinite(command).all() and (command >= lim.bound_low).all() and (command <= lim.bound_high).all())


def stop_reasons(obs_age: float, consecutive_misses: int, estop: bool, lim: StepLimits) -> int:
    """The safe-stop events raised by the controller's own state this period (0 = keep running).

    `not obs_age <= stale_after` also stops on a NaN age (a robot that never stamped its data).
    """
    events = 0
    if not obs_age <= lim.stale_after:
        events |= STALE_OBSERVATION
    if consecutive_misses > lim.max_consecutive_misses:
        events |= DEADLINE_MISSES
    if estop:
        events |= ESTOP
    return events
