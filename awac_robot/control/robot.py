"""The robot as the controller sees it, and the robot process that stands between the controller and any driver.

`RobotInterface` is everything the controller needs from a robot; `ShmRobot` is the
controller's end of the shared-memory slots. The robot process (`RobotLoop`) is the other
end: at the task's control period it reads the newest command and the newest measured state,
lets the guard (watchdog.py) decide, applies or holds through a driver (drivers/: the
simulated task, a robot over the network, yours), writes its own record of every step
(robot.runlog) and publishes the state with its measurement time and its heartbeat. The guard
and the record are the same for every driver, so a new robot is safe on its own without
copying them: it holds when fresh commands stop, refuses commands that are not finite, out of
bounds or too fast, keeps the gripper in the workspace, and holds while its state is stale.
The controller never talks to a driver itself, so a slow robot shows up as stale
observations, not a slow loop.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

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
from awac_robot.control.drivers import Measurement, RobotDriver, check_measurement
from awac_robot.control.drivers.loading import DriverDefinition, build_driver
from awac_robot.control.limits import DeployConfig, check_config
from awac_robot.control.rt import next_boundary, set_realtime, sleep_until
from awac_robot.control.runlog import Columns, RunLog
from awac_robot.control.watchdog import HOLD_REASONS, SUPERVISOR, RobotGuard
from awac_robot.envs import get_spec
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


def robot_columns(obs_dim: int, act_dim: int) -> Columns:
    """The robot's own record, one row per robot step (what the guard decided and what the robot applied)."""
    return {
        "t": ((), np.float64),  # perf_counter s at the decision (after reading the command slot)
        "sim_step": ((), np.int64),  # the robot step (the simulator's step for the simulated robot)
        "episode": ((), np.int32),  # episodes the driver had ended when the state decided on was measured
        "seq": ((), np.int64),  # sequence number of the last fresh command (0: none yet)
        "fresh": ((), np.int8),  # 1 if a fresh command arrived this step
        "mode": ((), np.int8),  # 1 the command was applied, 2 the robot held
        "held_by": ((), np.int32),  # hold reason bits (watchdog.HOLD_REASONS)
        "workspace": ((), np.int8),  # 1 if the workspace check shrank the command
        "rate_limited": ((), np.int8),  # 1 if the command in force moved faster than the rate limit and was limited
        "command": ((act_dim,), np.float64),  # the last accepted command
        "applied": ((act_dim,), np.float64),  # what the robot applied this step (as its driver reports it)
        "obs": ((obs_dim,), np.float32),  # the observation the decision was made on (measured before the step)
        "state_age": ((), np.float64),  # how old that observation was at the decision (s; NaN: nothing measured yet)
    }


#: a robot whose driver has measured nothing this long after starting is not there (s)
FIRST_STATE_TIMEOUT = 10.0
#: the simulated robot, the default driver
SIM_DRIVER = "awac_robot.control.drivers.sim:SimDriver"


@dataclass(frozen=True)
class RobotConfig:
    """What the robot process is started with (JSON on its command line)."""

    deploy: DeployConfig
    channel_names: dict[str, str]
    seed: int | None
    parent_pid: int
    log_path: str
    #: the driver to construct in the robot process (its class by import path and its checked settings)
    driver: DriverDefinition = DriverDefinition(SIM_DRIVER)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RobotConfig:
        data = json.loads(text)
        deploy, driver = DeployConfig.from_dict(data["deploy"]), DriverDefinition.from_dict(data["driver"])
        return cls(**{**data, "deploy": deploy, "driver": driver})


