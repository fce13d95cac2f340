"""The controller behind its safety layer, as real processes: simulated robot, controller, supervisor.

Every test checks the logged steps themselves (not a summary): each sent command, each hold,
and the scheduled period in which a stop took effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx_helpers import AdversarialPolicy, small_actor, write_policy
from reference_data import ADROIT, absent

from awac_robot.cli import main
from awac_robot.control import safety
from awac_robot.control.channels import CONTROLLER_LAYOUT, read_fields
from awac_robot.control.limits import default_config, default_limits
from awac_robot.control.runlog import load_log
from awac_robot.control.shm import Slot
from awac_robot.control.supervisor import CONTROLLER_LOG, SUPERVISOR_LOG, Supervisor
from awac_robot.dapg_policy import import_dapg_policy
from awac_robot.envs import get_spec

ROOT = Path(__file__).resolve().parents[1]
#: how far (m) the Fetch gripper can trail its mocap target, which the deltas move (docs/deploy.md)
TRACKING_LAG = 0.02


def deploy(tmp_path: Path, task: str, policy_module, duration: float, on_tick=None, **config_changes):
    spec = get_spec(task)
    policy = write_policy(policy_module, spec, tmp_path / f"{task}.onnx")
    config = replace(default_config(spec), **config_changes)
    run_dir = tmp_path / "run"
    supervisor = Supervisor(policy, config, duration, run_dir, seed=1, out=sys.stderr)
    result = supervisor.run(on_tick)
    columns, meta = load_log(run_dir / CONTROLLER_LOG)
    return columns, meta, result, safety.compile_limits(config.limits, config.period)


def assert_every_command_safe(columns: dict[str, np.ndarray], lim: safety.StepLimits) -> None:
    commands = columns["command"]
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= lim.bound_low) and np.all(commands <= lim.bound_high)
    last, now = commands[:-1], commands[1:]
    within_rate = np.abs(now - last) <= lim.max_step + 1e-9
    slowing = lim.motion & (np.minimum(0.0, last) <= now) & (now <= np.maximum(0.0, last))
    assert np.all(within_rate | slowing)


def first_row_after(columns: dict[str, np.ndarray], moment: float) -> int:
    return int(np.argmax(columns["t_wake"] > moment))


def assert_held_from(columns: dict[str, np.ndarray], row: int, reason: int) -> None:
    assert np.all(columns["mode"][row:] == 2) and np.all(columns["events"][row:] & safety.HOLD)
    assert np.all(columns["events"][row:] & reason)


@pytest.mark.parametrize("trigger", ["estop_file", "supervisor"])
def test_adversarial_dexterous_policy_then_estop(tmp_path: Path, trigger: str) -> None:
    estop_file = tmp_path / "ESTOP"
    raised: list[float] = []

    def estop_after_one_second(supervisor: Supervisor, status: dict[str, np.ndarray]) -> None:
        if status["step"][0] >= 100 and not raised:
            if trigger == "estop_file":
                estop_file.touch()
            else:
                supervisor.estop()
            raised.append(time.perf_counter())

    columns, meta, result, lim = deploy(
        tmp_path, "door", AdversarialPolicy(get_spec("door")), 2.0, estop_after_one_second, estop_file=str(estop_file)
    )
    assert_every_command_safe(columns, lim)
    events = columns["events"]
    assert np.any(events & safety.NON_FINITE_ACTION) and np.any(events & safety.CLIPPED)
    assert np.any(events & safety.RATE_LIMITED) and np.any(events & safety.JOINT_MARGIN)
    assert np.all(np.isnan(columns["raw_action"][columns["mode"] == 2]))
    # the e-stop takes effect in the first period that starts after it was raised, and latches
    first = first_row_after(columns, raised[0])
    assert columns["t_boundary"][first] <= raised[0] + meta["period"]
    assert_held_from(columns, first, safety.ESTOP)
    assert result.summary["safe_stop"]["reasons"] == ["estop"] and result.robot["sim_steps"] > 100


def test_adversarial_tabletop_policy_then_stale_observations(tmp_path: Path) -> None:
    frozen: list[float] = []

    def freeze_robot(supervisor: Supervisor, status: dict[str, np.ndarray]) -> None:
        if status["step"][0] >= 30 and not frozen:
            os.kill(supervisor.robot_pid, signal.SIGSTOP)  # the simulator stops publishing, like a dead driver
            frozen.append(time.perf_counter())
        elif frozen and status["state"][0] == 2.0:
            os.kill(supervisor.robot_pid, signal.SIGCONT)

    push = get_spec("push")
    small_box = replace(default_limits(push), workspace_low=(1.25, 0.65, 0.40), workspace_high=(1.45, 0.85, 0.55))
    columns, meta, result, lim = deploy(tmp_path, "push", AdversarialPolicy(push), 2.0, freeze_robot, limits=small_box)
    assert_every_command_safe(columns, lim)
    events = columns["events"]
    assert np.any(events & safety.WORKSPACE) and np.any(events & safety.NON_FINITE_ACTION)
    # the policy pushes outward all the time; the gripper stays in the box up to the Fetch mocap's tracking lag
    grip = columns["obs"][:, lim.ws_obs].astype(np.float64)
    outside = np.maximum(lim.ws_low - grip, 0) + np.maximum(grip - lim.ws_high, 0)
    assert outside.max() <= TRACKING_LAG, outside.max()
    # the observation went stale at (last stamp + stale_after); the first period starting after that holds
    age = columns["t_wake"] - columns["obs_stamp"]
    stale = int(np.argmax(age > lim.stale_after))
    assert stale > 0 and np.all(age[:stale] <= lim.stale_after)
    became_stale = columns["obs_stamp"][stale] + lim.stale_after
    assert columns["t_boundary"][stale] <= became_stale + meta["period"]
    assert_held_from(columns, stale, safety.STALE_OBSERVATION)
    # motion dims are zeroed in the hold, the gripper keeps its last command
    held = columns["command"][stale:]
    assert np.all(held[:, list(lim.ws_act)] == 0.0)
    assert np.all(held[:, 3] == columns["command"][stale - 1, 3])


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_door_deploy(tmp_path: Path, log: Path, duration: float, **popen: Any) -> subprocess.Popen[str]:
    """`awac-robot deploy` of a small door policy as its own process, its stdout piped."""
    spec = get_spec("door")
    policy = write_policy(small_actor(spec), spec, tmp_path / "door.onnx")
    command = [sys.executable, "-m", "awac_robot", "deploy", "--policy", str(policy), "--duration", str(duration)]
    return subprocess.Popen([*command, "--log", str(log)], stdout=subprocess.PIPE, text=True, cwd=tmp_path, **popen)


def test_killing_the_supervisor_stops_controller_and_robot(tmp_path: Path) -> None:
    log = tmp_path / "killed"
    supervisor = start_door_deploy(tmp_path, log, 30, start_new_session=True)
    pids: list[int] = []
    for line in supervisor.stdout:
        if line.startswith("deploy: robot pid"):
            words = line.split()
            pids = [int(words[3]), int(words[words.index("controller") + 2])]
        if line.startswith("[running]"):
            break
    assert pids, "the supervisor never reported its children"
    supervisor.kill()
    killed = time.monotonic()
    supervisor.wait()
    while not all(_dead(pid) for pid in pids) and time.monotonic() - killed < 10:
        time.sleep(0.02)
    assert all(_dead(pid) for pid in pids)
    columns, meta = load_log(log / CONTROLLER_LOG)  # the controller held and closed its log on the way out
    assert columns["mode"][-1] == 2 and columns["events"][-1] & safety.ESTOP and meta["exit"] == "signal"
    assert np.all(columns["mode"][:-1] == 1)


WRITER = """
import sys
import numpy as np
from awac_robot.control.shm import Slot
slot = Slot.attach(sys.argv[1], int(sys.argv[2]))
values = np.empty(slot.size)
for i in range(1, int(sys.argv[3]) + 1):
    values.fill(i)
    slot.write(values)
