"""Scripted expert for AdroitHandHammer: a slow power grasp on the handle, then strikes aimed on a copy of the arm.

What the model allows (gymnasium-robotics 1.4.2, `adroit_hammer.xml`): the arm only pitches
and yaws about a shoulder 0.7 m behind the table, so the palm never gets closer than about
0.15 m to the nail, which sticks out of a vertical board, horizontally towards the hand's
left. Only the hammer can bridge that gap, and only if it is turned in the horizontal plane
so its head points away from the hand: gripped as it lies (across the palm) and swung by
the arm's yaw plus the wrist's sideways bend, its striking face leads and meets the nail
head about 35 degrees off the nail's axis, which still drives it (the nail has 2.5 N of dry
friction and no spring).

Two things had to be found by experiment (docs/demonstrators.md):

- The grasp. The finger actuators of this env are weak (1 Nm/rad), and a fist that closes
  fast or curls the thumb little squeezes the thick handle out towards the wrist. What
  holds: the palm right on the handle, the wrist bent fully sideways (`grasp_wrist`) so the
  hammer sits turned a little in the palm, fingers curled at the middle joints, the thumb
  fully opposed, closed slowly (the finger targets lead the observed fingers by `close_lead`).
- The reach. Rigidly held, the face reaches the full nail depth for every board height only
  when aimed 1.5 cm off the nail head's centre towards the hand (`side`); aimed at the
  centre, most strikes stop a few millimetres short.

So once the hammer is held, the expert reads where it sits in the palm (from the observed
hammer pose and the palm posed at the observed joints), and solves for the four arm joints
that put the face at a point in front of the nail head (`standoff`) and at a point past the
board (`through`, out of reach: the arm pushes as far as it can) on a scratch copy of the
model's kinematics (`_Reach`), every step, from the observed arm angles and a few fixed
starts, so a hammer that slips is re-aimed. It moves to the first, strikes once the hammer
(whose velocity the observation holds) is still there, keeps swinging while the hammer moves
towards the board near the nail's axis, and backs off to strike again if it stalls short
(success rates: docs/demonstrators.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

from awac_robot.demonstrators.scripted_adroit import AdroitExpert, Hand
from awac_robot.demonstrators.simulators import MujocoSim
from awac_robot.envs import TaskEnv
from awac_robot.success_rules import SUCCESS_FROM_OBS

#: the striking face's centre in the hammer body's frame: the head is a cylinder of radius 0.02
#: and half-length 0.04 at x = -0.24 whose axis is the body's z, and the face on the `tool` site's side
#: (z < 0) is the one that points away from the hand when the hammer lies on the table
FACE = np.array([-0.24, 0.0, -0.04])

#: finger joint angles of the hammer grip: curled at the middle and end joints more than at the
#: knuckles (a fist pushes the handle out towards the wrist), the thumb opposed and wrapped round
HAMMER_GRIP = {
    **{f"{finger}J{j}": angle for finger in ("FF", "MF", "RF", "LF") for j, angle in ((2, 1.0), (1, 1.5), (0, 1.5))},
    "THJ4": 1.0,
    "THJ3": 1.3,
    "THJ1": 0.5,
    "THJ0": -0.5,
}

ARM_JOINTS = ("ARRx", "ARRy", "WRJ1", "WRJ0")


@dataclass(frozen=True)
class HammerPlan:
    """Where the hammer expert grips and aims, and how fast it moves.

    Tuned on seeds 0-49; run `bench/demonstrators.py --success-only --tasks hammer` before and after changing any.
    """

    #: height (m) above the handle at which the open hand travels before descending on it
    hover: float = 0.06
    #: sideways (x) and height distances (m) under which the palm counts as over / at the handle
    x_tolerance: float = 0.01
    z_tolerance: float = 0.01
    #: how far (as a share of the grip) the finger targets lead the observed fingers while closing (closing
    #: faster drops the hammer), the observed closure from which a hand at the handle counts as closing, and
    #: the one from which the hammer counts as held (the handle stops the fingers near 0.68)
    close_lead: float = 0.25
    closing: float = 0.05
    held: float = 0.6
    #: palm-to-hammer distance (m) over which the hammer counts as dropped
    dropped: float = 0.08
    #: wrist sideways bend (WRJ1, rad) while grasping: its upper limit, so the hammer sits turned in the palm
    grasp_wrist: float = 0.175
    #: proportional gain of the palm while approaching, and its largest step (m)
    steer_gain: float = 6.0
    max_step: float = 0.05
    #: where the face aims: this far (m) out along the nail's axis in front of its head before a strike,
    #: this far past the head's start during one, and this far off the head's centre towards the hand
    standoff: float = 0.04
    through: float = 0.12
    side: float = 0.015
    #: how far (rad) the arm joint targets may lead the joints while moving to the strike position, and
    #: while striking: the arm servos follow their targets with a lag, so this sets the arm's speed
    ready_step: float = 0.15
    swing_step: float = 0.5
    #: hammer speed (m/s, observed) under which the held hammer counts as still: ready to strike, or stalled
    still: float = 0.1
    #: face-to-standoff distance (m) under which a still hammer strikes
    ready_tolerance: float = 0.04
    #: a face moving towards the board faster than this (m/s) within `corridor` (m) of the nail's axis is
    #: a strike under way; one still and this far (m) past the standoff point has stalled and backs off
    swinging: float = 0.05
    corridor: float = 0.05
    swung: float = 0.02


def euler_matrix(euler: np.ndarray) -> np.ndarray:
    """The rotation of the Euler angles an Adroit observation gives (gymnasium-robotics' `quat2euler`): Rx Ry Rz."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(euler), np.sin(euler)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rx @ ry @ rz


class _Reach:
    """Arm joints that put the hammer's face at a point, solved on a scratch copy of the kinematics.

    The hammer is treated as fixed in the palm at the pose the observation shows. Damped least
    squares on a finite-difference Jacobian, clipped to the joint ranges, from the observed arm
    angles and a few fixed starts (the reachable branch differs with the board's height); the
    best of them is refined.
    """

    #: arm joint starts (ARRx, ARRy, WRJ1, WRJ0) besides the observed ones: the branches the solves land on
    STARTS = ((0.15, -0.25, 0.0, -0.6), (-0.2, -0.2, -0.2, 0.4), (0.05, -0.26, -0.5, -0.5))

    def __init__(self, hand: Hand) -> None:
        self.hand = hand
        self.model, self.data = hand.model, hand.data
        self.arm = np.array([hand.index[name] for name in ARM_JOINTS])
        self.low, self.high = self.model.jnt_range[hand.act_joint[self.arm]].T
        self.palm = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "palm")
        self.scratch = mujoco.MjData(self.model)
        self._face_in_palm = np.zeros(3)

    def hold(self, hammer_pos: np.ndarray, hammer_euler: np.ndarray) -> None:
        """Take the observed hammer pose, relative to the palm the hand is posed at, as the one to aim with."""
        d = self.data
        palm_rot = d.xmat[self.palm].reshape(3, 3)
        face = hammer_pos + euler_matrix(hammer_euler) @ FACE
        self._face_in_palm = palm_rot.T @ (face - d.xpos[self.palm])

    def face(self, arm: np.ndarray) -> np.ndarray:
        s = self.scratch
        s.qpos[:] = self.data.qpos
        s.qpos[self.hand.act_qpos[self.arm]] = arm
        mujoco.mj_kinematics(self.model, s)
        return s.xpos[self.palm] + s.xmat[self.palm].reshape(3, 3) @ self._face_in_palm

    def refine(self, aim: np.ndarray, arm: np.ndarray, iterations: int) -> np.ndarray:
        arm = arm.copy()
        jac = np.zeros((3, len(arm)))
        for _ in range(iterations):
            face = self.face(arm)
            for k in range(len(arm)):
                nudged = arm.copy()
                nudged[k] += 1e-4
                jac[:, k] = (self.face(nudged) - face) / 1e-4
            step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), aim - face)
            arm = np.clip(arm + step, self.low, self.high)
        return arm

    def solve(self, aim: np.ndarray, now: np.ndarray) -> np.ndarray:
        candidates = [self.refine(aim, np.array(start), iterations=8) for start in (tuple(now), *self.STARTS)]
        best = min(candidates, key=lambda arm: float(np.linalg.norm(aim - self.face(arm))))
        return self.refine(aim, best, iterations=8)


