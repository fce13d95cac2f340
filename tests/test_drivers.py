"""Robot drivers (issue 34): finding one by name or path, checking its settings like a limits file, and the
robot-side guard every driver sits behind (rate limit, stale state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx_helpers import small_actor, write_policy

from awac_robot.cli import main
from awac_robot.control import safety, watchdog
from awac_robot.control.channels import MODE_RUN
from awac_robot.control.drivers.loading import DriverError, define, registered_robots, resolve
from awac_robot.control.limits import default_config
from awac_robot.control.robot import SIM_DRIVER
from awac_robot.envs import get_spec

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOOR, PUSH = get_spec("door"), get_spec("push")


def test_built_in_robots_are_registered_in_the_entry_point_group() -> None:
    robots = registered_robots()
    assert robots["sim"] == SIM_DRIVER == resolve("sim")
    assert robots["network"] == "awac_robot.control.drivers.network:NetworkDriver"
    assert resolve("my_robots.arm:Arm") == "my_robots.arm:Arm"  # a path is taken as given
    assert define("sim", None).settings == {}


#: (--robot, robot config text or None, what the one-line error must say)
BAD_ROBOTS = [
    ("ur5", None, "--robot 'ur5': no driver of that name (registered: network, sim)"),
    ("no_such_package.arm:Arm", None, "cannot import no_such_package.arm"),
    ("os.path:join", None, "os.path has no class join deriving from awac_robot.control.drivers.RobotDriver"),
    ("network", None, "field 'port' is required by NetworkDriver"),
    ("network", "port: 5000\nhots: 127.0.0.1\n", "unknown field 'hots' (allowed: host, port)"),
    ("network", "port: 5000.5\n", "field 'port' must be int, got 5000.5"),
    ("network", "port: '5000'\n", "field 'port' must be int, got '5000'"),
    ("sim", "seed: 3\n", "unknown field 'seed' (allowed: )"),
    ("example_driver:ExampleArmDriver", "servo_rate: .nan\n", "field 'servo_rate' must be a finite number, got nan"),
    ("example_driver:ExampleArmDriver", "servo_rate: .inf\n", "field 'servo_rate' must be a finite number, got inf"),
    ("example_driver:ExampleArmDriver", "- 1\n", "a robot config must be a mapping of fields"),
]


@pytest.mark.parametrize(("robot", "text", "says"), BAD_ROBOTS)
def test_a_bad_robot_or_setting_is_refused_in_one_line_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], robot: str, text, says: str
) -> None:
    monkeypatch.syspath_prepend(str(DOCS))
    policy = write_policy(small_actor(PUSH), PUSH, tmp_path / "push.onnx")
    argv = ["deploy", "--policy", str(policy), "--duration", "1", "--log", str(tmp_path / "run"), "--robot", robot]
    if text is not None:
        config = tmp_path / "robot.yaml"
        config.write_text(text)
        argv += ["--robot-config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err, err
    if text is not None and "--robot" not in says:
        assert str(tmp_path / "robot.yaml") in err  # names the file
    assert not (tmp_path / "run").exists()


def test_settings_are_checked_again_where_the_driver_is_built() -> None:
    from awac_robot.control.drivers.loading import DriverDefinition, build_driver

    smuggled = DriverDefinition("awac_robot.control.drivers.network:NetworkDriver", {"port": math.inf}, "a.yaml")
    with pytest.raises(DriverError, match="a.yaml: field 'port' must be int, got inf"):
        build_driver(smuggled, PUSH, 0)


def honest_commands(spec, steps: int, seed: int) -> list[np.ndarray]:
    """What the controller's safety layer sends for random, often wild, policy outputs (every other step NaN-free)."""
    config = default_config(spec)
    lim = safety.compile_limits(config.limits, config.period)
    rng = np.random.default_rng(seed)
    obs = np.zeros(spec.obs_dim, np.float32)
    if lim.ws_obs.size:
        obs[lim.ws_obs] = (lim.ws_low + lim.ws_high) / 2
    last, out = np.zeros(spec.act_dim), []
    for i in range(steps):
        action = rng.normal(0, 2, spec.act_dim) if i % 7 else np.full(spec.act_dim, np.nan)
        last, _ = safety.filter_action(action, obs, last, lim)
        out.append(last)
    return out


@pytest.mark.parametrize("spec", [DOOR, PUSH], ids=["door", "push"])
def test_the_robot_rate_limit_never_changes_an_honest_controller_and_stops_a_jump(spec) -> None:
    config = default_config(spec)
    guard = watchdog.RobotGuard(config.limits, spec.control_period, config.period)
    commands = honest_commands(spec, 300, seed=1)
    rng = np.random.default_rng(2)
    seq, accepted = 0, np.zeros(spec.act_dim)
    for command in commands:
        seq += 1
        # step k is sent between its period boundary and the next (later still after a deadline miss)
        stamp = 100.0 + seq * config.period + rng.uniform(0.0, 0.99) * config.period
        if rng.random() < 0.5:
            continue  # the robot reads only some commands (it runs slower, or the write came between reads)
        guard.update(seq, stamp, MODE_RUN, 1, command, stamp, 1)
        assert not guard.limited and np.array_equal(guard.command, command)
        accepted = command
    lim = safety.compile_limits(config.limits, config.period)
    jump = np.where(accepted > 0, lim.bound_low, lim.bound_high)  # across the whole range
    stamp = guard.run_stamp + config.period
    assert guard.update(guard.run_seq + 1, stamp, MODE_RUN, 1, jump, stamp, 1)
    assert guard.limited and not guard.latched
    reach = np.array(config.limits.max_rate) * config.period + 1e-9
    moved = np.abs(guard.command - accepted)
    assert np.all((moved <= reach) | lim.motion)  # position dims: one step's reach
    assert np.all(np.abs(guard.command[lim.motion]) <= reach[lim.motion])  # motion dims: stop, then one step
    assert safety.command_in_bounds(guard.command, lim)


def test_the_robot_holds_while_its_measured_state_is_stale() -> None:
    config = default_config(PUSH)
    guard = watchdog.RobotGuard(config.limits, PUSH.control_period, config.period)
    guard.update(1, 10.0, MODE_RUN, 1, np.array([0.0, 0.2, 0.0, 0.0]), 10.0, 1)
    obs = np.zeros(PUSH.obs_dim, np.float32)
    obs[:3] = (1.3, 0.75, 0.5)
    stale = config.limits.stale_after
    assert guard.target(obs, 0.5 * stale)[0] is not None
    for age in (1.01 * stale, math.nan, math.inf):
        target, reasons, _ = guard.target(obs, age)
        assert target is None and reasons == watchdog.STALE_STATE
    assert guard.target(obs, 0.5 * stale)[0] is not None  # not latched: the hold lasts while the state is old
