"""Scripted experts for the Fetch tabletop tasks, read from the flat observation alone.

Every controller is a function of the current observation alone (no latch, no step count):
when `collect` perturbs an action the next observation shows the damage and the expert
re-plans from there, which is what makes noisy demos mixed quality rather than garbage, and
what lets a policy that sees only the observation learn from them.

A Fetch action moves the mocap target by `action[:3] * 0.05` m; `action[3]` is +1 open,
-1 close. Positions here are in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from awac_robot.envs import TaskEnv

#: metres of mocap motion per unit of action (gymnasium-robotics Fetch `pos_ctrl *= 0.05`)
ACTION_SCALE = 0.05
OPEN, CLOSE = 1.0, -1.0


@dataclass(frozen=True)
class FetchGains:
    """Tuning shared by the tabletop experts; one place to change how assertive they are."""

    #: fraction of the remaining error removed per step (1.0 would overshoot under lag)
    gain: float = 0.8
    #: height above the block at which the gripper travels so it does not knock the block
    hover: float = 0.06
    #: xy distance under which the gripper counts as lined up with a waypoint
    xy_tol: float = 0.012
    #: height above the block under which the gripper is low enough to grasp or push
    z_tol: float = 0.008
    #: finger joint opening (each side) under which the fingers count as closed on the block
    closed_finger: float = 0.03
    #: how far behind the block's centre the gripper sits while pushing
    push_offset: float = 0.05


class FetchLayout:
    """Indices of the named observation entries, so the experts and the keyboard do not hard-code offsets."""

    def __init__(self, env: TaskEnv) -> None:
        names = env.config.obs_names
        self._at = {name: i for i, name in enumerate(names)}

    def has(self, prefix: str) -> bool:
        return f"{prefix}_x" in self._at

    def vec(self, obs: np.ndarray, prefix: str) -> np.ndarray:
        return np.array([obs[self._at[f"{prefix}_{axis}"]] for axis in "xyz"], dtype=np.float64)

    def scalar(self, obs: np.ndarray, name: str) -> float:
        return float(obs[self._at[name]])


def _move(grip: np.ndarray, target: np.ndarray, gripper: float, gains: FetchGains) -> np.ndarray:
    delta = gains.gain * (target - grip) / ACTION_SCALE
    return np.clip(np.append(delta, gripper), -1.0, 1.0).astype(np.float32)


class _FetchExpert:
    """Common plumbing: layout lookup and the `Demonstrator` protocol."""

    source = "scripted"

    def __init__(self, gains: FetchGains | None = None) -> None:
        self.gains = gains or FetchGains()
        self._layout: FetchLayout | None = None

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._layout = FetchLayout(env)

    def keep_episode(self) -> bool:
        return True

    @property
    def layout(self) -> FetchLayout:
        if self._layout is None:
            raise RuntimeError("call reset(env, obs) before act(obs)")
        return self._layout


class ReachExpert(_FetchExpert):
    """Straight to the goal: the baseline every other expert builds on."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        grip = self.layout.vec(obs, "grip_pos")
        goal = self.layout.vec(obs, "desired_goal")
        return _move(grip, goal, CLOSE, self.gains)


class PushExpert(_FetchExpert):
    """Get behind the block on the goal line (travelling high), drop to the table, push along the line.

    The push point is recomputed from the block's current position each step, so a block
    that slides off the line is chased back onto it.
    """

    def act(self, obs: np.ndarray) -> np.ndarray:
        g = self.gains
        grip = self.layout.vec(obs, "grip_pos")
        block = self.layout.vec(obs, "object_pos")
        goal = self.layout.vec(obs, "desired_goal")
        to_goal = goal[:2] - block[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 1e-3:
            return _move(grip, grip, CLOSE, g)
        u = to_goal / dist
        behind = block.copy()
        behind[:2] -= u * g.push_offset
        side = np.array([-u[1], u[0]])
        rel = grip[:2] - block[:2]
        along, across = float(rel @ u), float(rel @ side)
        in_lane = abs(across) < 0.015 and -g.push_offset - 0.03 < along < 0.0
        low = grip[2] < block[2] + g.z_tol + 0.01
        if in_lane and low:
            # push: advance along the line (no further than the goal), steering the lateral error out
            target = block.copy()
            target[:2] = grip[:2] + u * min(dist, 0.04) - side * across
            return _move(grip, target, CLOSE, g)
        lined_up = float(np.linalg.norm(grip[:2] - behind[:2])) < g.xy_tol
        if lined_up:
            return _move(grip, behind, CLOSE, g)
        if grip[2] < block[2] + g.hover - 0.01:
            # too low to cross over the block: go straight up first
            up = grip.copy()
            up[2] = block[2] + g.hover
            if float(np.linalg.norm(grip[:2] - block[:2])) > 0.08:
                up[:2] = behind[:2]
            return _move(grip, up, CLOSE, g)
        target = behind.copy()
        target[2] = block[2] + g.hover
        return _move(grip, target, CLOSE, g)


class PickPlaceExpert(_FetchExpert):
    """Hover over the block, descend open, close, then carry it to the goal (in the air if need be).

    Whether it is grasping is read from the observation each step, not latched: a block between
    the fingers (within 2 cm of the grip) is squeezed, the gripper held still while the fingers
    close and carried once they have; a block anywhere else is approached afresh with the
    gripper open.
    """

    def act(self, obs: np.ndarray) -> np.ndarray:
        g = self.gains
        grip = self.layout.vec(obs, "grip_pos")
        block = self.layout.vec(obs, "object_pos")
        goal = self.layout.vec(obs, "desired_goal")
        fingers = self.layout.scalar(obs, "gripper_finger_r") + self.layout.scalar(obs, "gripper_finger_l")
        offset = block - grip
        xy_gap = float(np.linalg.norm(offset[:2]))
        between_fingers = xy_gap < 0.02 and abs(offset[2]) < 0.02
        if between_fingers:
            if fingers > 2 * g.closed_finger:
                return _move(grip, grip, CLOSE, g)  # closing: hold still
            return _move(grip, goal + (grip - block), CLOSE, g)
        if xy_gap > g.xy_tol:
            # line up over the block, never descending while still far from it
            target = block.copy()
            target[2] = max(block[2] + g.hover * 0.5, grip[2]) if xy_gap > 0.03 else grip[2]
            return _move(grip, target, OPEN, g)
        return _move(grip, block, OPEN, g)
