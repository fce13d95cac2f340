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
Each subtask counts once it is within 0.3 of its goal at any step, so the door may swing
back after the hand lets go. The phase is latched, but a grip that slips (the handle
drifts away from the hand) sends the expert back to re-approach, so noisy actions cost time
rather than the episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

from awac_robot.demonstrators.simulators import KitchenSim
from awac_robot.envs import TaskEnv

OPEN, CLOSE = 1.0, -1.0
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
        self.data: mujoco.MjData = robot.data
        self.dt = float(robot.dt)
        self.velocity_scale = float(robot.act_rng[0])  # rad/s of an action of 1
        self.hand = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        kp = self.model.actuator_gainprm[:7, 0]
        self.kp = kp
        self.reach = 1.0 - np.exp(-self.dt * kp / self.model.dof_damping[:7])
        self.low, self.high = self.model.jnt_range[:7].T
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

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
    """Where the kitchen expert grips and how far it pulls and carries. Tuned on seeds 0-9."""

    #: largest hand step (m) per control step, and how hard orientation errors are corrected
    max_step: float = 0.04
    turn_gain: float = 0.5
    damping: float = 0.05
    #: how far in front of a handle (m) the open hand lines up before moving in
    stand_off: float = 0.12
    #: hand-to-target distances (m) that count as lined up in front of, and at, a handle
    lined_up: float = 0.01
    at_handle: float = 0.007
    #: hand-to-handle distance (m) beyond which a grip counts as slipped
    slipped: float = 0.05
    #: finger opening (m, each side) and speed (m/s) under which the fingers have closed on a handle
    closed_fingers: float = 0.036
    still_fingers: float = 0.01
    #: how far ahead of the door's angle (rad) the pull aims, and the angle at which it lets go
    #: (success is within 0.3 of -0.75)
    pull_lead: float = 0.1
    door_open: float = -0.55
    #: how high (m) the kettle is lifted for the carry
    lift: float = 0.07


class KitchenExpert:
    """Open the microwave door by its handle, then lift the kettle by its handle towards the back burner."""

    source = "scripted"

    def __init__(self, plan: KitchenPlan | None = None) -> None:
        self.plan = plan or KitchenPlan()
        self._arm: _Arm | None = None
        self._phase = "door_front"

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        arm = self._arm = _Arm(env)
        model, data = arm.model, arm.data
        door = model.joint("microwave")
        self._door_angle = model.jnt_qposadr[door.id]
        self._hinge = data.xanchor[door.id].copy()
        # the handle bar's centre, and the door's outward normal (its thin axis, pointing from the door to the bar)
        self._bar0 = data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "microhandle_site")].copy()
        panel = _door_panel(model, int(model.jnt_bodyid[door.id]))
        normal = data.geom_xmat[panel].reshape(3, 3)[:, 1].copy()
        normal[2] = 0.0
        normal /= np.linalg.norm(normal)
        self._out0 = normal if normal @ (self._bar0 - data.geom_xpos[panel]) > 0 else -normal
        self._angle0 = float(data.qpos[self._door_angle])
        self._kettle_handle = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "kettle_site")
        kettle = model.joint("kettle")
        self._kettle = model.jnt_qposadr[kettle.id]
        self._kettle0 = data.qpos[self._kettle : self._kettle + 3].copy()
        self._handle_goal = data.site_xpos[self._kettle_handle] + (KETTLE_GOAL - self._kettle0)
        self._phase = "door_front"

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
        if self._phase.startswith("door"):
            return self._open_door()
        return self._move_kettle()

    def _open_door(self) -> np.ndarray:
        arm, plan = self.arm, self.plan
        hand = arm.position()
        angle = float(arm.data.qpos[self._door_angle])
        bar, out = self._door_handle(angle)
        if self._phase in ("door_close", "door_pull") and np.linalg.norm(bar - hand) > plan.slipped:
            self._phase = "door_front"  # the handle slipped out of the hand: line up again
        if self._phase == "door_pull" and angle <= plan.door_open:
            self._phase = "door_release"
        fingers, target = OPEN, bar
        if self._phase == "door_front":
            target = bar + plan.stand_off * out
            if np.linalg.norm(target - hand) < plan.lined_up:
                self._phase = "door_in"
        elif self._phase == "door_in":
            if np.linalg.norm(bar - hand) < plan.at_handle:
                self._phase = "door_close"
        elif self._phase == "door_close":
            fingers = CLOSE
            if self._fingers_closed():
                self._phase = "door_pull"
        elif self._phase == "door_pull":
            fingers = CLOSE
            bar, out = self._door_handle(angle - plan.pull_lead)
            target = bar
        else:  # door_release: open the hand and back away along the door's outward direction
            target = bar + plan.stand_off * out
            if np.linalg.norm(target - hand) < 3 * plan.lined_up:
                self._phase = "kettle_front"
        return arm.command(target, _frame(-out, np.cross(UP, out)), fingers, plan)

    def _move_kettle(self) -> np.ndarray:
        arm, plan = self.arm, self.plan
        hand = arm.position()
        handle = arm.data.site_xpos[self._kettle_handle].copy()
        height = float(arm.data.qpos[self._kettle + 2])
        holding = ("kettle_close", "kettle_lift", "kettle_carry", "kettle_lower")
        if self._phase in holding and np.linalg.norm(handle - hand) > plan.slipped:
            self._phase = "kettle_front"
        forward = np.array([0.0, 1.0, 0.0])
        fingers, target = CLOSE, handle
        if self._phase == "kettle_front":
            fingers, target = OPEN, handle - plan.stand_off * forward
            if np.linalg.norm(target - hand) < plan.lined_up:
                self._phase = "kettle_in"
        elif self._phase == "kettle_in":
            fingers = OPEN
            if np.linalg.norm(handle - hand) < plan.at_handle:
                self._phase = "kettle_close"
        elif self._phase == "kettle_close":
            if self._fingers_closed():
                self._phase = "kettle_lift"
        elif self._phase == "kettle_lift":
            target = handle + np.array([0.0, 0.0, plan.lift])
            if height > self._kettle0[2] + plan.lift - 0.02:
                self._phase = "kettle_carry"
        elif self._phase == "kettle_carry":
            target = self._handle_goal + np.array([0.0, 0.0, plan.lift])
            if np.linalg.norm(handle[:2] - self._handle_goal[:2]) < plan.lined_up:
                self._phase = "kettle_lower"
        elif self._phase == "kettle_lower":
            target = self._handle_goal
            if height < self._kettle0[2] + 0.01:
                self._phase = "kettle_release"
        else:  # kettle_release: let go and back off
            fingers, target = OPEN, handle - plan.stand_off * forward
        # pointing forwards, fingers closing vertically round the kettle's horizontal handle
        return arm.command(target, _frame(forward, UP), fingers, plan)

    def _fingers_closed(self) -> bool:
        arm, plan = self.arm, self.plan
        speed = np.abs(arm.data.qvel[7:9])
        return bool(np.all(arm.fingers() < plan.closed_fingers) and np.all(speed < plan.still_fingers))


def _door_panel(model: mujoco.MjModel, body: int) -> int:
    """The microwave door's collision box (its thinnest axis is the door's normal)."""
    for geom in range(model.ngeom):
        if model.geom_bodyid[geom] == body and model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX:
            return geom
    raise RuntimeError("the kitchen model's microwave door has no box geom")


def _rotate_z(vector: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1], vector[2]])
