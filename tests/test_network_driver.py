"""The network driver (issue 34): a robot reached over UDP on loopback, with loss, delay and reordering injected
by a relay in the test, and either end SIGKILLed. Every test is bounded: the server and the relay stop by
themselves, and each test runs a few seconds. Assertions read the robot's record and the arm server's record."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from network_helpers import NETWORK_DRIVER, ArmServerProcess

from awac_robot.control import watchdog
from awac_robot.control.drills import BareRobot
from awac_robot.control.drivers.loading import DriverDefinition
from awac_robot.control.drivers.network import (
    _COMMAND_HEAD,
    _STATE_HEAD,
    STATE_MAGIC,
    LossyLink,
    NetworkDriver,
    NetworkSettings,
)
from awac_robot.control.limits import default_config
from awac_robot.control.runlog import load_log
from awac_robot.envs import get_spec
from awac_robot.replay import ReplayError, replay_deployment

PUSH = get_spec("push")
CONFIG = default_config(PUSH)
T, TIMEOUT, STALE = PUSH.control_period, CONFIG.limits.command_timeout, CONFIG.limits.stale_after
TOWARDS_WALL = np.array([0.0, 0.3, 0.0, 0.0])


def state_message(session: int, seq: int, measured: float, echo_stamp: float, received: float, obs_value: float):
    head = _STATE_HEAD.pack(STATE_MAGIC, session, seq, measured, 1, echo_stamp, received, 0, 0)
    return head + np.full(PUSH.obs_dim, obs_value, np.float32).tobytes() + np.zeros(PUSH.act_dim).tobytes()


def test_the_driver_takes_only_the_newest_state_and_dates_it_no_later_than_measured() -> None:
    arm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    arm.bind(("127.0.0.1", 0))
    arm.settimeout(2.0)
    driver = NetworkDriver(PUSH, NetworkSettings(port=arm.getsockname()[1]), None)
    try:
        assert np.isnan(driver.read().stamp)  # nothing measured yet: no stamp, so the guard holds
        driver.hold()
        data, address = arm.recvfrom(4096)
        _, session, seq, sent, answers, mode = _COMMAND_HEAD.unpack_from(data)
        assert (seq, answers, mode) == (1, 0, 2)
        # the arm received the command 5 ms after it was sent (its clock is 1000 s off) and measured 3 ms later
        arm.sendto(state_message(session, 7, 1003.008, sent, 1003.005, 7.0), address)
        arm.sendto(state_message(session, 6, 1003.004, sent, 1003.001, 6.0), address)  # older, arriving later
        arm.sendto(state_message(session, 7, 1003.009, sent, 1003.005, 7.5), address)  # a duplicate
        arm.sendto(state_message(session + 1, 9, 1003.01, sent, 1003.005, 9.0), address)  # another session
        arm.sendto(b"AWS1 too short", address)
        time.sleep(0.05)
        state = driver.read()
        assert np.all(state.obs == 7.0)
        assert state.stamp == pytest.approx(sent + 0.003, abs=1e-9)  # sent + (measured - received): never later
        counts = driver.counts
        assert (counts.received, counts.out_of_order, counts.malformed) == (1, 3, 1)
        driver.apply(np.array([0.0, 0.1, 0.0, 0.0]))
        _, _, seq, _, answers, mode = _COMMAND_HEAD.unpack_from(arm.recvfrom(4096)[0])
        assert (seq, answers, mode) == (2, 7, 1)  # the command names the state it was decided on
    finally:
        driver.close()
        arm.close()


def assert_arm_applied_only_fresh_commands(arm: dict[str, np.ndarray]) -> None:
    """The arm's own record: a command applied was in bounds and at most `timeout` old (a round trip on the arm's
    clock); a command applied with its motion stopped (mode 3) moved nothing."""
    applied, mode = arm["applied"], arm["mode"]
    assert np.all(np.isfinite(applied)) and np.all(np.abs(applied) <= 1.0)
    assert np.all(arm["command_age"][mode != 2] <= TIMEOUT)
    assert np.all(applied[mode == 3][:, :3] == 0.0)


def test_over_a_lossy_link_the_robot_holds_when_states_are_late_or_stop(tmp_path: Path) -> None:
    server = ArmServerProcess("push", tmp_path / "arm.runlog", seconds=30)
    link = LossyLink(("127.0.0.1", server.port), loss=0.05, delay=0.001, jitter=0.004, reorder=0.05, seconds=30)
    try:
        robot = BareRobot(PUSH, CONFIG, server.definition(link.port), tmp_path / "robot.runlog", seed=0)
        robot.drive(1.5, TOWARDS_WALL)  # lossy but on time: the robot moves
        link.delay, late = 0.35, time.perf_counter()  # every message now arrives 0.35 s late
        robot.drive(0.8, TOWARDS_WALL)
        link.delay, link.loss, cut = 0.0, 1.0, time.perf_counter()  # then nothing arrives at all
        robot.drive(0.6, TOWARDS_WALL)
        end = time.perf_counter()
        rows, meta = robot.stop()
    finally:
        link.stop()
        server.stop()
    arm, arm_meta = load_log(tmp_path / "arm.runlog")
    assert meta["exit"] == "normal" and link.dropped > 0 and link.reordered > 0
    moving = (rows["t"] < late) & np.isfinite(rows["state_age"])
    assert np.mean(rows["mode"][moving] == 1) > 0.8, "the robot should mostly move while the link only loses some"
    # the robot never took an older state after a newer one, though the link reordered them
    stamps = (rows["t"] - rows["state_age"])[np.isfinite(rows["state_age"])]
    assert np.all(np.diff(stamps) >= -1e-9)  # (rounding of t - age)
    # late, then cut: from stale_after (plus the period to notice) on, the robot holds for stale state
    for start, stop in ((late, cut), (cut, end)):
        window = (rows["t"] > start + STALE + 2 * T) & (rows["t"] < stop)
        assert window.sum() >= 3 and np.all(rows["mode"][window] == 2)
        assert np.all(rows["held_by"][window] & watchdog.STALE_STATE)
    # and the arm held by itself once its commands were late
    arm_late = (arm["t"] > late + TIMEOUT + 2 * T) & (arm["t"] < cut)
    assert arm_late.sum() >= 3 and np.all(arm["mode"][arm_late] == 2)
    assert_arm_applied_only_fresh_commands(arm)
    assert arm_meta["out_of_order"] > 0  # the reordered commands were refused, not applied


@pytest.mark.parametrize("killed", ["arm server", "robot process"])
def test_sigkill_of_either_end_leaves_the_other_holding(tmp_path: Path, killed: str) -> None:
    server = ArmServerProcess("push", tmp_path / "arm.runlog", seconds=30)
    try:
        robot = BareRobot(PUSH, CONFIG, server.definition(), tmp_path / "robot.runlog", seed=0)
        robot.drive(0.8, TOWARDS_WALL)
        moment = time.perf_counter()
        if killed == "arm server":
            server.process.send_signal(signal.SIGKILL)
            robot.drive(0.6, TOWARDS_WALL)  # the controller keeps sending: only the robot's own check can hold
            rows, meta = robot.stop()
        else:
            robot.process.send_signal(signal.SIGKILL)
            robot.process.wait(10)
            time.sleep(0.6)
            robot.close()
    finally:
        code = server.stop()
    if killed == "arm server":
        assert meta["exit"] == "normal" and code == -signal.SIGKILL
        with pytest.raises(ReplayError, match="drove awac_robot.control.drivers.network:NetworkDriver"):
            replay_deployment(tmp_path / "robot.runlog")  # its robot was not the simulator
        after = rows["t"] > moment + STALE + 2 * T
        assert after.sum() >= 5 and np.all(rows["mode"][after] == 2)
        assert np.all(rows["held_by"][after] & watchdog.STALE_STATE)
    else:
        arm, arm_meta = load_log(tmp_path / "arm.runlog")
        assert arm_meta["exit"] == "signal"  # stopped by the test (SIGTERM) after it held
        before, after = arm["t"] < moment, arm["t"] > moment + TIMEOUT + 2 * T
        assert np.all(arm["mode"][before][-5:] == 1) and after.sum() >= 5
        assert np.all(arm["mode"][after] == 2) and np.all(arm["applied"][after][:, :3] == 0.0)
        assert np.all(arm["applied"][after] == arm["applied"][after][0])
        assert_arm_applied_only_fresh_commands(arm)


def test_a_robot_whose_server_is_not_there_says_so(tmp_path: Path) -> None:
    nobody = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nobody.bind(("127.0.0.1", 0))
    port = nobody.getsockname()[1]
    nobody.close()  # a port nobody listens on
    definition = DriverDefinition(NETWORK_DRIVER, {"port": port}, "test")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not publish a state"):
        BareRobot(PUSH, CONFIG, definition, tmp_path / "robot.runlog", seed=0)
    assert time.monotonic() - start < 30