class HammerExpert(AdroitExpert):
    """Grasp the handle, turn and raise the hammer in front of the nail, strike until the nail is in.

    A policy of the observation: the hand is posed from the observed joints on a scratch copy
    of the model, the hammer's pose, its velocity, the nail head and the nail's depth are
    observed, and the phase is read from them each step: how far the observed fingers have
    closed (grasping, or held), and, once held, where the face is and how the hammer moves
    (still at the standoff point: strike; moving towards the board near the nail's axis: a
    strike under way; still past the standoff point with the nail not in: stalled, back off).
    """

    arm_joints = ("ARRx", "ARRy")

    def __init__(self, plan: HammerPlan | None = None) -> None:
        super().__init__()
        self.plan = plan or HammerPlan()

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        model = cast(MujocoSim, env.unwrapped).model
        hand = self._hand = Hand(env, self.arm_joints, mujoco.MjData(model))
        self._spec = env.config.spec
        self._reach = _Reach(hand)
        self._joints = (
            model.nq - 6
        )  # the observation starts with every joint but the hammer's six: the hand's, the nail's
        # the nail slides along its body's -z; its +z points out of the board towards the hand (the board only moves up
        # and down between episodes, so the axis is the model's)
        mujoco.mj_kinematics(model, hand.data)
        axis = hand.data.xmat[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "nail")].reshape(3, 3)[:, 2]
        self._axis = axis.copy()
        self._side = self.plan.side * np.cross([0.0, 0.0, 1.0], self._axis)
        grip = np.zeros(model.nu)
        for name, angle in HAMMER_GRIP.items():
            grip[hand.index[name]] = angle
        self._gripping = grip != 0.0
        self._grip = grip

    def act(self, obs: np.ndarray) -> np.ndarray:
        hand, plan, n = self.hand, self.plan, self._joints
        hand.see(obs[:n])
        hammer_velocity = obs[n : n + 3]
        palm, hammer, euler, head = obs[n + 6 : n + 9], obs[n + 9 : n + 12], obs[n + 12 : n + 15], obs[n + 15 : n + 18]
        closed = float(np.mean(hand.joints()[self._gripping] / self._grip[self._gripping]))
        in_hand = np.linalg.norm(hammer - palm) <= plan.dropped
        targets = hand.joints()
        if in_hand and closed >= plan.held:
            curl = 1.0
            driven = bool(SUCCESS_FROM_OBS["hammer"](obs[None, :], self._spec)[0])
            self._strike(targets, hammer, euler, hammer_velocity, head, obs[n - 1], driven)
        else:
            curl = self._grasp(targets, palm, hammer, closed if in_hand else 0.0)
        targets[hand.fingers] = hand.curl(curl, HAMMER_GRIP)
        return hand.command(targets)

    def _grasp(self, targets: np.ndarray, palm: np.ndarray, handle: np.ndarray, closed: float) -> float:
        """Hover over the handle, descend on it, close the fingers slowly (the wrist held bent, unflexed); the curl."""
        hand, plan = self.hand, self.plan
        over = abs(palm[0] - handle[0]) < plan.x_tolerance and palm[2] < handle[2] + plan.hover + plan.z_tolerance
        at_handle = over and abs(palm[2] - handle[2]) < plan.z_tolerance
        closing = closed >= plan.closing or at_handle
        goal = handle if over or closing else handle + np.array([0.0, 0.0, plan.hover])
        hand.steer(targets, np.clip(plan.steer_gain * (goal - palm), -plan.max_step, plan.max_step))
        targets[hand.index["WRJ1"]] = plan.grasp_wrist
        targets[hand.index["WRJ0"]] = 0.0
        return min(1.0, closed + plan.close_lead) if closing else 0.0

    def _strike(
        self,
        targets: np.ndarray,
        hammer: np.ndarray,
        euler: np.ndarray,
        velocity: np.ndarray,
        head: np.ndarray,
        depth: float,
        driven: bool,
    ) -> None:
        """Aim the face in front of the nail, wait for the hammer to be still, swing through; back off if it stalls."""
        plan, reach = self.plan, self._reach
        reach.hold(hammer, euler)
        ready_aim = head + plan.standoff * self._axis + self._side
        # past the board, measured from where the head started: out of reach, so the arm keeps pushing
        hit_aim = head + (depth - plan.through) * self._axis + self._side
        now = targets[reach.arm]
        face = reach.face(now)
        still = float(np.linalg.norm(velocity)) < plan.still
        past_standoff = float((ready_aim - face) @ self._axis)
        off_axis = face - ready_aim - ((face - ready_aim) @ self._axis) * self._axis
        if still:
            swing = (
                not driven and np.linalg.norm(face - ready_aim) < plan.ready_tolerance and past_standoff < plan.swung
            )
        else:
            swing = float(-velocity @ self._axis) > plan.swinging and float(np.linalg.norm(off_axis)) < plan.corridor
        aim, step = (hit_aim, plan.swing_step) if swing else (ready_aim, plan.ready_step)
        goal = reach.solve(aim, now)
        targets[reach.arm] = now + np.clip(goal - now, -step, step)
