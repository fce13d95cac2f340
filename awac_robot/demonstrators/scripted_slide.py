"""Scripted expert for FetchSlide: line up behind the puck, rehearse the strike on a copy of the simulator, hit.

The slide goal is mostly out of the arm's reach, so the puck has to be struck and left to
glide, and a strike cannot be corrected once the puck is away. Two things make that hard
to script in closed form. The puck bounces off the gripper (it leaves at about 1.8 times
the gripper's speed), and that factor swings by +-10% with where in the 20 physics steps of
a control step the contact happens. And the table's pyramidal friction cone does not brake
along the velocity: it brakes the larger velocity component alone until both are equal,
then both together, so the puck curves (`glide`).

So the expert rehearses: from the real simulator state it steps a scratch copy with the
env's own action code (`_Rehearsal`), once per candidate strike, until the puck is free,
and adds the glide in closed form. A bisection on the strike's strength and a secant on a
millimetre sideways shift of its first push (which turns the impact normal) pick the strike
that lands closest to the goal; it is then played open-loop, like a hit. Everything else is
decided from the state: wait while the puck slides, line up again when it stops short. The
gripper hits with the corner of its closed fingers that faces the goal, so the impact normal
runs from that corner through the puck's centre along the chosen direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

from awac_robot.demonstrators.scripted_fetch import ACTION_SCALE, CLOSE, FetchGains, FetchLayout
from awac_robot.demonstrators.simulators import FetchSim
from awac_robot.envs import TaskEnv

HOLD = np.array([0.0, 0.0, 0.0, CLOSE], dtype=np.float32)


def glide(velocity: np.ndarray, deceleration: float) -> np.ndarray:
    """Where a free puck moving at `velocity` (xy) comes to rest, relative to where it is, under pyramidal friction."""
    speed = np.abs(velocity)
    big = int(speed[1] > speed[0])
    fast, slow = speed[big], speed[1 - big]
    travel = np.zeros(2)
    travel[big] = (fast * fast + slow * slow) / (2 * deceleration)
    travel[1 - big] = fast * slow / deceleration
    return travel * np.sign(velocity)


def launch_direction(offset: np.ndarray, deceleration: float) -> np.ndarray:
    """The unit direction a puck must leave in to come to rest at `offset` (xy): `glide` inverted."""
    size = np.abs(offset)
    big = int(size[1] > size[0])
    along, across = size[big], size[1 - big]
    total, difference = np.sqrt(2 * deceleration * (along + across)), np.sqrt(2 * deceleration * (along - across))
    velocity = np.zeros(2)
    velocity[big], velocity[1 - big] = (total + difference) / 2, (total - difference) / 2
    velocity *= np.sign(offset)
    return velocity / np.linalg.norm(velocity)


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip((point - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a + t * ab - point))


def _toward(grip: np.ndarray, target: np.ndarray, gain: float) -> np.ndarray:
    """A move towards `target`, scaled down as a whole (not clipped per axis) so it keeps its direction."""
    delta = gain * (target - grip) / ACTION_SCALE
    largest = float(np.max(np.abs(delta)))
    if largest > 1.0:
        delta /= largest
    return np.append(delta, CLOSE).astype(np.float32)


class _Rehearsal:
    """Steps a scratch copy of the env's simulator state with the env's own action code."""

    def __init__(self, env: TaskEnv, deceleration: float) -> None:
        self.sim = cast(FetchSim, env.unwrapped)
        self.model: mujoco.MjModel = self.sim.model
        self.scratch = mujoco.MjData(self.model)
        self.deceleration = deceleration
        puck = self.model.joint("object0:joint")
        self._puck_q, self._puck_v = puck.qposadr[0], puck.dofadr[0]

    def landing(self, actions: list[np.ndarray]) -> np.ndarray:
        """Where the puck comes to rest (xy) after `actions` from the real state; the real state is untouched."""
        mujoco.mj_copyData(self.scratch, self.model, self.sim.data)
        real, self.sim.data = self.sim.data, self.scratch
        try:
            for action in actions:
                # the action exactly as the env will execute it: float32, clipped, then float64
                executed = np.clip(action, -1.0, 1.0).astype(np.float32).astype(np.float64)
                self.sim._set_action(executed)
                self.sim._mujoco_step(executed)
                self.sim._step_callback()
        finally:
            self.sim.data = real
        position = self.scratch.qpos[self._puck_q : self._puck_q + 2]
        return position + glide(self.scratch.qvel[self._puck_v : self._puck_v + 2], self.deceleration)


@dataclass(frozen=True)
class SlidePlan:
    """How the slide expert lines up and searches its strike. Tuned on seeds 0-49."""

    #: gap (m) between the striking corner and the puck's rim at the start of a strike
    gap: float = 0.03
    #: how close (m) to the start point, and how still (m/s), the gripper must be to strike
    lined_up: float = 0.005
    still: float = 0.05
    #: clearance (m) of a low path from the puck's centre (travel above it uses FetchGains.hover)
    clearance: float = 0.065
    #: puck speed (m/s) under which it counts as at rest, so a new strike may be lined up
    at_rest: float = 0.01
    #: backwards speed (as an action) after the strike, so the gripper never touches the puck again
    retreat: float = 0.4
    #: first push of the two-stage strike (soft, so the full-speed pushes that follow catch up
    #: and hit again); tried in this order when one impact cannot reach the goal
    first_pushes: tuple[float, ...] = (0.7, 0.5, 0.35)
    #: rehearsals for the strength (bisection) and for each sideways correction (secant)
    strength_steps: int = 7
    sideways_rounds: int = 3
    refine_steps: int = 6
    #: initial guess of lateral landing change (m) per metre of sideways shift of the first push
    sideways_slope: float = -20.0


class SlideExpert:
    """Strike the puck so it glides to the goal; strike again if it stops short."""

    source = "scripted"

    def __init__(self, plan: SlidePlan | None = None, gains: FetchGains | None = None) -> None:
        self.plan = plan or SlidePlan()
        self.gains = gains or FetchGains()  # travel speed and height, shared with the other tabletop experts
        self._layout: FetchLayout | None = None
        self._strike: list[np.ndarray] = []

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        sim = cast(FetchSim, env.unwrapped)
        model, data = sim.model, sim.data
        self._layout = FetchLayout(env)
        self._dt = float(sim.dt)
        self._threshold = float(sim.distance_threshold)
        puck = model.geom("object0").id
        self._radius = float(model.geom_size[puck][0])
        friction = max(model.geom_friction[puck][0], model.geom_friction[model.geom("table0").id][0])
        self._rehearsal = _Rehearsal(env, friction * float(np.linalg.norm(model.opt.gravity)))
        self._low, self._high = _finger_extent(model, data)
        self._strike = []

    def keep_episode(self) -> bool:
        return True

    @property
    def layout(self) -> FetchLayout:
        if self._layout is None:
            raise RuntimeError("call reset(env, obs) before act(obs)")
        return self._layout

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._strike:
            return self._strike.pop(0)
        layout, plan = self.layout, self.plan
        grip, puck = layout.vec(obs, "grip_pos"), layout.vec(obs, "object_pos")
        goal = layout.vec(obs, "desired_goal")
        grip_velocity = layout.vec(obs, "grip_velp") / self._dt
        puck_velocity = layout.vec(obs, "object_velp") / self._dt + grip_velocity  # object_velp is relative
        to_goal = goal[:2] - puck[:2]
        if np.linalg.norm(puck_velocity[:2]) > plan.at_rest or np.linalg.norm(to_goal) < 0.3 * self._threshold:
            return HOLD  # sliding (wait and see) or already there
        direction = launch_direction(to_goal, self._rehearsal.deceleration)
        start = np.append(self._start(puck, direction), puck[2])
        low = grip[2] < puck[2] + 0.015
        here = np.linalg.norm(grip[:2] - start[:2])
        if here < plan.lined_up and low and np.linalg.norm(grip_velocity) < plan.still:
            self._strike = self._best_strike(goal, puck, direction)
            return self._strike.pop(0)
        if (low and _segment_distance(puck[:2], grip[:2], start[:2]) > plan.clearance) or here < 0.004:
            return _toward(grip, start, self.gains.gain)  # a clear low path, or right above the start: go there
        high = puck[2] + self.gains.hover
        if grip[2] < high - 0.01:
            return _toward(grip, np.append(grip[:2], high), self.gains.gain)  # up first, then over the puck
        return _toward(grip, np.append(start[:2], high), self.gains.gain)

    def _start(self, puck: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Gripper xy that puts its corner facing `direction` `gap` short of the puck's rim, on the line of centres."""
        corner = np.where(direction >= 0, self._high, self._low)
        return puck[:2] - direction * (self._radius + self.plan.gap) - corner

    def _actions(self, direction: np.ndarray, shift: float, first: float | None, strength: float) -> list[np.ndarray]:
        """A strike: one push at `strength` (first None), or a soft first push then three at `strength`.

        The first push also shifts the gripper `shift` metres sideways, which turns the impact normal.
        """
        scaled = direction / np.max(np.abs(direction))
        sideways = np.array([-direction[1], direction[0]])
        pushes = [scaled * (strength if first is None else first) + sideways * shift / ACTION_SCALE]
        pushes += [scaled * strength] * (1 if first is None else 3)
        actions = [np.append(push, [0.0, CLOSE]) for push in pushes]
        actions += [np.append(-direction * self.plan.retreat, [0.0, CLOSE])] * 3 + [HOLD]
        return [np.clip(a, -1.0, 1.0).astype(np.float32) for a in actions]

    def _miss(
        self, goal: np.ndarray, direction: np.ndarray, strike: tuple[float, float | None, float]
    ) -> tuple[float, float, float]:
        """Rehearsed landing error of a strike: along the direction, sideways, and in all."""
        error = self._rehearsal.landing(self._actions(direction, *strike)) - goal[:2]
        return (
            float(error @ direction),
            float(error @ np.array([-direction[1], direction[0]])),
            float(np.linalg.norm(error)),
        )

    def _strength(
        self,
        goal: np.ndarray,
        direction: np.ndarray,
        shift: float,
        first: float | None,
        window: tuple[float, float],
        steps: int,
    ) -> tuple[float, float, float]:
        """Bisect the strength for zero error along the direction: (total miss, sideways miss, strength) of the best."""
        low, high = window
        best = (np.inf, 0.0, high)
        for _ in range(steps):
            middle = 0.5 * (low + high)
            along, sideways, total = self._miss(goal, direction, (shift, first, middle))
            if total < best[0]:
                best = (total, sideways, middle)
            low, high = (low, middle) if along > 0 else (middle, high)
        return best

    def _best_strike(self, goal: np.ndarray, puck: np.ndarray, direction: np.ndarray) -> list[np.ndarray]:
        plan = self.plan
        # one impact if a full-strength one reaches the goal, else the two-stage strike that does
        first = next(
            (f for f in (None, *plan.first_pushes) if self._miss(goal, direction, (0.0, f, 1.0))[0] >= 0),
            plan.first_pushes[0],
        )
        total, sideways, strength = self._strength(goal, direction, 0.0, first, (0.1, 1.0), plan.strength_steps)
        best = (total, 0.0, strength)
        shifts, misses = [0.0], [sideways]
        for _ in range(plan.sideways_rounds):
            if abs(misses[-1]) < 0.1 * self._threshold:
                break
            slope = plan.sideways_slope
            if len(shifts) > 1 and shifts[-1] != shifts[-2]:
                measured = (misses[-1] - misses[-2]) / (shifts[-1] - shifts[-2])
                slope = measured if abs(measured) > 1.0 else slope
            shift = float(np.clip(shifts[-1] - misses[-1] / slope, -0.006, 0.006))
            window = (max(best[2] - 0.12, 0.05), min(best[2] + 0.12, 1.0))
            total, sideways, strength = self._strength(goal, direction, shift, first, window, plan.refine_steps)
            shifts.append(shift)
            misses.append(sideways)
            if total < best[0]:
                best = (total, shift, strength)
        return self._actions(direction, best[1], first, best[2])


def _finger_extent(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
    """The closed fingers' xy footprint relative to the grip site: lowest and highest corner offsets."""
    grip = data.site_xpos[model.site("robot0:grip").id][:2]
    low, high = np.full(2, np.inf), np.full(2, -np.inf)
    for name in ("robot0:l_gripper_finger_link", "robot0:r_gripper_finger_link"):
        body = model.body(name).id
        for geom in range(model.ngeom):
            if model.geom_bodyid[geom] == body and model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX:
                half = np.abs(data.geom_xmat[geom].reshape(3, 3)) @ model.geom_size[geom]
                low = np.minimum(low, data.geom_xpos[geom][:2] - half[:2] - grip)
                high = np.maximum(high, data.geom_xpos[geom][:2] + half[:2] - grip)
    return low, high
