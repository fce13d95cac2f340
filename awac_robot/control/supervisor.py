"""The supervisor: starts the robot and controller processes, watches their heartbeats, stops them cleanly.

It is the only process a person talks to. It refuses a policy made for another task before
anything starts, prints a status line every second (rate, latency percentiles from the
controller's histogram, misses, safety events), turns Ctrl-C into a stop (the controller
holds, then the robot stops), and e-stops the controller if the robot goes silent. The
children die with it: they ask Linux for SIGTERM on parent death and also poll their
parent pid every period, so a killed supervisor never leaves a controller driving a robot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from awac_robot.control.channels import (
    CONTROLLER_LAYOUT,
    HIST_BINS,
    ROBOT_LAYOUT,
    STATE_DONE,
    STATE_STARTING,
    SUPERVISOR_LAYOUT,
    Channels,
    read_fields,
)
from awac_robot.control.controller import ControllerConfig
from awac_robot.control.limits import DeployConfig
from awac_robot.control.runlog import load_log, summarize
from awac_robot.control.safety import EVENTS
from awac_robot.envs import get_spec
from awac_robot.onnx_policy import OnnxPolicy

#: a child whose heartbeat is older than this (seconds) is considered hung
HEARTBEAT_TIMEOUT = 0.5
START_TIMEOUT = 60.0
STOP_TIMEOUT = 3.0


class DeployError(RuntimeError):
    """A process failed to start or stopped unexpectedly; the message says which and how."""


@dataclass
class DeployResult:
    log_path: Path
    summary: dict[str, Any]
    robot: dict[str, int]
    controller_exitcode: int | None


def hist_percentile(hist: np.ndarray, q: float) -> float:
    """Upper edge (us) of the histogram bin holding the q-th fraction of samples (bins of a quarter octave)."""
    total = hist.sum()
    if total == 0:
        return float("nan")
    index = int(np.searchsorted(np.cumsum(hist), q * total))
    return 2 ** (min(index, HIST_BINS - 1) / 4 + 0.25)


class Child:
    """A child process started as `python -m MODULE ARGS`: it imports only what it needs (not the CLI)."""

    def __init__(self, name: str, module: str, *args: str) -> None:
        self.name = name
        self.popen = subprocess.Popen([sys.executable, "-m", module, *args])
        self.pid = self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def end(self) -> None:
        """Wait for the child to finish by itself, then SIGTERM, then SIGKILL."""
        for stop in (None, self.popen.terminate, self.popen.kill):
            if stop is not None:
                stop()
            try:
                self.popen.wait(STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                continue


class Supervisor:
    """One deployment: the policy, its config and the log it will leave behind."""

    def __init__(
        self,
        policy: Path,
        config: DeployConfig,
        duration: float | None,
        log_path: Path,
        seed: int = 0,
        out: TextIO | None = None,
    ) -> None:
        self.spec = get_spec(config.task)
        OnnxPolicy(policy).check_spec(self.spec)  # refuse here, in one line, before any process starts
        if log_path.exists():
            raise DeployError(f"{log_path} already holds a run log: choose another --log (logs are never overwritten)")
        self.policy, self.config, self.duration, self.log_path = policy, config, duration, log_path
        self.seed, self.out = seed, out or sys.stdout
        self.channels: Channels | None = None
        self.robot_pid: int | None = None
        self.controller_pid: int | None = None
        self._command = np.zeros(SUPERVISOR_LAYOUT.size)

    def estop(self) -> None:
        """Supervisor e-stop: the controller holds within one period and stays held."""
        self._send("estop")

    def _send(self, key: str) -> None:
        assert self.channels is not None
        self._command[SUPERVISOR_LAYOUT[key]] = 1.0
        self.channels.supervisor.write(self._command)

    def run(self, on_tick: Callable[[Supervisor, dict[str, np.ndarray]], None] | None = None) -> DeployResult:
        """Run until the controller ends (duration, e-stop signal) or Ctrl-C; `on_tick` sees each status read."""
        self.channels = Channels.create(self.spec)
        names, me = self.channels.names(), os.getpid()
        robot = controller = None
        try:
            seed = "none" if self.seed is None else str(self.seed)
            robot_priority = str(max(self.config.priority - 1, 0))
            robot = Child(
                "robot process",
                "awac_robot.control.robot",
                self.spec.name,
                json.dumps(names),
                seed,
                str(me),
                robot_priority,
            )
            cfg = ControllerConfig(str(self.policy), self.config, self.duration, str(self.log_path), names, me)
            # the controller loads its policy while the robot starts; its loop waits for the first observation
            controller = Child("controller process", "awac_robot.control.controller", cfg.to_json())
            self.robot_pid, self.controller_pid = robot.pid, controller.pid
            self._wait(lambda: self._controller_state() != STATE_STARTING, (robot, controller))
            print(
                f"deploy: robot pid {robot.pid} steps {self.spec.name} at {self.spec.control_rate:g} Hz; "
                f"controller pid {controller.pid} at {self.config.rate:g} Hz; Ctrl-C stops",
                file=self.out,
                flush=True,
            )
            try:
                self._watch(controller, on_tick)
            except KeyboardInterrupt:
                print("deploy: stopping (controller holds, then exits)", file=self.out, flush=True)
                self._send("stop")
        finally:
            if controller is not None and controller.is_alive():
                self._send("stop")
                controller.end()
            self._send("stop_robot")  # only once the controller has stopped sending
            if robot is not None:
                robot.end()
            robot_status = read_fields(self.channels.robot, ROBOT_LAYOUT)
            self.channels.close()
        if not self.log_path.exists():
            raise DeployError(f"controller exited with code {controller.exitcode}, wrote no log (its output is above)")
        columns, meta = load_log(self.log_path)
        return DeployResult(
            log_path=self.log_path,
            summary=summarize(columns, meta["period"]),
            robot={k: int(robot_status[k][0]) for k in ("sim_steps", "episodes", "successes", "overruns")},
            controller_exitcode=controller.exitcode,
        )

    def _controller_state(self) -> float:
        return float(read_fields(self.channels.controller, CONTROLLER_LAYOUT)["state"][0])

    def _wait(self, ready: Callable[[], bool], processes: tuple[Child, ...]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            for process in processes:
                if not process.is_alive():
                    raise DeployError(f"{process.name} exited with code {process.exitcode} while starting")
            if time.monotonic() > deadline:
                raise DeployError(f"{', '.join(p.name for p in processes)} did not start within {START_TIMEOUT:g} s")
            time.sleep(0.01)

    def _watch(self, controller: Child, on_tick: Callable | None) -> None:
        last_print, last_step, robot_lost = time.perf_counter(), 0.0, False
        while controller.is_alive():
            time.sleep(0.05)
            now = time.perf_counter()
            status = read_fields(self.channels.controller, CONTROLLER_LAYOUT)
            robot = read_fields(self.channels.robot, ROBOT_LAYOUT)
            if on_tick is not None:
                on_tick(self, status)
            if status["state"][0] == STATE_DONE:
                return
            if now - status["stamp"][0] > HEARTBEAT_TIMEOUT:
                print("deploy: controller heartbeat lost; stopping it", file=self.out, flush=True)
                controller.terminate()
                return
            if now - robot["stamp"][0] > HEARTBEAT_TIMEOUT and not robot_lost:
                robot_lost = True
                print("deploy: robot heartbeat lost; e-stop", file=self.out, flush=True)
                self.estop()
            if now - last_print >= 1.0:
                rate = (status["step"][0] - last_step) / (now - last_print)
                last_print, last_step = now, status["step"][0]
                print(self._status_line(status, robot, rate), file=self.out, flush=True)

    def _status_line(self, status: dict[str, np.ndarray], robot: dict[str, np.ndarray], rate: float) -> str:
        hist = status["latency_hist"]
        events = ", ".join(f"{name} {int(n)}" for name, n in zip(EVENTS, status["events"], strict=True) if n)
        state = {1.0: "running", 2.0: "HELD"}.get(float(status["state"][0]), "?")
        return (
            f"[{state}] step {int(status['step'][0])}  {rate:.0f} Hz  latency p50<{hist_percentile(hist, 0.5):.0f}us "
            f"p99<{hist_percentile(hist, 0.99):.0f}us  misses {int(status['misses'][0])}  "
            f"episodes {int(robot['episodes'][0])} (solved {int(robot['successes'][0])})  events: {events or 'none'}"
        )
