"""The supervisor: starts the robot and controller processes, watches them, stops them cleanly.

It is the only process a person talks to. It refuses a policy made for another task and a
run folder it cannot write before anything starts, prints a status line every second (rate,
latency percentiles from the controller's histogram, misses, safety events), and turns Ctrl-C
into a stop (the controller holds, then the robot stops). When something goes wrong - a child
exits, a heartbeat stops, the robot holds on its own (watchdog, refused command) - it tells
the robot to hold (latched, whatever the controller still sends), ends the controller, stops
the robot and reports the run as failed. What it says also goes to `supervisor.log` in the run
folder. The children die with it: they ask Linux for SIGTERM on parent death and also poll
their parent pid every period, so a killed supervisor never leaves a controller driving a robot,
and the robot's watchdog holds once commands stop.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from awac_robot.control.drivers.loading import DriverDefinition, driver_class
from awac_robot.control.limits import DeployConfig, LimitsError, check_config, check_estop_file
from awac_robot.control.robot import SIM_DRIVER, RobotConfig
from awac_robot.control.runlog import load_log, summarize
from awac_robot.control.safety import EVENTS
from awac_robot.control.watchdog import LATCHED, hold_reason_names
from awac_robot.envs import get_spec
from awac_robot.onnx_policy import OnnxPolicy
from awac_robot.outputs import DEPLOY_RUN, OutputError, check_output_folder
from awac_robot.rollout import check_seed
from awac_robot.store_lock import LOCK_NAME, LockHeld, WriterLock

#: a child whose heartbeat is older than this (seconds) is considered hung
HEARTBEAT_TIMEOUT = 0.5
START_TIMEOUT = 60.0
STOP_TIMEOUT = 3.0
#: after a failure: how long the robot has to report its hold, and how long it holds before it is stopped (s)
HOLD_CONFIRM, HOLD_SETTLE = 1.0, 0.5
#: the files of a run folder
CONTROLLER_LOG, ROBOT_LOG, SUPERVISOR_LOG = "controller.runlog", "robot.runlog", "supervisor.log"


class DeployError(RuntimeError):
    """A deployment that cannot start (its run folder, a process); the message says which and how to fix it."""


@dataclass
class DeployResult:
    run_dir: Path
    summary: dict[str, Any]
    robot: dict[str, int]
    controller_exitcode: int | None
    robot_exitcode: int | None
    #: what went wrong, one line each; empty for a clean run
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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

    def end(self, grace: float = STOP_TIMEOUT) -> None:
        """Wait `grace` s for the child to finish by itself, then SIGTERM (with SIGCONT, so a stopped child
        can act on it and close its log), then SIGKILL."""
        try:
            self.popen.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                return
            self.popen.send_signal(sig)
            if sig == signal.SIGTERM:
                self.popen.send_signal(signal.SIGCONT)
            try:
                self.popen.wait(STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                continue


class Supervisor:
    """One deployment: the policy, its config and the run folder it will leave behind."""

    def __init__(
        self,
        policy: Path,
        config: DeployConfig,
        duration: float | None,
        run_dir: Path,
        seed: int | None = 0,
        out: TextIO | None = None,
        robot: DriverDefinition | None = None,
    ) -> None:
        self.spec = get_spec(config.task)
        check_config(config, self.spec)  # a config built in code gets the same checks as a limits file
        OnnxPolicy(policy).check_spec(self.spec)  # refuse here, in one line, before any process starts
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise DeployError(f"--duration must be a positive number of seconds (0: until Ctrl-C), got {duration}")
        check_seed(seed)
        try:
            check_estop_file(config)
        except LimitsError as exc:
            raise DeployError(str(exc)) from None
        self.robot = robot or DriverDefinition(SIM_DRIVER)
        driver_class(self.robot.target)  # a driver that cannot be imported is refused before anything starts
        self.policy, self.config, self.duration, self.run_dir = policy, config, duration, run_dir
        self.seed, self.out = seed, out or sys.stdout
        self.channels: Channels | None = None
        self.robot_pid: int | None = None
        self.controller_pid: int | None = None
        self._command = np.zeros(SUPERVISOR_LAYOUT.size)
        #: held from here to the end of `run`: a second deploy given the same --log is refused, not interleaved
        self._lock = WriterLock(run_dir)
        self._prepare_run_dir()
        #: what ended the run from outside (Ctrl-C, SIGTERM), for its last line
        self._stopped_by: str | None = None

    def _prepare_run_dir(self) -> None:
        """Create and lock the run folder now, so an unwritable or used --log fails before anything moves."""
        try:
            check_output_folder(self.run_dir, "--log", DEPLOY_RUN)
        except OutputError as exc:
            raise DeployError(str(exc)) from None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            had_lock = self._lock.path.exists()
            self._lock.acquire()  # first: a folder another deploy is writing is named as such
            if any(p.name != LOCK_NAME for p in self.run_dir.iterdir()):
                self._lock.release()
                if not had_lock:  # leave a folder that is not ours as it was
                    self._lock.path.unlink()
                raise DeployError(
                    f"{self.run_dir} already holds a run: choose another --log (run logs are never overwritten)"
                )
        except LockHeld as exc:
            raise DeployError(
                f"{self.run_dir} is the run folder of another deploy ({exc.holder}): choose another --log"
            ) from None
        except OSError as exc:
            raise DeployError(
                f"cannot write the run log folder {self.run_dir} ({exc.strerror or exc}): choose another --log"
            ) from None

    def say(self, message: str) -> None:
        """Print a line for the person at the terminal and keep it in the run folder's supervisor.log."""
        print(f"deploy: {message}", file=self.out, flush=True)
        self._note(message)

    def _note(self, message: str) -> None:
        with open(self.run_dir / SUPERVISOR_LOG, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")

    def estop(self) -> None:
        """Supervisor e-stop: the controller holds within one period and stays held."""
        self._send("estop")

    def hold_robot(self) -> None:
        """The robot holds within one of its periods, latched, whatever the controller sends."""
        self._send("hold_robot")

    def _send(self, key: str) -> None:
        assert self.channels is not None
        self._command[SUPERVISOR_LAYOUT[key]] = 1.0
        self.channels.supervisor.write(self._command)

    def run(self, on_tick: Callable[[Supervisor, dict[str, np.ndarray]], None] | None = None) -> DeployResult:
        """Run until the controller ends (duration, e-stop signal), something fails, or Ctrl-C.

        `on_tick` sees each status read. A failure is reported in the result's `problems`, not raised:
        the run folder then holds what the processes recorded up to it.
        """
        channels = self.channels = Channels.create(self.spec)
        names, me = channels.names(), os.getpid()
        robot = controller = None
        problems: list[str] = []
        # SIGTERM (a service manager, `kill`) stops the run as Ctrl-C does: held, logged, shared memory freed
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            robot_cfg = RobotConfig(self.config, names, self.seed, me, str(self.run_dir / ROBOT_LOG), self.robot)
            robot = Child("robot process", "awac_robot.control.robot", robot_cfg.to_json())
            cfg = ControllerConfig(
                str(self.policy), self.config, self.duration, str(self.run_dir / CONTROLLER_LOG), names, me
            )
            # the controller loads its policy while the robot starts; its loop waits for the first observation
            controller = Child("controller process", "awac_robot.control.controller", cfg.to_json())
            self.robot_pid, self.controller_pid = robot.pid, controller.pid
            self._wait(lambda: self._controller_state() != STATE_STARTING, (robot, controller))
            self.say(
                f"robot pid {robot.pid} steps {self.spec.name} at {self.spec.control_rate:g} Hz through "
                f"{self.robot.target}; "
                f"controller pid {controller.pid} at {self.config.rate:g} Hz; limits {self.config.source}; "
                f"run folder {self.run_dir}; Ctrl-C stops"
            )
            try:
                problems = self._watch(controller, robot, on_tick)
            except KeyboardInterrupt:
                self._stopped_by = self._stopped_by or "Ctrl-C"
                self.say(f"stopping on {self._stopped_by} (controller holds, then exits)")
                self._send("stop")
        except DeployError as exc:
            problems = [str(exc)]
        except KeyboardInterrupt:
            self._stopped_by = self._stopped_by or "Ctrl-C"
            problems = [f"stopped by {self._stopped_by} while starting"]
            self.say(problems[-1])
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
            if problems and robot is not None:
                self._confirm_hold(robot, problems)
            if controller is not None and controller.is_alive():
                self._send("stop")
                controller.end(0.0 if problems else STOP_TIMEOUT)
            self._send("stop_robot")  # only once the controller has stopped sending
            if robot is not None:
                robot.end()
            robot_status = read_fields(channels.robot, ROBOT_LAYOUT)
            channels.close()
        try:
            return self._result(controller, robot, robot_status, problems)
        finally:
            self._lock.release()
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._stopped_by = "SIGTERM"
        raise KeyboardInterrupt

    def _confirm_hold(self, robot: Child, problems: list[str]) -> None:
        """Tell the robot to hold, wait for its status to show the latched hold, and let it hold for
        HOLD_SETTLE s before it is stopped, so its record ends in the hold it was told to keep."""
        assert self.channels is not None
        self.hold_robot()
        deadline = time.monotonic() + HOLD_CONFIRM
        while time.monotonic() < deadline and robot.is_alive():
            held = int(read_fields(self.channels.robot, ROBOT_LAYOUT)["held_by"][0]) & LATCHED
            if held:
                self.say(f"the robot holds ({', '.join(hold_reason_names(held))})")
                time.sleep(HOLD_SETTLE)
                return
            time.sleep(0.01)
        if robot.is_alive():
            problems.append(f"the robot did not confirm the hold within {HOLD_CONFIRM:g} s")
            self.say(problems[-1])

    def _result(
        self, controller: Child | None, robot: Child | None, status: dict[str, np.ndarray], problems: list[str]
    ) -> DeployResult:
        controller_code = controller.exitcode if controller else None
        robot_code = robot.exitcode if robot else None
        if controller_code not in (0, None) and not problems:
            problems.append(f"controller process exited with code {controller_code} (its output is above)")
        if robot_code not in (0, None) and not problems:
            problems.append(f"robot process exited with code {robot_code} (its output is above)")
        log = self.run_dir / CONTROLLER_LOG
        summary: dict[str, Any] = {"steps": 0}
        if log.exists():
            columns, meta = load_log(log)
            summary = summarize(columns, meta["period"])
            if meta["exit"] not in ("normal", "signal") and not problems:
                problems.append(f"controller log {log} ends with: {meta['exit']}")
        elif controller is not None:
            problems.append(f"controller process exited with code {controller_code} and wrote no log")
        ending = f"run stopped by {self._stopped_by}" if self._stopped_by else "run ended cleanly"
        self._note("FAILED: " + "; ".join(problems) if problems else ending)
        return DeployResult(
            run_dir=self.run_dir,
            summary=summary,
            robot={k: int(status[k][0]) for k in ("sim_steps", "episodes", "successes", "overruns")},
            controller_exitcode=controller_code,
            robot_exitcode=robot_code,
            problems=problems,
        )

    def _controller_state(self) -> float:
        assert self.channels is not None
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

    def _watch(
        self,
        controller: Child,
        robot: Child,
        on_tick: Callable[[Supervisor, dict[str, np.ndarray]], None] | None,
    ) -> list[str]:
        """Watch until the controller is done (no problems) or something fails (the problems, already said)."""
        assert self.channels is not None
        last_print, last_step = time.perf_counter(), 0.0
        while True:
            time.sleep(0.05)
            now = time.perf_counter()
            status = read_fields(self.channels.controller, CONTROLLER_LAYOUT)
            robot_status = read_fields(self.channels.robot, ROBOT_LAYOUT)
            if on_tick is not None:
                on_tick(self, status)
            done = status["state"][0] == STATE_DONE
            problem = self._problem(controller, robot, status, robot_status, now, done)
            if problem:
                self.say(f"{problem}; the robot is told to hold and the run stops")
                self.hold_robot()
                self.estop()
                return [problem]
            if done and not controller.is_alive():
                return []
            if now - last_print >= 1.0 and not done:
                rate = (status["step"][0] - last_step) / (now - last_print)
                last_print, last_step = now, status["step"][0]
                print(self._status_line(status, robot_status, rate), file=self.out, flush=True)

    def _problem(
        self,
        controller: Child,
        robot: Child,
        status: dict[str, np.ndarray],
        robot_status: dict[str, np.ndarray],
        now: float,
        done: bool,
    ) -> str | None:
        step = int(status["step"][0])
        if not robot.is_alive():
            return f"robot process exited with code {robot.exitcode} at controller step {step}"
        if not controller.is_alive() and (not done or controller.exitcode != 0):
            return f"controller process exited with code {controller.exitcode} at step {step}"
        if now - status["stamp"][0] > HEARTBEAT_TIMEOUT and not done:
            return f"controller heartbeat lost (no status for {HEARTBEAT_TIMEOUT:g} s) at step {step}"
        if now - robot_status["stamp"][0] > HEARTBEAT_TIMEOUT:
            return f"robot heartbeat lost (no measured state for {HEARTBEAT_TIMEOUT:g} s)"
        held = int(robot_status["held_by"][0]) & LATCHED
        if held and not done:
            return f"the robot holds on its own ({', '.join(hold_reason_names(held))}) at controller step {step}"
        return None

    def _status_line(self, status: dict[str, np.ndarray], robot: dict[str, np.ndarray], rate: float) -> str:
        hist = status["latency_hist"]
        events = ", ".join(f"{name} {int(n)}" for name, n in zip(EVENTS, status["events"], strict=True) if n)
        state = {1.0: "running", 2.0: "HELD"}.get(float(status["state"][0]), "?")
        return (
            f"[{state}] step {int(status['step'][0])}  {rate:.0f} Hz  latency p50<{hist_percentile(hist, 0.5):.0f}us "
            f"p99<{hist_percentile(hist, 0.99):.0f}us  misses {int(status['misses'][0])}  "
            f"episodes {int(robot['episodes'][0])} (solved {int(robot['successes'][0])})  events: {events or 'none'}"
        )
