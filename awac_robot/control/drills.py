"""The fault drill kit behind `awac-robot check-robot`: the faults the robot side must survive, against any driver.

Each drill starts real processes around the driver under test, injects one fault at a seeded
random moment, and judges the outcome from the robot process's own record (robot.runlog),
never from what the controller believed it sent:

    controller-sigstop   a deployment whose controller is SIGSTOPed: the watchdog holds
    controller-sigkill   the same with SIGKILL
    stale-observations   the driver's state stops updating (a stalled sensor or link): the robot holds
    estop                the operator's e-stop file: the controller holds, so the robot does
    nan-command          a controller without a safety layer sends NaN: the robot holds, latched
    out-of-bounds        ... a command outside the action bounds: the robot holds, latched
    rate-violation       ... a jump across the action range: the robot limits it to the rate limit
    workspace-wall       (tasks with a workspace box) ... full speed at the box faces: the gripper stays in

A hold drill passes when the robot holds from at most `bound` seconds after the fault
(`command_timeout` + one robot period; for stale observations `stale_after` + one period, the
period as the robot recorded it before the hold, from the last measurement), keeps
holding to the end of its record, and its applied command stays still (motion dims 0) once the
hold has reached the robot (three robot periods, for a driver whose robot reports with a lag).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awac_robot.control.channels import MODE_RUN, SUPERVISOR_LAYOUT, Channels, command_layout
from awac_robot.control.drivers import Measurement, RobotDriver
from awac_robot.control.drivers.loading import DriverDefinition, build_driver
from awac_robot.control.limits import DeployConfig, motion_dims
from awac_robot.control.robot import RobotConfig
from awac_robot.control.rt import next_boundary, set_realtime, sleep_until
from awac_robot.control.runlog import load_log
from awac_robot.control.safety import StepLimits, compile_limits
from awac_robot.control.supervisor import ROBOT_LOG, Supervisor
from awac_robot.control.watchdog import hold_reason_names
from awac_robot.export import ActorToExport, policy_metadata, write_onnx
from awac_robot.spec import TaskSpec

#: how far (m) the Fetch gripper can trail the mocap target its deltas move (docs/deploy.md)
TRACKING_LAG = 0.02
#: robot periods after the hold before its applied command must be still (a remote robot reports with a lag)
SETTLE_STEPS = 3
DRILLS = (
    "controller-sigstop",
    "controller-sigkill",
    "stale-observations",
    "estop",
    "nan-command",
    "out-of-bounds",
    "rate-violation",
    "workspace-wall",
)

Rows = dict[str, np.ndarray]


@dataclass(frozen=True)
class DrillResult:
    name: str
    passed: bool
    #: seconds from the fault to the robot's hold (None for a drill the robot answers by limiting, not holding)
    latency: float | None
    bound: float | None
    detail: str

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        timing = ""
        if self.latency is not None and self.bound is not None:
            timing = f"hold latency {self.latency * 1e3:.1f} ms (bound {self.bound * 1e3:.1f} ms); "
        return f"{verdict}  {self.name:<19} {timing}{self.detail}"


@dataclass(frozen=True)
class FrozenStateSettings:
    """The driver under test, and the file whose existence freezes its state."""

    inner: str
    inner_settings: str  # JSON of the inner driver's settings
    freeze_file: str


class FrozenStateDriver(RobotDriver):
    """Any driver whose measured state (observation and stamp) stops updating once `freeze_file` exists, as from
    a stalled sensor; what the robot reports applying, and its episode count, still come through."""

    Settings = FrozenStateSettings

    def __init__(self, spec: TaskSpec, settings: FrozenStateSettings, seed: int | None) -> None:
        inner = DriverDefinition(settings.inner, json.loads(settings.inner_settings), "the drill's driver")
        self.inner = build_driver(inner, spec, seed)
        self.freeze_file = settings.freeze_file
        self.frozen: Measurement | None = None

    def read(self) -> Measurement:
        state = self.inner.read()
        if self.frozen is None and os.path.exists(self.freeze_file):
            self.frozen = state
        if self.frozen is None:
            return state
        return replace(self.frozen, applied=state.applied, episode=state.episode, solved=state.solved)

    def apply(self, command: np.ndarray) -> None:
        self.inner.apply(command)

    def hold(self) -> None:
        self.inner.hold()

    def close(self) -> None:
        self.inner.close()


class BareRobot:
    """A real robot process around the driver whose command slot the drill writes itself: a controller without a
    safety layer, or a broken one."""

    def __init__(
        self, spec: TaskSpec, config: DeployConfig, driver: DriverDefinition, log_path: Path, seed: int
    ) -> None:
        self.spec, self.config, self.log_path = spec, config, log_path
        self.channels = Channels.create(spec)
        cfg = RobotConfig(config, self.channels.names(), seed, os.getpid(), str(log_path), driver)
        self.process = subprocess.Popen([sys.executable, "-m", "awac_robot.control.robot", cfg.to_json()])
        self.layout = command_layout(spec)
        self.out = np.zeros(self.layout.size)
        self.seq = 0
        deadline = time.monotonic() + 60
        while self.channels.obs.version() == 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the robot process did not publish a state (exit code {self.process.poll()})")
            time.sleep(0.01)

    def send(self, command: np.ndarray) -> None:
        """A run command with the next sequence number, answering the newest observation."""
        self.seq += 1
        out, lay = self.out, self.layout
        out[lay["seq"]] = self.seq
        out[lay["stamp"]] = time.perf_counter()
        out[lay["mode"]] = MODE_RUN
        out[lay["obs_version"]] = self.channels.obs.version()
        out[lay["command"]] = command
        self.channels.command.write(out)

    def drive(self, seconds: float, command: np.ndarray) -> float:
        """Send `command` once every robot period for `seconds`; returns when the first was sent.

        It sends at the controller's real-time priority, as the controller would: a sender that the machine
        leaves waiting longer than `command_timeout` drills the watchdog instead of the fault at hand.
        """
        set_realtime(self.config.priority)
        try:
            start = boundary = time.perf_counter()
            while boundary - start < seconds:
                self.send(command)
                boundary, _ = next_boundary(boundary, self.spec.control_period, time.perf_counter())
                sleep_until(boundary, 0.0)
        finally:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return start

    def stop(self) -> tuple[Rows, dict[str, Any]]:
        flags = np.zeros(SUPERVISOR_LAYOUT.size)
        flags[SUPERVISOR_LAYOUT["stop_robot"]] = 1.0
        self.channels.supervisor.write(flags)
        try:
            self.process.wait(20)
        finally:
            self.close()
        return load_log(self.log_path)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.channels.close()


class ConstantPolicy(torch.nn.Module):
    """The drills' policy: one fixed action whatever the observation (a slow, predictable motion)."""

    def __init__(self, action: np.ndarray) -> None:
        super().__init__()
        self.action = torch.nn.Parameter(torch.tensor(action, dtype=torch.float32), requires_grad=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, :1] * 0.0 + self.action


