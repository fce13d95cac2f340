"""Scripted expert for the Franka kitchen (open the microwave, then move the kettle), by Jacobian steering.

A kitchen action is a joint velocity per actuator, normalised to [-1, 1] over +-2 rad/s;
the env turns it into a position target `q + velocity * dt` for stiff, heavily damped
position servos. Such a servo closes only `1 - exp(-dt * kp / damping)` of the gap in one
control step and sags under gravity, so `_Arm.command` divides the wanted joint step by
that fraction and adds the sag (`qfrc_bias / kp`): a "move the hand 2 cm" step then lands
where it was aimed. The step itself is damped least squares on the hand site's 6-D
Jacobian, re-solved without any joint pinned at its limit (the arm starts with its
shoulder at one).

The expert grips the microwave handle from the front and pulls it round the hinge, then
grips the kettle's handle from the front, lifts it and carries it towards the back burner.
Each subtask counts once it is within 0.3 of its goal at any step. Everything is read from
the observation: the arm's pose from its observed joints (the env adds 1 mrad of noise to
them) on a scratch copy of the model, the door's angle and the kettle's pose, and the phase
from them each step, so a grip that slips (the handle drifts away from the hand) sends the
expert back to re-approach and noisy actions cost time rather than the episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

from awac_robot.demonstrators.simulators import KitchenSim
from awac_robot.envs import TaskEnv

OPEN, CLOSE = 1.0, -1.0
#: the observation starts with the arm's 9 joint angles (7 + 2 fingers), then their 9 speeds, then every object joint
ROBOT_JOINTS = 9
#: kettle position the env scores against (FrankaKitchen-v1 `OBS_ELEMENT_GOALS["kettle"][:3]`)
KETTLE_GOAL = np.array([-0.23, 0.75, 1.62])
UP = np.array([0.0, 0.0, 1.0])


def _frame(pointing: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """The hand rotation that points its fingers along `pointing` and closes them along `closing`."""
    z = pointing / np.linalg.norm(pointing)
    y = closing - (closing @ z) * z
    y /= np.linalg.norm(y)
    return np.column_stack([np.cross(y, z), y, z])


def _rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Small-angle rotation (axis * angle) taking `current` to `target`."""
    return 0.5 * np.sum([np.cross(current[:, i], target[:, i]) for i in range(3)], axis=0)


