"""The robot process is safe on its own (issue 10, finding 1): real robot processes, real controllers, real signals.

Two kinds of tests. In the first, the test itself plays a broken controller writing straight
into the robot's command slot (no safety layer in between): it stops refreshing the sequence
number, answers an old observation, sends a command outside the bounds, or pushes the gripper
out of the workspace for good. In the second, a whole deployment drives the push gripper with a
policy that always says [0, 0.5, 0, 0] (+y, towards the workspace face) and the controller is
SIGSTOPed or SIGKILLed at a seeded random moment. Every assertion reads the robot's own record
(robot.runlog), not the controller's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_helpers import write_policy

from awac_robot.control import watchdog
from awac_robot.control.channels import MODE_RUN, SUPERVISOR_LAYOUT, Channels, command_layout
from awac_robot.control.limits import default_config
from awac_robot.control.robot import RobotConfig
from awac_robot.control.runlog import load_log
from awac_robot.control.safety import compile_limits
from awac_robot.control.supervisor import CONTROLLER_LOG, ROBOT_LOG, SUPERVISOR_LOG, Supervisor
from awac_robot.envs import get_spec

PUSH, DOOR = get_spec("push"), get_spec("door")
#: how far (m) the Fetch gripper can trail its mocap target, which the deltas move (docs/deploy.md)
TRACKING_LAG = 0.02


class BareRobot:
    """A real robot process whose command slot the test writes itself, as a controller would (or should not)."""

    def __init__(self, tmp_path: Path, task: str) -> None:
        self.spec = get_spec(task)
        self.config = default_config(self.spec)
        self.channels = Channels.create(self.spec)
        self.log_path = tmp_path / ROBOT_LOG
        cfg = RobotConfig(self.config, self.channels.names(), 0, os.getpid(), str(self.log_path))
        self.process = subprocess.Popen([sys.executable, "-m", "awac_robot.control.robot", cfg.to_json()])
        self.layout = command_layout(self.spec)
        self.out = np.zeros(self.layout.size)
        self.seq = 0
        deadline = time.monotonic() + 60
        while self.channels.obs.version() == 0:
            assert self.process.poll() is None and time.monotonic() < deadline, "the robot process did not start"
            time.sleep(0.01)

    def send(self, command: list[float], seq: int | None = None, obs_version: int | None = None) -> None:
        """A run command; by default with the next sequence number and the newest observation."""
        if seq is None:
            self.seq += 1
        out, lay = self.out, self.layout
        out[lay["seq"]] = self.seq if seq is None else seq
        out[lay["stamp"]] = time.perf_counter()
        out[lay["mode"]] = MODE_RUN
        out[lay["obs_version"]] = self.channels.obs.version() if obs_version is None else obs_version
        out[lay["command"]] = command
        self.channels.command.write(out)

    def drive(self, seconds: float, command: list[float], **fields: int) -> float:
        """Send `command` every half task period for `seconds`; returns when the sending started."""
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.send(command, **fields)
            time.sleep(self.spec.control_period / 2)
        return start

    def stop(self) -> tuple[dict[str, np.ndarray], dict]:
        flags = np.zeros(SUPERVISOR_LAYOUT.size)
        flags[SUPERVISOR_LAYOUT["stop_robot"]] = 1.0
        self.channels.supervisor.write(flags)
        assert self.process.wait(20) == 0
        self.channels.close()
        return load_log(self.log_path)


def held_after(rows: dict[str, np.ndarray], moment: float) -> np.ndarray:
    """Mask of the robot's steps decided after `moment` (perf_counter s, the clock of every process)."""
    return rows["t"] > moment


def assert_holds_still(rows: dict[str, np.ndarray], after: np.ndarray, motion: list[int]) -> None:
    assert after.any(), "the robot recorded no step after the bound"
    assert np.all(rows["mode"][after] == 2)
    applied = rows["applied"][after]
    assert np.all(applied == applied[0]), "the applied command kept changing"
    assert np.all(applied[:, motion] == 0.0)


@pytest.mark.parametrize("fault", ["repeated_seq", "old_observation"])
def test_robot_holds_when_commands_stop_being_fresh(tmp_path: Path, fault: str) -> None:
    robot = BareRobot(tmp_path, "push")
    timeout = robot.config.limits.command_timeout
    robot.drive(0.3, [0.0, 0.3, 0.0, 0.0])
    stuck = {"seq": robot.seq} if fault == "repeated_seq" else {"obs_version": robot.channels.obs.version()}
    went_stale = robot.drive(0.6, [0.0, 0.3, 0.0, 0.0], **stuck)  # still writing, but nothing fresh
    rows, meta = robot.stop()
    assert meta["exit"] == "normal"
    before = ~held_after(rows, went_stale)
    assert np.all(rows["mode"][before][5:] == 1), "the robot should move while commands are fresh"
    # an observation ages one robot step at a time: stale one step after the timeout at most
    after = held_after(rows, went_stale + timeout + 2 * PUSH.control_period)
    assert_holds_still(rows, after, [0, 1, 2])
    assert np.all(rows["held_by"][after] & watchdog.WATCHDOG)