def drill_action(spec: TaskSpec) -> np.ndarray:
    """A gentle action: towards the +y workspace face on tabletop tasks, a tenth of the range elsewhere."""
    low, high = np.asarray(spec.act_low, dtype=np.float64), np.asarray(spec.act_high, dtype=np.float64)
    action: np.ndarray = low + 0.55 * (high - low)
    motion = list(motion_dims(spec))
    action[motion] = 0.0
    if "dy" in spec.act_names:
        action[spec.act_names.index("dy")] = 0.3 * high[spec.act_names.index("dy")]
    return action


class DrillKit:
    """Every drill against one driver definition, each in its own folder under `root`."""

    def __init__(
        self,
        spec: TaskSpec,
        config: DeployConfig,
        driver: DriverDefinition,
        root: Path,
        seed: int = 0,
        say: Callable[[str], None] = print,
    ) -> None:
        self.spec, self.config, self.driver, self.root, self.seed, self.say = spec, config, driver, root, seed, say
        self.rng = np.random.default_rng(seed)
        self.period = spec.control_period
        self.lim: StepLimits = compile_limits(config.limits, self.period)
        self.motion = list(motion_dims(spec))
        self.hold_bound = config.limits.command_timeout + self.period
        root.mkdir(parents=True, exist_ok=True)
        self.policy = root / "drill-policy.onnx"
        module = ConstantPolicy(drill_action(spec)).eval()
        write_onnx(module, spec, self.policy, policy_metadata(ActorToExport(module, spec, "drill", 0)))

    def available(self) -> list[str]:
        return [d for d in DRILLS if d != "workspace-wall" or self.lim.ws_act.size]

    def run(self, names: list[str]) -> list[DrillResult]:
        results = []
        for name in names:
            result = getattr(self, name.replace("-", "_"))()
            self.say(result.line())
            results.append(result)
        return results

    # ------------------------------------------------------------ drills through a whole deployment

    def controller_sigstop(self) -> DrillResult:
        return self._signal_controller("controller-sigstop", signal.SIGSTOP)

    def controller_sigkill(self) -> DrillResult:
        return self._signal_controller("controller-sigkill", signal.SIGKILL)

    def _signal_controller(self, name: str, sig: signal.Signals) -> DrillResult:
        step = self._fault_step()

        def fault(supervisor: Supervisor) -> None:
            assert supervisor.controller_pid is not None
            os.kill(supervisor.controller_pid, sig)

        rows, moment = self._deploy(name, step, fault, self.config, self.driver)
        return self._judge_hold(name, rows, moment, self.hold_bound, f"{sig.name} at controller step {step}")

    def stale_observations(self) -> DrillResult:
        name, step = "stale-observations", self._fault_step()
        freeze = self.root / name / "FREEZE"
        settings = FrozenStateSettings(self.driver.target, json.dumps(self.driver.settings), str(freeze))
        frozen = DriverDefinition(f"{__name__}:FrozenStateDriver", vars(settings), self.driver.source)
        rows, moment = self._deploy(name, step, lambda _: freeze.touch(), self.config, frozen)
        what = f"state frozen at controller step {step}"
        return self._judge_hold(name, rows, moment, self.config.limits.stale_after, what, from_last_measurement=True)

    def estop(self) -> DrillResult:
        name, step = "estop", self._fault_step()
        estop_file = self.root / name / "ESTOP"
        config = replace(self.config, estop_file=str(estop_file))
        rows, moment = self._deploy(name, step, lambda _: estop_file.touch(), config, self.driver, until_done=True)
        return self._judge_hold(name, rows, moment, self.hold_bound, f"e-stop file at controller step {step}")

    def _fault_step(self) -> int:
        """A controller step 0.3-1.5 s into the run (seeded)."""
        rate = self.config.rate
        return int(self.rng.integers(int(0.3 * rate), int(1.5 * rate)))

    def _deploy(
        self,
        name: str,
        step: int,
        fault: Callable[[Supervisor], None],
        config: DeployConfig,
        driver: DriverDefinition,
        until_done: bool = False,
    ) -> tuple[Rows, float]:
        """A deployment of the drill policy with `fault` at controller step `step`; the robot's record and the
        fault's moment. It runs until the supervisor stops it, or (`until_done`) a second after the fault."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        moments: list[float] = []

        def tick(supervisor: Supervisor, status: dict[str, np.ndarray]) -> None:
            if status["step"][0] >= step and not moments:
                moments.append(time.perf_counter())
                fault(supervisor)

        duration = step / config.rate + (1.0 if until_done else 10.0)
        supervisor = Supervisor(
            self.policy, config, duration, folder / "run", seed=self.seed, out=io.StringIO(), robot=driver
        )
        supervisor.run(tick)
        rows, _ = load_log(folder / "run" / ROBOT_LOG)
        if not moments:
            raise RuntimeError(f"drill {name}: the deployment ended before controller step {step}")
        return rows, moments[0]

    # ------------------------------------------------------------ drills against the bare robot process

    def nan_command(self) -> DrillResult:
        bad = drill_action(self.spec)
        bad[0] = np.nan
        return self._bad_command("nan-command", bad, "NaN in dimension 0")

    def out_of_bounds(self) -> DrillResult:
        bad = drill_action(self.spec)
        bad[0] = self.lim.bound_high[0] + 0.5 * (self.lim.bound_high[0] - self.lim.bound_low[0])
        return self._bad_command("out-of-bounds", bad, f"dimension 0 at {bad[0]:g}")

    def _bad_command(self, name: str, bad: np.ndarray, what: str) -> DrillResult:
        robot = self._bare(name)
        robot.drive(0.3 + 0.5 * self.rng.random(), drill_action(self.spec))
        moment = robot.drive(0.4, bad)
        rows, _ = robot.stop()
        return self._judge_hold(name, rows, moment, self.hold_bound, f"{what} sent")

    def rate_violation(self) -> DrillResult:
        name = "rate-violation"
        low, high = self.lim.bound_low, self.lim.bound_high
        start, jump = low + 0.05 * (high - low), high - 0.05 * (high - low)
        robot = self._bare(name)
        robot.drive(0.3 + 0.5 * self.rng.random(), start)
        moment = robot.drive(0.5, jump)
        rows, _ = robot.stop()
        after = rows["t"] > moment
        applied = rows["applied"]
        reach = 2 * np.array(self.config.limits.max_rate) * max(self.config.period, self.period) + 1e-9
        worst = 0.0  # the largest move of a step in units of `reach` (a motion dim may also slow towards 0 freely)
        for i in np.flatnonzero(after)[1:]:
            last, now = applied[i - 1], applied[i]
            low_ok = np.where(self.lim.motion, np.minimum(last, 0.0), last)
            high_ok = np.where(self.lim.motion, np.maximum(last, 0.0), last)
            worst = max(worst, float(np.max(np.maximum(np.maximum(low_ok - now, now - high_ok), 0.0) / reach)))
        held = bool(np.any(rows["mode"][after] == 2))
        limited = bool(np.any(rows["rate_limited"][after]))
        passed = limited and not held and worst <= 1.0
        detail = (
            f"a jump of {np.max(np.abs(jump - start)):.2f} sent; largest step applied {worst:.2f} of the reach of "
            f"two controller periods{'' if limited else '; never limited'}{'; the robot held' if held else ''}"
        )
        return DrillResult(name, passed, None, None, detail)

    def workspace_wall(self) -> DrillResult:
        name = "workspace-wall"
        push = np.zeros(self.spec.act_dim)
        push[self.lim.ws_act[1:]] = 1.0  # full speed at the +y and +z faces
        robot = self._bare(name)
        robot.drive(1.5, push)
        sideways = np.zeros(self.spec.act_dim)
        sideways[self.lim.ws_act[0]] = 1.0  # then at +x
        robot.drive(0.8, sideways)
        rows, _ = robot.stop()
        measured = np.isfinite(rows["state_age"])  # a remote robot's first steps come before its first state
        grip = rows["obs"][measured][:, self.lim.ws_obs].astype(np.float64)
        outside = float(np.max(np.maximum(self.lim.ws_low - grip, 0) + np.maximum(grip - self.lim.ws_high, 0)))
        shrunk = bool(rows["workspace"].any())
        passed = shrunk and outside <= TRACKING_LAG
        detail = f"gripper at most {outside * 1e3:.1f} mm outside the box (allowed {TRACKING_LAG * 1e3:.0f} mm)"
        return DrillResult(name, passed, None, None, detail + ("" if shrunk else "; the box never shrank a command"))

    def _bare(self, name: str) -> BareRobot:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        return BareRobot(self.spec, self.config, self.driver, folder / ROBOT_LOG, self.seed)

    # ------------------------------------------------------------ judging

    def _judge_hold(
        self, name: str, rows: Rows, moment: float, bound: float, what: str, from_last_measurement: bool = False
    ) -> DrillResult:
        """Pass if the robot holds from at most `bound` after `moment` to the end of its record, and is still.

        With `from_last_measurement` the latency counts from the measurement time of the state the hold was
        decided on (the last one before the state froze), not from `moment`, and the bound is `bound` plus the
        robot's own period before the hold, as it recorded it: the decisions come one period apart, so the
        first one after the state went stale is at most that late (a late decision, from scheduling, says so).
        """
        after = np.flatnonzero(rows["t"] > moment)
        if not after.size:
            return DrillResult(name, False, None, bound, f"{what}; the robot recorded no step after it")
        moving = np.flatnonzero(rows["mode"][after] == 1)
        first = int(moving[-1]) + 1 if moving.size else 0
        if first >= after.size:
            return DrillResult(name, False, None, bound, f"{what}; the robot never held")
        held = after[first:]
        latency = float(rows["state_age"][held[0]] if from_last_measurement else rows["t"][held[0]] - moment)
        if from_last_measurement:
            bound += max(self.period, float(rows["t"][held[0]] - rows["t"][held[0] - 1]))
        still = self._still(rows, held[SETTLE_STEPS:])
        passed = latency <= bound and still == ""
        reasons = ", ".join(hold_reason_names(int(np.bitwise_or.reduce(rows["held_by"][held]))))
        return DrillResult(name, passed, latency, bound, f"{what}; held ({reasons}){still}")

    def _still(self, rows: Rows, held: np.ndarray) -> str:
        """'' if the applied command is constant within each episode and 0 on motion dims, else what moved."""
        applied, episodes = rows["applied"][held], rows["episode"][held]
        for episode in np.unique(episodes):
            part = applied[episodes == episode]
            if np.any(part != part[0]):
                return f"; but the applied command kept changing in episode {episode}"
        if self.motion and np.any(applied[:, self.motion] != 0.0):
            return "; but a motion dimension was not 0"
        return ""