slot.close()
"""


def test_slot_reads_are_never_torn_across_processes() -> None:
    size, count = 512, 20_000
    slot = Slot.create(size)
    try:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, slot.name, str(size), str(count)])
        out, seen, good = np.zeros(size), 0, 0
        while seen < count and (writer.poll() is None or slot.version() > seen):
            version = slot.read(out, max_tries=50)
            if version < 0:  # the writer kept the slot busy: no values, and `out` keeps the last good ones
                assert np.all(out == seen)
                continue
            assert np.all(out == out[0]), "a read mixed two writes"
            assert version >= seen and out[0] == version
            seen, good = version, good + 1
        assert writer.wait() == 0
        assert slot.read(out) == count and np.all(out == count) and good > 100
    finally:
        slot.close()


def test_exported_door_expert_solves_the_door_in_real_time(tmp_path: Path, capsys) -> None:
    weights = ADROIT / "door_expert.npz"
    if not weights.exists():
        pytest.skip(absent(weights))
    policy = tmp_path / "policies" / "door.onnx"
    import_dapg_policy(weights, "door", policy, verify=1000, eval_episodes=0)
    log = tmp_path / "door-run"
    argv = ["deploy", "--policy", str(policy), "--limits", str(ROOT / "deploy" / "door.yaml"), "--duration", "2.3"]
    assert main([*argv, "--log", str(log), "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])  # the JSON summary follows the status lines
    assert summary["robot"]["episodes"] >= 1 and summary["robot"]["successes"] == summary["robot"]["episodes"]
    assert summary["safe_stop"] is None and summary["steps"] >= 200
    columns, _ = load_log(log / CONTROLLER_LOG)
    assert np.all(columns["mode"][:-1] == 1) and columns["obs"][:, 28].max() >= 1.35  # door hinge opened


def test_a_deploy_whose_robot_died_fails_and_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    deploy = start_door_deploy(tmp_path, run_dir, 20, stderr=subprocess.PIPE)
    assert deploy.stdout is not None
    for line in deploy.stdout:
        if line.startswith("deploy: robot pid"):
            os.kill(int(line.split()[3]), signal.SIGKILL)
            break
    out, err = deploy.communicate(timeout=60)
    assert deploy.returncode == 1
    assert err.strip().splitlines()[-1].startswith("awac-robot deploy: FAILED: robot process exited with code -9")
    assert "controller:" in out  # the summary of what the controller logged is still printed
    assert "FAILED: robot process exited with code -9" in (run_dir / SUPERVISOR_LOG).read_text()
    columns, meta = load_log(run_dir / CONTROLLER_LOG)
    assert columns["mode"][-1] == 2 and meta["exit"] == "signal"  # held, then stopped by the supervisor


def test_an_unwritable_or_used_log_folder_is_refused_before_starting(tmp_path: Path, capsys) -> None:
    spec = get_spec("door")
    policy = write_policy(small_actor(spec), spec, tmp_path / "door.onnx")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for log, says in ((not_a_folder / "run", "is a file, not a folder"), (tmp_path, "already holds a run")):
        assert main(["deploy", "--policy", str(policy), "--duration", "1", "--log", str(log)]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "--log" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.onnx", "file"]


def test_a_slot_left_mid_write_reads_as_never_written() -> None:
    """A writer stopped (SIGSTOP) or killed inside Slot.write leaves its sequence number odd for good:
    the supervisor must not wait on it forever, and must see its heartbeat as lost."""
    slot = Slot.create(CONTROLLER_LAYOUT.size)
    try:
        values = np.full(CONTROLLER_LAYOUT.size, 7.0)
        slot.write(values)
        assert read_fields(slot, CONTROLLER_LAYOUT)["stamp"][0] == 7.0
        slot._seq[0] = slot._seq[0] + 1  # the first half of a write, and then nothing
        fields = read_fields(slot, CONTROLLER_LAYOUT)
        assert fields["stamp"][0] == 0.0 and fields["state"][0] == 0.0
    finally:
        slot.close()
