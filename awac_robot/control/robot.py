"""The robot as the controller sees it, and the simulated robot process behind it.

`RobotInterface` is everything the controller needs from a robot; a hardware driver
implements these four methods (docs/deploy.md) and the controller, safety layer and
supervisor work unchanged. Here the robot is a separate process stepping the MuJoCo task in
real time at the task's control period, exchanging timestamped observations and commands
through shared-memory slots, the way a driver process would: the controller never steps
the simulator itself, so a slow simulator shows up as stale observations, not a slow loop.
The robot process is safe on its own (watchdog.py): it holds when fresh commands stop,
refuses commands outside the bounds, keeps the gripper in the workspace, and writes its
own record of every step (robot.runlog).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.control.channels import (
    MODE_HOLD,
    MODE_RUN,
    ROBOT_LAYOUT,
    SUPERVISOR_LAYOUT,
    Channels,
    command_layout,
    obs_layout,
)
from awac_robot.control.limits import DeployConfig, check_config, motion_dims
from awac_robot.control.rt import next_boundary, set_realtime, sleep_until
from awac_robot.control.runlog import Columns, RunLog
from awac_robot.control.watchdog import HOLD_REASONS, SUPERVISOR, RobotGuard
from awac_robot.envs import TaskEnv, get_spec, make_env
from awac_robot.processes import die_with_parent
from awac_robot.spec import TaskSpec


class RobotInterface(ABC):
    """What a controller needs from a robot (simulated or real).

    Contract for implementers:
      - `read_observation()` never blocks: it returns the newest observation (float32,
        shape (obs_dim,), the task's observation layout) and the `time.perf_counter()`
        time at which it was measured. The controller judges staleness from that stamp,
        so a driver must stamp at measurement, not at read.
      - `send_command(action)` never blocks: it hands the robot a command in the task's
        action units (shape (act_dim,), already checked by the safety layer); the robot
        applies the newest one at its own rate.
      - `hold()` puts the robot in its safe state by its own means: keep the current pose
        (position targets = current joint positions, motion commands = 0), never a jump. It
        must work even if the controller sends nothing afterwards, and the robot must hold by
        itself when no fresh command arrives for `command_timeout` (watchdog.py).
      - `applied_command()` is the command the robot was applying when the last observation
        read was measured (before the first command: its hold command), so the first
        command can be rate limited from it and every log row shows what the robot did.
    """

    spec: TaskSpec

    @abstractmethod
    def read_observation(self) -> tuple[np.ndarray, float]: ...

    @abstractmethod
    def send_command(self, action: np.ndarray) -> None: ...

    @abstractmethod
    def hold(self) -> None: ...

    @abstractmethod
    def applied_command(self) -> np.ndarray: ...


class ShmRobot(RobotInterface):
    """The controller's end of a robot process reached through shared-memory slots."""

    def __init__(self, channels: Channels, spec: TaskSpec) -> None:
        self.spec = spec
        self._obs_slot, self._cmd_slot = channels.obs, channels.command
        obs_l, cmd_l = obs_layout(spec), command_layout(spec)
        self._in = np.zeros(obs_l.size)
        self._obs64 = self._in[obs_l["obs"]]
        self._applied = self._in[obs_l["applied"]]
        self._stamp_i = obs_l["stamp"].start
        self._obs = np.zeros(spec.obs_dim, dtype=np.float32)
        self._out = np.zeros(cmd_l.size)
        self._cmd_stamp_i, self._mode_i = cmd_l["stamp"].start, cmd_l["mode"].start
        self._cmd_version_i, self._seq_i = cmd_l["obs_version"].start, cmd_l["seq"].start
        self._seq = 0
        self._cmd = self._out[cmd_l["command"]]
        #: how many observations the robot had published when the last one was read
        self.obs_version = 0

    def read_observation(self) -> tuple[np.ndarray, float]:
        version = self._obs_slot.read(self._in)
        if version > 0:  # -1 (robot descheduled mid-write): keep the previous observation, which ages
            self.obs_version = version
            self._obs[:] = self._obs64
        stamp = self._in[self._stamp_i] if self.obs_version else float("nan")
        return self._obs, float(stamp)

    def send_command(self, action: np.ndarray) -> None:
        self._cmd[:] = action
        self._publish(MODE_RUN)

    def hold(self) -> None:
        self._publish(MODE_HOLD)

    def applied_command(self) -> np.ndarray:
        return self._applied

    def _publish(self, mode: float) -> None:
        out = self._out
        self._seq += 1
        out[self._seq_i] = self._seq
        out[self._cmd_stamp_i] = time.perf_counter()
        out[self._mode_i] = mode
        out[self._cmd_version_i] = self.obs_version
        self._cmd_slot.write(out)


def pose_hold_target(env: TaskEnv, applied: np.ndarray, motion: tuple[int, ...]) -> np.ndarray:
    """The command that keeps the simulated robot where it is now.

    Adroit actions are normalised position targets (target = act_mean + a * act_rng), so the
    hold is the current joint positions in those units; any other task keeps its applied
    command with every motion dimension (delta, velocity) at 0.
    """
    sim: Any = env.unwrapped
    model = getattr(sim, "model", None)
    if hasattr(sim, "act_mean") and hasattr(sim, "act_rng") and model is not None and model.nu == applied.size:
        joints = model.actuator_trnid[:, 0]
        positions = sim.data.qpos[model.jnt_qposadr[joints]]
        return np.asarray(np.clip((positions - sim.act_mean) / sim.act_rng, -1.0, 1.0), dtype=np.float64)
    hold = applied.copy()
    hold[list(motion)] = 0.0
    return hold


def robot_columns(obs_dim: int, act_dim: int) -> Columns:
    """The robot's own record, one row per simulator step (what the watchdog decided and what was applied)."""
    return {
        "t": ((), np.float64),  # perf_counter s at the decision (after reading the command slot)
        "sim_step": ((), np.int64),
        "episode": ((), np.int32),
        "seq": ((), np.int64),  # sequence number of the last fresh command (0: none yet)
        "fresh": ((), np.int8),  # 1 if a fresh command arrived this step
        "mode": ((), np.int8),  # 1 the command was applied, 2 the robot held
        "held_by": ((), np.int32),  # hold reason bits (watchdog.HOLD_REASONS)
        "workspace": ((), np.int8),  # 1 if the workspace check shrank the command
        "command": ((act_dim,), np.float64),  # the last accepted command
        "applied": ((act_dim,), np.float64),  # what went to the simulator this step
        "obs": ((obs_dim,), np.float32),  # the observation the decision was made on (measured before the step)
    }


@dataclass(frozen=True)
class RobotConfig:
    """What the robot process is started with (JSON on its command line)."""

    deploy: DeployConfig
    channel_names: dict[str, str]
    seed: int | None
    parent_pid: int
    log_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RobotConfig:
        data = json.loads(text)
        return cls(**{**data, "deploy": DeployConfig.from_dict(data["deploy"])})


class SimRobot:
    """The robot process's loop: step the task every control period with the newest fresh command, record it."""

    def __init__(self, spec: TaskSpec, channels: Channels, config: DeployConfig, seed: int | None = None) -> None:
        self.spec = spec
        self.env = make_env(spec.name, seed=seed)
        self.ch = channels
        self.motion = motion_dims(spec)
        self.guard = RobotGuard(config.limits, spec.control_period)
        self._obs_l, self._cmd_l = obs_layout(spec), command_layout(spec)
        self._out = np.zeros(self._obs_l.size)
        self._cmd_in = np.zeros(self._cmd_l.size)
        self._sup = np.zeros(SUPERVISOR_LAYOUT.size)
        self._status = np.zeros(ROBOT_LAYOUT.size)
        self.sim_steps = self.episodes = self.successes = self.overruns = 0
        self.published = 0
        self.held_by = 0
        self.stop_requested = False

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def run(self, parent_pid: int, log: RunLog, spin: float = 0.0002) -> None:
        obs, _ = self.env.reset()
        applied = pose_hold_target(self.env, np.zeros(self.spec.act_dim), self.motion)
        holding = True
        episode_success = False
        period, cmd_l, row, guard = self.spec.control_period, self._cmd_l, log.row, self.guard
        stop_i, hold_i = SUPERVISOR_LAYOUT["stop_robot"].start, SUPERVISOR_LAYOUT["hold_robot"].start
        self._publish(obs, applied)
        boundary = time.perf_counter()
        while not self.stop_requested and os.getppid() == parent_pid:
            self.ch.supervisor.read(self._sup)
            if self._sup[stop_i]:
                break
            if self._sup[hold_i]:
                guard.latch(SUPERVISOR)
            got = self.ch.command.read(self._cmd_in) > 0
            now = time.perf_counter()
            cmd = self._cmd_in
            fresh = got and guard.update(
                int(cmd[cmd_l["seq"].start]),
                float(cmd[cmd_l["stamp"].start]),
                float(cmd[cmd_l["mode"].start]),
                int(cmd[cmd_l["obs_version"].start]),
                cmd[cmd_l["command"]],
                now,
                self.published,
            )
            target, self.held_by, shrunk = guard.target(obs)
            if target is not None:
                applied, holding = target, False
            elif not holding:
                # latch the pose once on entering the hold: re-reading it every step would follow any sag
                applied, holding = pose_hold_target(self.env, applied, self.motion), True
            row["t"][0], row["sim_step"][0], row["episode"][0] = now, self.sim_steps, self.episodes
            row["seq"][0], row["fresh"][0], row["mode"][0] = guard.last_seq, fresh, 2 if holding else 1
            row["held_by"][0], row["workspace"][0] = self.held_by, shrunk
            row["command"][0], row["applied"][0], row["obs"][0] = guard.command, applied, obs
            log.append()
            obs, _, terminated, truncated, info = self.env.step(applied)
            self.sim_steps += 1
            episode_success |= bool(info["success"])
            if terminated or truncated:
                self.episodes += 1
                self.successes += episode_success
                episode_success = False
                obs, _ = self.env.reset()
                if holding:
                    applied = pose_hold_target(self.env, applied, self.motion)
            self._publish(obs, applied)
            boundary, skipped = next_boundary(boundary, period, time.perf_counter())
            self.overruns += skipped
            sleep_until(boundary, spin)
        self.env.close()

    def _publish(self, obs: np.ndarray, applied: np.ndarray) -> None:
        out, lay = self._out, self._obs_l
        out[lay["stamp"]] = time.perf_counter()
        out[lay["sim_step"]] = self.sim_steps
        out[lay["episode"]] = self.episodes
        out[lay["obs"]] = obs
        out[lay["applied"]] = applied
        self.ch.obs.write(out)
        self.published += 1
        status, rl = self._status, ROBOT_LAYOUT
        status[rl["stamp"]] = out[lay["stamp"]][0]
        status[rl["sim_steps"]] = self.sim_steps
        status[rl["episodes"]] = self.episodes
        status[rl["successes"]] = self.successes
        status[rl["overruns"]] = self.overruns
        status[rl["held_by"]] = self.held_by
        self.ch.robot.write(status)


def robot_process_main(cfg: RobotConfig) -> None:
    """Entry point of the robot process: `python -m awac_robot.control.robot CONFIG_JSON`.

    Ctrl-C reaches every process in the terminal's group; the robot ignores it and keeps its
    pose until the supervisor, having stopped the controller first, tells it to stop.
    """
    die_with_parent(cfg.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = get_spec(cfg.deploy.task)
    check_config(cfg.deploy, spec)  # the robot trusts no one's limits check but its own
    channels = Channels.attach(cfg.channel_names, spec)
    robot = SimRobot(spec, channels, cfg.deploy, cfg.seed)
    signal.signal(signal.SIGTERM, robot.request_stop)
    scheduling = set_realtime(max(cfg.deploy.priority - 1, 0))  # after building the simulator: no real-time work
    meta = {
        "task_spec": spec.to_dict(),
        "deploy": cfg.deploy.to_dict(),
        "period": spec.control_period,
        "seed": cfg.seed,  # with the applied commands, what `awac-robot replay --log` re-simulates from
        "modes": {"1": "command applied", "2": "hold"},
        "hold_reasons": HOLD_REASONS,
        "scheduling": scheduling,
    }
    log = RunLog(Path(cfg.log_path), robot_columns(spec.obs_dim, spec.act_dim), meta)
    exit_reason = "error"
    try:
        robot.run(cfg.parent_pid, log)
        exit_reason = "signal" if robot.stop_requested else "normal"
    finally:
        log.close({"exit": exit_reason, "held_by": robot.held_by})
        channels.close()


if __name__ == "__main__":
    robot_process_main(RobotConfig.from_json(sys.argv[1]))
