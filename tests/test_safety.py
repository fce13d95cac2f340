"""The safety layer alone: its invariants on arbitrary actions, observations and previous commands."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from awac_robot.control import safety
from awac_robot.control.limits import LimitsError, default_limits, load_config
from awac_robot.envs import get_spec

DOOR, PUSH = get_spec("door"), get_spec("push")
PERIOD = 0.01
# subnormals off: onnxruntime/torch (loaded by other tests in the same process) set flush-to-zero
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False, width=32)


def compiled(spec, **changes) -> safety.StepLimits:
    return safety.compile_limits(replace(default_limits(spec), **changes), PERIOD)


def assert_safe(command: np.ndarray, last: np.ndarray, lim: safety.StepLimits) -> None:
    """The invariants of safety.py's docstring, for one step."""
    assert np.all(np.isfinite(command))
    assert np.all(command >= lim.bound_low) and np.all(command <= lim.bound_high)
    step_ok = np.abs(command - last) <= lim.max_step + 1e-12
    slowing = lim.motion & (np.minimum(0.0, last) <= command) & (command <= np.maximum(0.0, last))
    assert np.all(step_ok | slowing), (command, last)
    inner_before = (last >= lim.inner_low) & (last <= lim.inner_high)
    inner_now = (command >= lim.inner_low - 1e-12) & (command <= lim.inner_high + 1e-12)
    assert np.all(inner_now | ~inner_before)


def last_commands(spec, lim):
    return arrays(np.float64, spec.act_dim, elements=st.floats(-1.0, 1.0, allow_subnormal=False)).map(
        lambda a: np.clip(a, lim.bound_low, lim.bound_high)
    )


DOOR_LIM = compiled(DOOR)
PUSH_LIM = compiled(PUSH)


@settings(max_examples=300, deadline=None)
@given(
    action=arrays(np.float32, DOOR.act_dim, elements=ANY_FLOAT),
    last=last_commands(DOOR, DOOR_LIM),
    obs=arrays(np.float32, DOOR.obs_dim, elements=ANY_FLOAT),
)
def test_dexterous_commands_are_finite_bounded_and_rate_limited(action, last, obs) -> None:
    command, events = safety.filter_action(action, obs, last, DOOR_LIM)
    assert_safe(command, last, DOOR_LIM)
    if not np.all(np.isfinite(action)):
        assert events & safety.NON_FINITE_ACTION and events & safety.HOLD
        np.testing.assert_array_equal(command, last)  # position targets: hold the last safe command


@settings(max_examples=300, deadline=None)
@given(
    action=arrays(np.float32, PUSH.act_dim, elements=ANY_FLOAT),
    last=last_commands(PUSH, PUSH_LIM),
    grip=arrays(np.float64, 3, elements=st.floats(-3.0, 3.0, allow_subnormal=False)),
)
def test_tabletop_deltas_never_leave_the_workspace_further(action, last, grip) -> None:
    obs = np.zeros(PUSH.obs_dim, dtype=np.float32)
    obs[PUSH_LIM.ws_obs] = grip
    command, events = safety.filter_action(action, obs, last, PUSH_LIM)
    assert_safe(command, last, PUSH_LIM)
    grip = obs[PUSH_LIM.ws_obs].astype(np.float64)
    moved = grip + command[PUSH_LIM.ws_act] * PUSH_LIM.ws_scale
    outside_before = np.maximum(PUSH_LIM.ws_low - grip, 0) + np.maximum(grip - PUSH_LIM.ws_high, 0)
    outside_after = np.maximum(PUSH_LIM.ws_low - moved, 0) + np.maximum(moved - PUSH_LIM.ws_high, 0)
    assert np.all(outside_after <= outside_before + 1e-9)


