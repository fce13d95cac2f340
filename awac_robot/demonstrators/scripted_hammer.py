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
  fully opposed, closed over `close_steps` control steps.
- The reach. Rigidly held, the face reaches the full nail depth for every board height only
  when aimed 1.5 cm off the nail head's centre towards the hand (`side`); aimed at the
  centre, most strikes stop a few millimetres short.

So once the hammer is held, the expert reads where it sits in the palm, and solves for the
four arm joints that put the face at a point in front of the nail head (`standoff`) and at a
point past the board (`through`, out of reach: the arm pushes as far as it can) on a scratch
copy of the simulator's kinematics (`_Reach`; the real state is never touched): a multi-start
solve when the hammer is first held, then a warm-started one every step with the hammer's
current pose in the palm, so a hammer that slips is re-aimed. It moves to the first, waits
there until the arm is still, then swings to the second; a swing that stalls short of the
goal backs off and strikes again (success rates: docs/demonstrators.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mujoco
import numpy as np

from awac_robot.demonstrators.scripted_adroit import AdroitExpert, Hand
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

    Tuned on seeds 0-49; run `bench/demonstrators.py --tasks hammer` before and after changing any.
    """

    #: height (m) above the handle at which the open hand travels before descending on it
    hover: float = 0.06
    #: sideways (x) and height distances (m) under which the palm counts as over / at the handle
    x_tolerance: float = 0.01
    z_tolerance: float = 0.01
    #: control steps over which the fingers close on the handle (closing faster drops the hammer)
    close_steps: int = 25
    #: palm-to-hammer distance (m) over which a held hammer counts as dropped
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
    ready_step: float = 0.1
    swing_step: float = 0.5
    #: arm joint speed (rad/s) under which the arm counts as still (ready to strike, or stalled); high
    #: enough that the jitter `collect --noise` adds does not keep a noisy arm from ever striking
    still: float = 0.3
    #: face-to-standoff distance (m) under which a still arm strikes
    ready_tolerance: float = 0.04
    #: how far (m) the face must have moved past the standoff point along the axis before a stall ends a swing
    swung: float = 0.02


class _Reach:
    """Arm joints that put the hammer's face at a point, solved on a scratch copy of the kinematics.

    The hammer is treated as fixed in the palm at the pose it has now; the real simulator
    state is only read. Damped least squares on a finite-difference Jacobian, clipped to the
    joint ranges; `solve` from many starts finds the reachable branch, `refine` follows it.
    """

    def __init__(self, hand: Hand) -> None:
        self.hand = hand
        self.model, self.data = hand.model, hand.data
        self.scratch = mujoco.MjData(self.model)
        self.arm = np.array([hand.index[name] for name in ARM_JOINTS])
        self.low, self.high = self.model.jnt_range[hand.act_joint[self.arm]].T
        self.palm = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "palm")
        self.hammer = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "Object")
        self._face_in_palm = np.zeros(3)

    def hold(self) -> None:
        """Take the hammer's current pose in the palm as the one to aim with."""
        d = self.data
        palm_rot = d.xmat[self.palm].reshape(3, 3)
        face = d.xpos[self.hammer] + d.xmat[self.hammer].reshape(3, 3) @ FACE
        self._face_in_palm = palm_rot.T @ (face - d.xpos[self.palm])

    def face(self, arm: np.ndarray) -> np.ndarray:
        s = self.scratch
        s.qpos[:] = self.data.qpos
        s.qpos[self.hand.act_qpos[self.arm]] = arm
        mujoco.mj_kinematics(self.model, s)
        return s.xpos[self.palm] + s.xmat[self.palm].reshape(3, 3) @ self._face_in_palm

    def refine(self, aim: np.ndarray, arm: np.ndarray, iterations: int = 5) -> np.ndarray:
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

    def solve(self, aim: np.ndarray) -> np.ndarray:
        starts = itertools.product((-0.3, -0.05, 0.2), (-0.25, 0.0, 0.25), (-0.5, -0.2), (-0.5, 0.0, 0.4))
        candidates = [self.refine(aim, np.array(start), iterations=15) for start in starts]
        best = min(candidates, key=lambda arm: float(np.linalg.norm(aim - self.face(arm))))
        return self.refine(aim, best, iterations=30)


class HammerExpert(AdroitExpert):
    """Grasp the handle, turn and raise the hammer in front of the nail, strike until the nail is in.

    Memory: how far the fingers have closed (`_grip`, rises while the palm is on the handle,
    back to 0 when the hammer is dropped), whether a strike is under way (`_swinging`), and
    the last joint solutions (warm starts). Everything else is read from the state each step.
    """

    arm_joints = ("ARRx", "ARRy")

    def __init__(self, plan: HammerPlan | None = None) -> None:
        super().__init__()
        self.plan = plan or HammerPlan()

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        super().reset(env, obs)
        self._spec = env.config.spec
        hand = self.hand
        self._reach = _Reach(hand)
        self._nail_depth = hand.model.jnt_qposadr[hand.joint_id("nail_dir")]
        # the nail slides along its body's -z; its +z points out of the board towards the hand
        axis = hand.data.xmat[mujoco.mj_name2id(hand.model, mujoco.mjtObj.mjOBJ_BODY, "nail")].reshape(3, 3)[:, 2]
        self._axis = axis.copy()
        self._side = self.plan.side * np.cross([0.0, 0.0, 1.0], self._axis)
        self._grip = 0.0
        self._swinging = False
        self._ready: np.ndarray | None = None
        self._hit: np.ndarray | None = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        hand, plan = self.hand, self.plan
        palm, hammer = hand.palm(), hand.body_pos("Object")
        if np.linalg.norm(hammer - palm) > plan.dropped:
            self._grip, self._swinging, self._ready = 0.0, False, None
        targets = hand.joints()
        if self._grip < 1.0:
            self._grasp(targets, palm, hammer)
        else:
            self._strike(targets, driven=bool(SUCCESS_FROM_OBS["hammer"](obs[None, :], self._spec)[0]))
        targets[hand.fingers] = hand.curl(self._grip, HAMMER_GRIP)
        return hand.command(targets)

    def _grasp(self, targets: np.ndarray, palm: np.ndarray, handle: np.ndarray) -> None:
        """Hover over the handle, descend on it, close the fingers slowly (the wrist held bent, unflexed)."""
        hand, plan = self.hand, self.plan
        over = abs(palm[0] - handle[0]) < plan.x_tolerance and palm[2] < handle[2] + plan.hover + plan.z_tolerance
        goal = handle if over or self._grip > 0 else handle + np.array([0.0, 0.0, plan.hover])
        if self._grip > 0 or (over and abs(palm[2] - handle[2]) < plan.z_tolerance):
            self._grip = min(1.0, self._grip + 1.0 / plan.close_steps)
        hand.steer(targets, np.clip(plan.steer_gain * (goal - palm), -plan.max_step, plan.max_step))
        targets[hand.index["WRJ1"]] = plan.grasp_wrist
        targets[hand.index["WRJ0"]] = 0.0

    def _strike(self, targets: np.ndarray, driven: bool) -> None:
        """Aim the face in front of the nail, wait for the arm to settle, swing through; again if it stalls short."""
        hand, plan, reach = self.hand, self.plan, self._reach
        reach.hold()
        head = hand.site("S_target")
        ready_aim = head + plan.standoff * self._axis + self._side
        # past the board, measured from where the head started: out of reach, so the arm keeps pushing
        hit_aim = head + (hand.data.qpos[self._nail_depth] - plan.through) * self._axis + self._side
        if self._ready is None or self._hit is None:
            self._ready, self._hit = reach.solve(ready_aim), reach.solve(hit_aim)
        else:
            self._ready, self._hit = reach.refine(ready_aim, self._ready), reach.refine(hit_aim, self._hit)
        arm = reach.arm
        now = targets[arm]
        still = float(np.abs(hand.data.qvel[hand.act_dof[arm]]).max()) < plan.still
        face = reach.face(now)
        past_standoff = float((ready_aim - face) @ self._axis)
        if self._swinging and still and not driven and past_standoff > plan.swung:
            self._swinging = False  # stalled short of the goal: back off and strike again
        elif not self._swinging and still and np.linalg.norm(face - ready_aim) < plan.ready_tolerance:
            self._swinging = True
        goal, step = (self._hit, plan.swing_step) if self._swinging else (self._ready, plan.ready_step)
        targets[arm] = now + np.clip(goal - now, -step, step)