class RobotLoop:
    """The robot process's loop around any driver: every robot period, read the newest command and the newest
    measured state, let the guard decide, apply or hold through the driver, record it, publish the state."""

    def __init__(self, spec: TaskSpec, channels: Channels, config: DeployConfig, driver: RobotDriver) -> None:
        self.spec = spec
        self.driver = driver
        self.ch = channels
        self.guard = RobotGuard(config.limits, spec.control_period, config.period)
        self._obs_l, self._cmd_l = obs_layout(spec), command_layout(spec)
        self._out = np.zeros(self._obs_l.size)
        self._cmd_in = np.zeros(self._cmd_l.size)
        self._sup = np.zeros(SUPERVISOR_LAYOUT.size)
        self._status = np.zeros(ROBOT_LAYOUT.size)
        self.steps = self.overruns = 0
        self.published = 0
        self.held_by = 0
        self.stop_requested = False

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def run(self, parent_pid: int, log: RunLog, spin: float = 0.0002) -> None:
        driver, guard, row, cmd_l = self.driver, self.guard, log.row, self._cmd_l
        period = self.spec.control_period
        stop_i, hold_i = SUPERVISOR_LAYOUT["stop_robot"].start, SUPERVISOR_LAYOUT["hold_robot"].start
        state = driver.read()
        check_measurement(state, self.spec)
        self._publish(state)
        boundary = start = time.perf_counter()
        while not self.stop_requested and os.getppid() == parent_pid:
            if not self.published and boundary - start > FIRST_STATE_TIMEOUT:
                raise SystemExit(
                    f"robot: the driver measured no state within {FIRST_STATE_TIMEOUT:g} s: is the robot (or its "
                    "server) up and reachable?"
                )
            self.ch.supervisor.read(self._sup)
            if self._sup[stop_i]:
                break
            if self._sup[hold_i]:
                guard.latch(SUPERVISOR)
            got = self.ch.command.read(self._cmd_in) > 0
            state = driver.read()  # the newest state at the decision (a remote robot's may have arrived meanwhile)
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
            target, self.held_by, shrunk = guard.target(state.obs, now - state.stamp)
            if target is not None:
                driver.apply(target)
            else:
                driver.hold()
            after = driver.read()
            row["t"][0], row["sim_step"][0], row["episode"][0] = now, self.steps, state.episode
            row["seq"][0], row["fresh"][0], row["mode"][0] = guard.last_seq, fresh, 2 if target is None else 1
            row["held_by"][0], row["workspace"][0] = self.held_by, shrunk
            row["rate_limited"][0] = guard.limited and target is not None
            row["command"][0], row["applied"][0], row["obs"][0] = guard.command, after.applied, state.obs
            row["state_age"][0] = now - state.stamp
            log.append()
            self.steps += 1
            self._publish(after)
            boundary, skipped = next_boundary(boundary, period, time.perf_counter())
            self.overruns += skipped
            sleep_until(boundary, spin)

    def _publish(self, state: Measurement) -> None:
        """The state for the controller (once one was measured) and the status for the supervisor, whose
        heartbeat is the measurement's stamp: a robot whose state stops arriving is a robot lost."""
        measured = math.isfinite(state.stamp)
        if measured:
            out, lay = self._out, self._obs_l
            out[lay["stamp"]] = state.stamp
            out[lay["sim_step"]] = self.steps
            out[lay["episode"]] = state.episode
            out[lay["obs"]] = state.obs
            out[lay["applied"]] = state.applied
            self.ch.obs.write(out)
            self.published += 1
        status, rl = self._status, ROBOT_LAYOUT
        status[rl["stamp"]] = state.stamp if measured else 0.0
        status[rl["sim_steps"]] = self.steps
        status[rl["episodes"]] = state.episode
        status[rl["successes"]] = state.solved
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
    driver = build_driver(cfg.driver, spec, cfg.seed)
    robot = RobotLoop(spec, channels, cfg.deploy, driver)
    signal.signal(signal.SIGTERM, robot.request_stop)
    scheduling = set_realtime(max(cfg.deploy.priority - 1, 0))  # after building the driver: no real-time work
    meta = {
        "task_spec": spec.to_dict(),
        "deploy": cfg.deploy.to_dict(),
        "robot": asdict(cfg.driver),
        "period": spec.control_period,
        "seed": cfg.seed,  # the simulated robot: with the applied commands, what `awac-robot replay --log` re-simulates
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
        driver.close()
        channels.close()


if __name__ == "__main__":
    robot_process_main(RobotConfig.from_json(sys.argv[1]))
