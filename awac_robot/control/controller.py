"""The controller process: a fixed-rate loop of read -> infer -> safety layer -> send -> sleep.

Every period the loop reads the newest observation, decides whether a safe stop is due
(stale observation, too many deadline misses in a row, e-stop), runs the policy, passes
the action through the safety layer and sends the command, then sleeps to the next
absolute period boundary. A safe stop latches: the robot is told to hold its pose and
every later period repeats the hold until the run ends. A signal (SIGTERM, SIGINT, the
supervisor dying) or the supervisor's stop request holds and then ends the loop; so does an
exception inside it. Each step's log row is on disk before the next period starts
(runlog.py), so a killed controller leaves its whole log behind.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from awac_robot.control.channels import (
    CONTROLLER_LAYOUT,
    HIST_BINS,
    STATE_DONE,
    STATE_HELD,
    STATE_RUNNING,
    SUPERVISOR_LAYOUT,
    Channels,
)
from awac_robot.control.limits import DeployConfig, check_config
from awac_robot.control.robot import RobotInterface, ShmRobot
from awac_robot.control.rt import next_boundary, set_realtime, sleep_until
from awac_robot.control.runlog import RunLog, controller_columns
from awac_robot.control.safety import EVENTS, HOLD, compile_limits, filter_action, hold_command, stop_reasons
from awac_robot.envs import get_spec
from awac_robot.onnx_policy import OnnxPolicy
from awac_robot.processes import die_with_parent

#: the supervisor's status display is refreshed from a slot written this often (seconds)
STATUS_EVERY = 0.02
START_TIMEOUT = 60.0
_EVENT_BITS = tuple(EVENTS.values())


@dataclass(frozen=True)
class ControllerConfig:
    policy: str
    deploy: DeployConfig
    duration: float | None
    log_path: str
    channel_names: dict[str, str]
    parent_pid: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ControllerConfig:
        data = json.loads(text)
        return cls(**{**data, "deploy": DeployConfig.from_dict(data["deploy"])})


class Controller:
    """The loop and its bookkeeping (log rows, event counts, latency histogram, status slot)."""

    def __init__(
        self, policy: OnnxPolicy, robot: RobotInterface, channels: Channels, config: DeployConfig, log: RunLog
    ) -> None:
        self.policy, self.robot, self.channels, self.config, self.log = policy, robot, channels, config, log
        spec = robot.spec
        self.lim = compile_limits(config.limits, config.period)
        self.exit_requested = False  # set by signal handlers: hold, then end the loop
        self._sup = np.zeros(SUPERVISOR_LAYOUT.size)
        self._status = np.zeros(CONTROLLER_LAYOUT.size)
        self._hist = self._status[CONTROLLER_LAYOUT["latency_hist"]]
        self._event_counts = self._status[CONTROLLER_LAYOUT["events"]]
        self._nan_action = np.full(spec.act_dim, np.nan, dtype=np.float32)

    def request_exit(self, *_: object) -> None:
        self.exit_requested = True

    def run(self, duration: float | None, parent_pid: int | None = None) -> None:
        """The loop; whatever ends it (including an exception), the robot is told to hold on the way out."""
        try:
            self._loop(duration, parent_pid)
        finally:
            self.robot.hold()

    def _loop(self, duration: float | None, parent_pid: int | None) -> None:
        cfg, lim, robot, log = self.config, self.lim, self.robot, self.log
        period, spin, estop_file, prewarm = cfg.period, cfg.spin, cfg.estop_file, cfg.prewarm
        obs, _ = robot.read_observation()  # also refreshes applied_command()
        for _ in range(50):  # the first runs of a session allocate; keep that out of the loop
            self.policy(obs)
        last = np.clip(robot.applied_command(), lim.bound_low, lim.bound_high)
        sup, stop_i, estop_i = self._sup, SUPERVISOR_LAYOUT["stop"].start, SUPERVISOR_LAYOUT["estop"].start
        supervisor, sup_version = self.channels.supervisor, -1
        held, consecutive, misses, stop_events = False, 0, 0, 0
        boundary = time.perf_counter()
        end = boundary + duration if duration else math.inf
        next_status = boundary
        while True:
            t_wake = time.perf_counter()
            if supervisor.version() != sup_version:  # a version check costs far less than a read
                sup_version = supervisor.read(sup)
            finished = t_wake >= end
            leaving = (
                finished
                or self.exit_requested
                or sup[stop_i] != 0.0
                or (parent_pid is not None and os.getppid() != parent_pid)
            )
            obs, stamp = robot.read_observation()
            estop = (leaving and not finished) or sup[estop_i] != 0.0
            estop = estop or (estop_file is not None and os.path.exists(estop_file))
            reasons = stop_reasons(t_wake - stamp, consecutive, estop, lim)
            t_infer = 0.0
            if reasons and not held:
                held, stop_events = True, reasons
            if held or leaving:  # the last step of every run is a hold too
                command, events, raw, mode = hold_command(last, lim), reasons | stop_events | HOLD, self._nan_action, 2
                robot.hold()
            else:
                t0 = time.perf_counter()
                raw = self.policy(obs)
                t_infer = time.perf_counter() - t0
                command, events = filter_action(raw, obs, last, lim)
                robot.send_command(command)
                mode = 1
            t_sent = time.perf_counter()
            boundary_next, missed = next_boundary(boundary, period, t_sent)
            row = log.row
            row["t_boundary"][0] = boundary
            row["t_wake"][0] = t_wake
            row["t_infer"][0] = t_infer
            row["t_sent"][0] = t_sent
            row["obs_stamp"][0] = stamp
            row["obs"][0] = obs
            row["raw_action"][0] = raw
            row["command"][0] = command
            row["applied"][0] = robot.applied_command()
            row["mode"][0] = mode
            row["events"][0] = events
            row["missed"][0] = missed
            log.append()
            last = command
            misses += missed
            consecutive = consecutive + missed if missed else 0
            self._count(events, t_sent - t_wake)
            if t_sent >= next_status or leaving:
                self._publish_status(STATE_HELD if held else STATE_RUNNING, log.steps, misses, consecutive)
                next_status = t_sent + STATUS_EVERY
            if leaving:
                break
            boundary = boundary_next
            if prewarm:
                # a dry run of the step shortly before the boundary brings the model, the slots and
                # the safety layer back into the caches that other processes evicted while this one slept
                sleep_until(boundary - prewarm, 0.0)
                dry_obs, _ = robot.read_observation()
                filter_action(self.policy(dry_obs), dry_obs, last, lim)
            sleep_until(boundary, spin)
        self._publish_status(STATE_DONE, log.steps, misses, consecutive)

    def _count(self, events: int, latency: float) -> None:
        if events:
            for i, bit in enumerate(_EVENT_BITS):
                if events & bit:
                    self._event_counts[i] += 1
        micros = latency * 1e6
        index = int(4 * math.log2(micros)) if micros > 1.0 else 0
        self._hist[min(index, HIST_BINS - 1)] += 1

    def _publish_status(self, state: float, steps: int, misses: int, consecutive: int) -> None:
        status, lay = self._status, CONTROLLER_LAYOUT
        status[lay["stamp"]] = time.perf_counter()
        status[lay["state"]] = state
        status[lay["step"]] = steps
        status[lay["misses"]] = misses
        status[lay["consecutive_misses"]] = consecutive
        self.channels.controller.write(status)


def controller_process_main(cfg: ControllerConfig) -> None:
    """Entry point of the controller process: `python -m awac_robot.control.controller CONFIG_JSON`."""
    die_with_parent(cfg.parent_pid)
    spec = get_spec(cfg.deploy.task)
    check_config(cfg.deploy, spec)
    policy = OnnxPolicy(cfg.policy)
    policy.check_spec(spec)
    channels = Channels.attach(cfg.channel_names, spec)
    deadline = time.monotonic() + START_TIMEOUT
    while channels.obs.version() == 0:  # the robot process starts alongside; its first observation starts the loop
        if time.monotonic() > deadline or os.getppid() != cfg.parent_pid:
            raise SystemExit(f"controller: no observation from the robot within {START_TIMEOUT:g} s")
        time.sleep(0.005)
    robot = ShmRobot(channels, spec)
    scheduling = set_realtime(cfg.deploy.priority)  # only now: loading the policy is no real-time work
    meta = {
        "task_spec": spec.to_dict(),
        "deploy": cfg.deploy.to_dict(),
        "policy": cfg.policy,
        "policy_metadata": asdict(policy.metadata),
        "period": cfg.deploy.period,
        "modes": {"1": "command", "2": "hold"},
        "event_bits": EVENTS,
        "scheduling": scheduling,
    }
    log = RunLog(Path(cfg.log_path), controller_columns(spec.obs_dim, spec.act_dim), meta)
    controller = Controller(policy, robot, channels, cfg.deploy, log)
    signal.signal(signal.SIGTERM, controller.request_exit)
    signal.signal(signal.SIGINT, controller.request_exit)
    exit_reason = "error"
    try:
        controller.run(cfg.duration, cfg.parent_pid)
        exit_reason = "signal" if controller.exit_requested else "normal"
    finally:
        log.close({"exit": exit_reason})
        channels.close()


if __name__ == "__main__":
    controller_process_main(ControllerConfig.from_json(sys.argv[1]))