class _Arm:
    """Simulator access for the kitchen's Franka arm: hand pose and the action that moves it."""

    def __init__(self, env: TaskEnv) -> None:
        robot = cast(KitchenSim, env.unwrapped).robot_env
        self.model: mujoco.MjModel = robot.model
        self.data: mujoco.MjData = mujoco.MjData(self.model)  # posed by `see`; the live state is never read
        self.dt = float(robot.dt)
        self.velocity_scale = float(robot.act_rng[0])  # rad/s of an action of 1
        self.hand = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        kp = self.model.actuator_gainprm[:7, 0]
        self.kp = kp
        self.reach = 1.0 - np.exp(-self.dt * kp / self.model.dof_damping[:7])
        self.low, self.high = self.model.jnt_range[:7].T
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def see(self, obs: np.ndarray) -> None:
        """Pose the scratch model as the observation shows it: the arm's joints and speeds, the objects' joints."""
        d = self.data
        d.qpos[:ROBOT_JOINTS] = obs[:ROBOT_JOINTS]
        d.qvel[:ROBOT_JOINTS] = obs[ROBOT_JOINTS : 2 * ROBOT_JOINTS]
        d.qpos[ROBOT_JOINTS:] = obs[2 * ROBOT_JOINTS : 2 * ROBOT_JOINTS + self.model.nq - ROBOT_JOINTS]
        d.qvel[ROBOT_JOINTS:] = 0.0
        mujoco.mj_forward(self.model, d)

    def position(self) -> np.ndarray:
        return self.data.site_xpos[self.hand].copy()

    def rotation(self) -> np.ndarray:
        return self.data.site_xmat[self.hand].reshape(3, 3).copy()

    def fingers(self) -> np.ndarray:
        return self.data.qpos[7:9].copy()

    def command(self, target: np.ndarray, rotation: np.ndarray, fingers: float, plan: KitchenPlan) -> np.ndarray:
        """The action that moves the hand towards `target` (at most `plan.max_step`) and turns it to `rotation`."""
        step = target - self.position()
        distance = float(np.linalg.norm(step))
        if distance > plan.max_step:
            step *= plan.max_step / distance
        error = np.concatenate([step, plan.turn_gain * _rotation_error(self.rotation(), rotation)])
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.hand)
        jac = np.vstack([self._jacp[:, :7], self._jacr[:, :7]])
        q = self.data.qpos[:7]
        free = np.ones(7, dtype=bool)
        dq = np.zeros(7)
        for _ in range(7):
            # a joint pinned at its limit cannot help: re-solve with the others so they take up its share
            j = jac[:, free]
            dq[:] = 0.0
            dq[free] = j.T @ np.linalg.solve(j @ j.T + plan.damping**2 * np.eye(6), error)
            pinned = free & (((q <= self.low + 0.02) & (dq < 0)) | ((q >= self.high - 0.02) & (dq > 0)))
            if not pinned.any():
                break
            free &= ~pinned
        sag = self.data.qfrc_bias[:7] / self.kp
        velocity = (dq / self.reach + sag) / self.dt
        action = np.append(velocity / self.velocity_scale, [fingers, fingers])
        return np.clip(action, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class KitchenPlan:
    """Where the kitchen expert grips and how far it pulls and carries. Tuned on seeds 0-49."""

    #: largest hand step (m) per control step, and how hard orientation errors are corrected
    max_step: float = 0.04
    turn_gain: float = 0.5
    damping: float = 0.05
    #: how far in front of a handle (m) the open hand lines up before moving in
    stand_off: float = 0.12
    #: how far (m) off the line into a handle the hand may be at the line's start and still move in along it,
    #: and how much wider (m per m moved in) that corridor gets towards the handle
    lined_up: float = 0.01
    funnel: float = 0.25
    #: hand-to-handle distance (m) at which the open hand closes on a handle
    at_handle: float = 0.007
    #: hand-to-handle distance (m) within which a hand that has started to close keeps closing (beyond: slipped)
    slipped: float = 0.05
    #: finger opening (m, each side) under which the fingers have started to close, and (on average) have closed
    #: on a handle, and finger speed (m/s) under which they have stopped (the observed speeds jitter while pulling)
    closing_fingers: float = 0.037
    closed_fingers: float = 0.036
    still_fingers: float = 0.2
    #: how far ahead of the door's angle (rad) the pull aims, and the angle from which the door counts as open
    #: (success is within 0.3 of -0.75)
    pull_lead: float = 0.1
    door_open: float = -0.55
    #: how high (m) the kettle is lifted for the carry, and the height from which it counts as lifted
    lift: float = 0.07
    lifted: float = 0.05


class KitchenExpert:
    """Open the microwave door by its handle, then lift the kettle by its handle towards the back burner.

    A policy of the observation: the arm is posed from its observed joints on a scratch copy of
    the model, the door's angle and the kettle's pose are observed, and the phase is read from
    them each step (door not yet open: line up in front of its handle, move in along the line,
    close on it, pull it round; open: back the open hand away from it, then the same for the
    kettle, lift it, carry it, lower it). Whether the fingers are closing or closed on a handle
    is read from their observed opening and speed.
    """

    source = "scripted"

    def __init__(self, plan: KitchenPlan | None = None) -> None:
        self.plan = plan or KitchenPlan()
        self._arm: _Arm | None = None

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        arm = self._arm = _Arm(env)
        model, data = arm.model, arm.data
        mujoco.mj_kinematics(model, data)  # the model's own pose: the door shut, the kettle where the model has it
        door = model.joint("microwave")
        self._door = 2 * ROBOT_JOINTS + model.jnt_qposadr[door.id] - ROBOT_JOINTS
        self._hinge = data.xanchor[door.id].copy()
        # the handle bar's centre, and the door's outward normal (its thin axis, pointing from the door to the bar)
        self._bar0 = data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "microhandle_site")].copy()
        panel = _door_panel(model, int(model.jnt_bodyid[door.id]))
        normal = data.geom_xmat[panel].reshape(3, 3)[:, 1].copy()
        normal[2] = 0.0
        normal /= np.linalg.norm(normal)
        self._out0 = normal if normal @ (self._bar0 - data.geom_xpos[panel]) > 0 else -normal
        self._angle0 = float(data.qpos[model.jnt_qposadr[door.id]])
        self._kettle_handle = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "kettle_site")
        kettle = model.joint("kettle")
        self._kettle_q = model.jnt_qposadr[kettle.id]
        self._kettle = 2 * ROBOT_JOINTS + self._kettle_q - ROBOT_JOINTS

    def keep_episode(self) -> bool:
        return True

    @property
    def arm(self) -> _Arm:
        if self._arm is None:
            raise RuntimeError("call reset(env, obs) before act(obs)")
        return self._arm

    def _door_handle(self, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """The handle bar's centre and the door's outward direction with the door at `angle`."""
        turn = angle - self._angle0
        bar = self._hinge + _rotate_z(self._bar0 - self._hinge, turn)
        return bar, _rotate_z(self._out0, turn)

    def act(self, obs: np.ndarray) -> np.ndarray:
        arm, plan = self.arm, self.plan
        arm.see(obs)
        angle = float(obs[self._door])
        bar, out = self._door_handle(angle)
        if angle > plan.door_open:
            return self._open_door(obs, angle, bar, out)
        hand = arm.position()
        if np.linalg.norm(bar - hand) < plan.stand_off - 3 * plan.lined_up:
            # the door is open and the hand still at its handle: let go and back away along the door's outward direction
            return arm.command(bar + plan.stand_off * out, _frame(-out, np.cross(UP, out)), OPEN, plan)
        return self._move_kettle(obs)

    def _open_door(self, obs: np.ndarray, angle: float, bar: np.ndarray, out: np.ndarray) -> np.ndarray:
        arm, plan = self.arm, self.plan
        hand = arm.position()
        grip = self._grip(obs, bar, hand)
        if grip == "closed":
            fingers, target = CLOSE, self._door_handle(angle - plan.pull_lead)[0]
        elif grip == "closing":
            fingers, target = CLOSE, bar
        else:
            fingers, target = OPEN, self._approach(bar, out, hand)
        return arm.command(target, _frame(-out, np.cross(UP, out)), fingers, plan)

    def _move_kettle(self, obs: np.ndarray) -> np.ndarray:
        arm, plan = self.arm, self.plan
        hand = arm.position()
        handle = arm.data.site_xpos[self._kettle_handle].copy()
        forward = np.array([0.0, 1.0, 0.0])
        height = float(obs[self._kettle + 2]) - KETTLE_GOAL[2]  # above the burners (the kettle starts on one)
        goal = self._handle_at_goal(obs)
        grip = self._grip(obs, handle, hand)
        fingers, target = CLOSE, handle
        if grip == "closed":
            over_goal = np.linalg.norm(handle[:2] - goal[:2]) < plan.lined_up
            if over_goal:
                target = goal  # lower it on the back burner
            elif height < plan.lifted:
                target = handle + np.array([0.0, 0.0, plan.lift])
            else:
                target = goal + np.array([0.0, 0.0, plan.lift])
        elif grip == "open":
            fingers, target = OPEN, self._approach(handle, -forward, hand)
        # pointing forwards, fingers closing vertically round the kettle's horizontal handle
        return arm.command(target, _frame(forward, UP), fingers, plan)

    def _approach(self, handle: np.ndarray, out: np.ndarray, hand: np.ndarray) -> np.ndarray:
        """Where the open hand goes: along the line into the handle if it is on it, else to the line's start."""
        plan = self.plan
        start = handle + plan.stand_off * out
        along = float((hand - handle) @ out)
        off_line = float(np.linalg.norm(hand - handle - along * out))
        corridor = plan.lined_up + plan.funnel * max(plan.stand_off - along, 0.0)
        if off_line < corridor and -plan.lined_up < along < plan.stand_off + plan.lined_up:
            return handle
        return start

    def _grip(self, obs: np.ndarray, handle: np.ndarray, hand: np.ndarray) -> str:
        """Whether the hand is "closed" on the handle, "closing" on it, or "open" (away from it, or not yet at it)."""
        plan = self.plan
        distance = float(np.linalg.norm(handle - hand))
        opening, speed = obs[7:9], np.abs(obs[ROBOT_JOINTS + 7 : ROBOT_JOINTS + 9])
        if distance > plan.slipped:
            return "open"
        if float(np.mean(opening)) < plan.closed_fingers and np.all(speed < plan.still_fingers):
            return "closed"
        if distance < plan.at_handle or np.any(opening < plan.closing_fingers):
            return "closing"
        return "open"

    def _handle_at_goal(self, obs: np.ndarray) -> np.ndarray:
        """Where the kettle's handle is with the kettle at its goal, turned as it is now (scratch kinematics)."""
        d, q = self.arm.data, self._kettle_q
        d.qpos[q : q + 3] = KETTLE_GOAL
        mujoco.mj_kinematics(self.arm.model, d)
        goal = d.site_xpos[self._kettle_handle].copy()
        d.qpos[q : q + 3] = obs[self._kettle : self._kettle + 3]
        mujoco.mj_kinematics(self.arm.model, d)
        return goal


def _door_panel(model: mujoco.MjModel, body: int) -> int:
    """The microwave door's collision box (its thinnest axis is the door's normal)."""
    for geom in range(model.ngeom):
        if model.geom_bodyid[geom] == body and model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX:
            return geom
    raise RuntimeError("the kitchen model's microwave door has no box geom")


def _rotate_z(vector: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1], vector[2]])
