"""Scripted experts for the Adroit hand tasks, steering the arm with the simulator's Jacobian.

An Adroit action is a position target per actuator, normalised to [-1, 1] over the
actuator's ctrlrange. The arm actuators are affine (force = gain*ctrl - k*q), so the
joint angle a target settles at is not the target itself; `Hand.command` inverts that
map and adds the gravity the actuator must hold, which is what lets a plain
"move the palm 2 cm that way" step land where it was aimed.

Each expert decides its phase from the state every step (lever angle, hinge angle and
speed, where the ball is), plus at most a one-bit latch, never from the step count, so it
re-plans after the noise `collect` adds. The hand is far more sensitive to that noise than
the Fetch arm (see the bench): a noisy grasp or pull slips, and success drops steeply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

from awac_robot.demonstrators.simulators import MujocoSim
from awac_robot.envs import TaskEnv


class Hand:
    """Simulator access for one Adroit env: arm Jacobian steering and action normalisation."""

    def __init__(self, env: TaskEnv, arm_joints: tuple[str, ...], data: mujoco.MjData | None = None) -> None:
        """`data` None reads the live simulator state; a scratch `MjData` is posed by `see` from an observation."""
        sim = cast(MujocoSim, env.unwrapped)
        self.model: mujoco.MjModel = sim.model
        self.data: mujoco.MjData = sim.data if data is None else data
        m = self.model
        self.palm_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "S_grasp")
        self.act_joint = m.actuator_trnid[:, 0].copy()
        self.act_qpos = m.jnt_qposadr[self.act_joint]
        self.act_dof = m.jnt_dofadr[self.act_joint]
        self.act_mean = m.actuator_ctrlrange.mean(axis=1)
        self.act_rng = 0.5 * (m.actuator_ctrlrange[:, 1] - m.actuator_ctrlrange[:, 0])
        names = [m.joint(int(j)).name for j in self.act_joint]
        self.arm = np.array([names.index(n) for n in arm_joints])
        self.fingers = np.array([i for i in range(m.nu) if names[i][:2] in ("FF", "MF", "RF", "LF", "TH")])
        self.index = {name: i for i, name in enumerate(names)}
        self._jacp = np.zeros((3, m.nv))

    def see(self, hand_qpos: np.ndarray) -> None:
        """Pose the scratch model at the observed hand joint angles, standing still (the hand's qpos come first)."""
        self.data.qpos[: len(hand_qpos)] = hand_qpos
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def joints(self) -> np.ndarray:
        """Current angle of every actuated joint, in actuator order."""
        return self.data.qpos[self.act_qpos].copy()

    def palm(self) -> np.ndarray:
        return self.data.site_xpos[self.palm_site].copy()

    def site(self, name: str) -> np.ndarray:
        return self.data.site_xpos[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)].copy()

    def steer(self, targets: np.ndarray, palm_delta: np.ndarray, damping: float = 0.02) -> None:
        """Set the arm entries of `targets` so the palm moves by `palm_delta` (damped least squares)."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self.palm_site)
        jac = self._jacp[:, self.act_dof[self.arm]]
        now = self.joints()[self.arm]
        low, high = self.model.jnt_range[self.act_joint[self.arm]].T
        free = np.ones(len(self.arm), dtype=bool)
        step = np.zeros(len(self.arm))
        for _ in range(len(self.arm)):
            # a joint pinned at its limit cannot help: re-solve with the others so they take up its share
            j = jac[:, free]
            step[:] = 0.0
            step[free] = j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(3), palm_delta)
            pinned = free & (((now <= low + 0.01) & (step < 0)) | ((now >= high - 0.01) & (step > 0)))
            if not pinned.any():
                break
            free &= ~pinned
        targets[self.arm] = now + step

    def command(self, targets: np.ndarray) -> np.ndarray:
        """The normalised action that holds each actuated joint at `targets` (gravity compensated)."""
        m = self.model
        gain = m.actuator_gainprm[:, 0]
        bias0, bias1 = m.actuator_biasprm[:, 0], m.actuator_biasprm[:, 1]
        hold = self.data.qfrc_bias[self.act_dof]
        ctrl = (hold - bias0 - bias1 * targets) / gain
        return np.clip((ctrl - self.act_mean) / self.act_rng, -1.0, 1.0).astype(np.float32)

    def joint_id(self, name: str) -> int:
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)].copy()

    def curl(self, amount: float, shape: dict[str, float] | None = None) -> np.ndarray:
        """Finger joint targets `amount` of the way from a flat hand (0) to the grip `shape` (1; default a fist)."""
        targets = np.zeros(self.model.nu)
        for name, angle in (shape or FIST).items():
            targets[self.index[name]] = amount * angle
        return targets[self.fingers]


#: finger joint angles of a closed power grasp (flexion joints curled, thumb opposed)
FIST = {
    **{f"{finger}J{j}": 1.3 for finger in ("FF", "MF", "RF", "LF") for j in (2, 1, 0)},
    "THJ4": 0.6,
    "THJ3": 1.0,
}


class AdroitExpert:
    """Common plumbing for the hand experts: the `Demonstrator` protocol around a `Hand`."""

    source = "scripted"
    arm_joints: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._hand: Hand | None = None

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._hand = Hand(env, self.arm_joints)

    def keep_episode(self) -> bool:
        return True

    @property
    def hand(self) -> Hand:
        if self._hand is None:
            raise RuntimeError("call reset(env, obs) before act(obs)")
        return self._hand


@dataclass(frozen=True)
class DoorPlan:
    """Where the door expert grips, how hard it steers and when it lets go.

    The numbers were tuned on seeds 0-49 (and checked on 50-99); the fling is sensitive to
    them, so run `bench/demonstrators.py` before and after changing any.
    """

    #: palm position relative to the lever tip when gripping (a little in front of it)
    grip_offset: tuple[float, float, float] = (0.0, -0.03, 0.0)
    #: palm-to-grip distance (m) under which the fingers close on the lever. Memoryless on purpose:
    #: a palm dragged this far off the lever at the end of the arm's travel opens the hand, which
    #: is what lets go of the lever cleanly while the door swings on.
    grip_tolerance: float = 0.05
    #: palm-to-target error is multiplied by this before the Jacobian step (the arm lags its targets)
    steer_gain: float = 8.0
    max_step: float = 0.2
    #: lever angle (rad) past which the latch is free
    unlatched: float = 1.2
    #: forearm roll per step while turning the lever, and back while pulling (down to `unrolled`)
    roll_step: float = 0.4
    unroll_step: float = 0.3
    unrolled: float = 0.5
    #: how far ahead of the lever (m) the pull aims, and ahead of the palm once it lets go
    pull_lead: float = 0.08
    clear_lead: float = 0.2
    #: hinge angle (rad) and speed (rad/s) at which the hand lets go and the door swings on by itself
    release: float = 0.7
    fling_speed: float = 1.0
    #: hinge angle needed for success (AdroitHandDoor-v1: 1.35)
    open_angle: float = 1.35


class DoorExpert(AdroitExpert):
    """Grip the lever, roll the forearm to turn it, pull the door round, then fling it open.

    The arm cannot follow the lever all the way to 1.35 rad (the wrist and forearm yaw hit
    their limits near 1.1-1.3 rad depending on where the door is), so the expert pulls hard
    and lets go of a fast-swinging door at `release`: the door swings on past the success
    angle and stays there (no spring closes it). A door that stops short is gripped and
    pulled again.
    """

    arm_joints = ("ARTz", "ARRx", "ARRy", "ARRz", "WRJ1", "WRJ0")

    def __init__(self, plan: DoorPlan | None = None) -> None:
        super().__init__()
        self.plan = plan or DoorPlan()
        self._released = False

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        super().reset(env, obs)
        self._released = False
        hand = self.hand
        self._latch = hand.model.jnt_qposadr[hand.joint_id("latch")]
        self._hinge = hand.joint_id("door_hinge")
        self._hinge_q, self._hinge_v = hand.model.jnt_qposadr[self._hinge], hand.model.jnt_dofadr[self._hinge]

    def act(self, obs: np.ndarray) -> np.ndarray:
        hand, plan = self.hand, self.plan
        latch = hand.data.qpos[self._latch]
        angle = hand.data.qpos[self._hinge_q]
        speed = hand.data.qvel[self._hinge_v]
        palm = hand.palm()
        grip = hand.site("S_handle") + np.array(plan.grip_offset)
        # the way the door's front face moves as it opens: across the door, towards the hand
        hinge = hand.data.xanchor[self._hinge]
        along = hand.body_pos("door")[:2] - hinge[:2]
        along /= np.linalg.norm(along)
        opening = np.array([-along[1], along[0], 0.0])

        self._released = (self._released and (speed > 0.05 or angle >= plan.open_angle)) or (
            angle > plan.release and speed > plan.fling_speed
        )
        targets = hand.joints()
        roll = 0.0
        if self._released:
            goal, curl = palm + plan.clear_lead * opening, 0.0  # hand open, keep clear of the door
        elif np.linalg.norm(grip - palm) > plan.grip_tolerance:
            goal, curl = grip, 0.0
        elif latch < plan.unlatched and angle < 0.3:
            goal, curl, roll = grip, 1.0, plan.roll_step
        else:
            goal, curl = grip + plan.pull_lead * opening, 1.0
            if angle > 0.3:
                roll = -plan.unroll_step
        hand.steer(targets, np.clip(plan.steer_gain * (goal - palm), -plan.max_step, plan.max_step))
        arrz = hand.index["ARRz"]
        if roll > 0:
            targets[arrz] = hand.joints()[arrz] + roll
        elif roll < 0:
            targets[arrz] = max(hand.joints()[arrz] + roll, plan.unrolled)
        targets[hand.fingers] = hand.curl(curl)
        return hand.command(targets)


@dataclass(frozen=True)
class RelocatePlan:
    """Where the relocate expert holds the ball and how it moves the arm."""

    #: palm (grasp site) position relative to the ball when closing the hand on it
    grasp_offset: tuple[float, float, float] = (0.0, -0.045, 0.0)
    #: height (m) above the ball at which the open hand travels before descending on it
    hover: float = 0.08
    #: xy and z distances (m) under which the palm counts as over / at the ball
    xy_tolerance: float = 0.03
    z_tolerance: float = 0.01
    #: xy distance (m) over which a palm already halfway down goes back up to hover (wider: the arm's
    #: forward slide swings on, unobserved, after the palm is first over the ball)
    descent_tolerance: float = 0.05
    #: palm-to-ball distance (m) over which the ball counts as out of the hand
    dropped: float = 0.08
    #: how far the fingers close on the ball (1 = a full fist); the mean finger flexion (rad) from
    #: which a hand at the ball counts as closing on it, and the one it must reach before it lifts
    squeeze: float = 1.0
    closing: float = 0.1
    closed: float = 0.5
    #: fraction of the palm's remaining error aimed for per step, and the largest palm step (m)
    steer_gain: float = 2.0
    max_step: float = 0.2
    #: largest palm step (m) while carrying: a fast swing shakes the ball out of the hand
    carry_step: float = 0.3


class RelocateExpert(AdroitExpert):
    """Hover over the ball, descend with the hand open, close it, carry the ball to the target.

    A policy of the observation: the arm's pose comes from the observed joint angles (on a
    scratch copy of the model), the ball and target from the observed palm-relative vectors,
    and the phase from where the ball is and how far the observed fingers have closed (a hand
    at the ball or already closing on it keeps closing; a ball out of the hand sends it back
    open). No velocities are observed, so none are used: the arm is aimed at the goal itself
    (gain 1, steps capped) and its position servos settle without overshoot.
    """

    arm_joints = ("ARTz", "ARRx", "ARRy")

    def __init__(self, plan: RelocatePlan | None = None) -> None:
        super().__init__()
        self.plan = plan or RelocatePlan()

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._hand = Hand(env, self.arm_joints, mujoco.MjData(cast(MujocoSim, env.unwrapped).model))
        self._joints = self._hand.model.nq - 6  # the observation starts with every joint but the ball's six

    def act(self, obs: np.ndarray) -> np.ndarray:
        hand, plan = self.hand, self.plan
        hand.see(obs[: self._joints])
        palm = hand.palm()
        ball = palm - obs[self._joints : self._joints + 3]
        target = palm - obs[self._joints + 3 : self._joints + 6]
        grasp = ball + np.array(plan.grasp_offset)
        flexion = float(np.mean(hand.joints()[hand.fingers]))
        xy_gap, z_gap = float(np.linalg.norm(grasp[:2] - palm[:2])), abs(grasp[2] - palm[2])
        at_ball = xy_gap <= plan.xy_tolerance and z_gap <= plan.z_tolerance
        holding = bool(np.linalg.norm(ball - palm) < plan.dropped) and (at_ball or flexion > plan.closing)
        curl, limit = 0.0, plan.max_step
        if holding:
            curl, limit = plan.squeeze, plan.carry_step
            goal = target + (palm - ball) if flexion > plan.closed else grasp
        elif xy_gap > (plan.xy_tolerance if palm[2] > grasp[2] + plan.hover / 2 else plan.descent_tolerance):
            goal = grasp + np.array([0.0, 0.0, plan.hover])
        else:
            goal = grasp
        targets = np.zeros(hand.model.nu)  # every joint the expert does not steer held where the episode starts it
        hand.steer(targets, np.clip(plan.steer_gain * (goal - palm), -limit, limit))
        targets[hand.fingers] = hand.curl(curl)
        return hand.command(targets)