def test_each_check_raises_its_event() -> None:
    lim, last, obs = DOOR_LIM, np.zeros(DOOR.act_dim), np.zeros(DOOR.obs_dim, dtype=np.float32)
    small = np.full(DOOR.act_dim, 0.01, dtype=np.float32)
    assert safety.filter_action(small, obs, last, lim)[1] == 0
    huge = np.full(DOOR.act_dim, 1e30, dtype=np.float32)
    command, events = safety.filter_action(huge, obs, last, lim)
    assert events == safety.CLIPPED | safety.JOINT_MARGIN | safety.RATE_LIMITED
    np.testing.assert_allclose(command, lim.max_step)  # moved by one rate step towards the bound
    near_limit = np.full(DOOR.act_dim, 0.99)
    command, events = safety.filter_action(np.ones(DOOR.act_dim, np.float32), obs, near_limit, lim)
    assert events == safety.JOINT_MARGIN and np.all(command == 0.98)
    nan = small.copy()
    nan[3] = np.nan
    assert safety.filter_action(nan, obs, last, lim)[1] == safety.NON_FINITE_ACTION | safety.HOLD


def test_workspace_stops_motion_out_of_the_box_and_hold_stops_deltas() -> None:
    lim = PUSH_LIM
    obs = np.zeros(PUSH.obs_dim, dtype=np.float32)
    obs[lim.ws_obs] = lim.ws_high + 0.01  # just outside the +x, +y, +z faces
    last = np.array([0.3, 0.0, -0.3, 0.5])
    command, events = safety.filter_action(np.array([1.0, -0.1, -0.5, 0.5], np.float32), obs, last, lim)
    assert events & safety.WORKSPACE
    assert command[0] == 0.0 and command[1] < 0 and command[2] < 0  # no further out, inward allowed
    hold = safety.hold_command(last, lim)
    np.testing.assert_array_equal(hold, [0.0, 0.0, 0.0, 0.5])  # zero motion, gripper kept
    obs[lim.ws_obs[0]] = np.nan
    assert safety.filter_action(np.zeros(4, np.float32), obs, last, lim)[1] & safety.BAD_OBSERVATION


@pytest.mark.parametrize(
    ("age", "misses", "estop", "expected"),
    [
        (0.0, 0, False, 0),
        (0.051, 0, False, safety.STALE_OBSERVATION),
        (math.nan, 0, False, safety.STALE_OBSERVATION),
        (0.0, 6, False, safety.DEADLINE_MISSES),
        (0.0, 5, False, 0),
        (0.0, 0, True, safety.ESTOP),
    ],
)
def test_stop_reasons(age, misses, estop, expected) -> None:
    assert safety.stop_reasons(age, misses, estop, DOOR_LIM) == expected  # door: stale after 0.05 s, K = 5


def test_event_counting_and_names() -> None:
    events = np.array([0, safety.CLIPPED | safety.HOLD, safety.CLIPPED], dtype=np.int32)
    counts = safety.count_events(events)
    assert counts["clipped"] == 2 and counts["hold"] == 1 and counts["estop"] == 0
    assert safety.event_names(safety.ESTOP | safety.HOLD) == ["estop", "hold"]


def test_defaults_follow_the_task_spec() -> None:
    door, push = default_limits(DOOR), default_limits(PUSH)
    assert door.joint_margin > 0 and door.rate_dims == () and door.workspace_obs == ()
    assert push.rate_dims == (0, 1, 2) and push.workspace_obs == (0, 1, 2) and push.workspace_act == (0, 1, 2)
    assert door.stale_after == pytest.approx(5 * DOOR.control_period)
    assert door.max_rate[0] == pytest.approx(2 / (5 * DOOR.control_period))


def test_limits_file_overrides_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "door.yaml"
    path.write_text("task: door\nrate: 200\nsafety:\n  max_rate: 4.0\n  joint_margin: 0.05\n")
    config = load_config(path, DOOR)
    assert config.rate == 200 and config.limits.max_rate == (4.0,) * DOOR.act_dim
    assert config.limits.joint_margin == 0.05 and config.limits.stale_after == default_limits(DOOR).stale_after
    path.write_text("safety:\n  max_rates: 4.0\n")
    with pytest.raises(LimitsError, match="unknown field 'safety.max_rates'"):
        load_config(path, DOOR)
    path.write_text("task: push\n")
    with pytest.raises(LimitsError, match="for task 'push'"):
        load_config(path, DOOR)