@pytest.mark.parametrize(("task", "bad"), [("door", 1.5), ("door", float("nan")), ("push", 50.0)])
def test_robot_refuses_a_command_outside_the_bounds(tmp_path: Path, task: str, bad: float) -> None:
    robot = BareRobot(tmp_path, task)
    good = [0.1] * robot.spec.act_dim
    robot.drive(0.2, good)
    refused = time.perf_counter()
    robot.drive(0.3, [bad] + good[1:])
    rows, _ = robot.stop()
    after = held_after(rows, refused + robot.spec.control_period)
    motion = [0, 1, 2] if task == "push" else []
    assert_holds_still(rows, after, motion)
    assert np.all(rows["held_by"][after] & watchdog.BAD_COMMAND)
    # never taken, never applied: the hand holds its measured pose instead
    assert np.all(np.abs(rows["applied"]) <= 1.0) and np.all(np.abs(rows["command"]) <= 1.0)


def test_robot_keeps_the_gripper_in_the_workspace_against_any_controller(tmp_path: Path) -> None:
    robot = BareRobot(tmp_path, "push")
    lim = compile_limits(robot.config.limits, PUSH.control_period)
    robot.drive(1.5, [0.0, 1.0, 1.0, 0.0])  # full speed at the +y and +z faces, fresh every time
    robot.drive(0.8, [1.0, 0.0, 0.0, 0.0])  # then at +x
    rows, _ = robot.stop()
    grip = rows["obs"][:, lim.ws_obs].astype(np.float64)
    outside = np.maximum(lim.ws_low - grip, 0) + np.maximum(grip - lim.ws_high, 0)
    assert outside.max() <= TRACKING_LAG, outside.max()
    assert rows["workspace"].any() and np.all(rows["mode"][5:] == 1)  # shrunk, never a hold: fresh commands


class ConstantPolicy(torch.nn.Module):
    """Always [0, 0.5, 0, 0]: push the gripper along +y, into the workspace face and beyond if allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("action", torch.tensor([0.0, 0.5, 0.0, 0.0]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(obs[:, :4]) + self.action


SEEDS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["SIGSTOP", "SIGKILL"])
def test_stopped_or_killed_controller_leaves_the_robot_holding(tmp_path: Path, sig: signal.Signals, seed: int) -> None:
    policy = write_policy(ConstantPolicy(), PUSH, tmp_path / "push.onnx")
    config = default_config(PUSH)
    lim = compile_limits(config.limits, PUSH.control_period)
    kill_at_step = int(np.random.default_rng(seed).integers(3, 40))  # 0.1-1.6 s in, before and after the face
    killed: list[float] = []

    def kill_controller(supervisor: Supervisor, status: dict[str, np.ndarray]) -> None:
        if status["step"][0] >= kill_at_step and not killed:
            assert supervisor.controller_pid is not None
            killed.append(time.perf_counter())
            os.kill(supervisor.controller_pid, sig)

    run_dir = tmp_path / "run"
    result = Supervisor(policy, config, 10.0, run_dir, seed=seed, out=sys.stderr).run(kill_controller)
    assert killed and not result.ok
    rows, robot_meta = load_log(run_dir / ROBOT_LOG)
    # from the robot's own record: nothing moves once command_timeout has passed since the controller stopped
    after = held_after(rows, killed[0] + config.limits.command_timeout)
    assert_holds_still(rows, after, [0, 1, 2])
    assert np.all(rows["held_by"][after] & (watchdog.WATCHDOG | watchdog.SUPERVISOR))
    assert robot_meta["exit"] == "normal" and robot_meta["held_by"] & watchdog.LATCHED
    grip = rows["obs"][:, lim.ws_obs].astype(np.float64)
    outside = np.maximum(lim.ws_low - grip, 0) + np.maximum(grip - lim.ws_high, 0)
    assert outside.max() <= TRACKING_LAG, outside.max()
    # the supervisor said what happened and kept it; the controller's log survived it, every row it finished
    said = (run_dir / SUPERVISOR_LOG).read_text()
    assert "the robot is told to hold" in said and "FAILED" in said
    columns, meta = load_log(run_dir / CONTROLLER_LOG)
    assert len(columns["mode"]) >= kill_at_step and np.all(columns["command"][:kill_at_step, 1] > 0)
    if sig == signal.SIGKILL:
        assert meta["exit"].startswith("killed") and "exited with code -9" in result.problems[0]
    else:  # the watchdog (0.12 s) beats the heartbeat check (0.5 s); SIGTERM + SIGCONT end the controller cleanly
        assert "(watchdog)" in result.problems[0] or "heartbeat lost" in result.problems[0]
        assert meta["exit"] == "signal"
