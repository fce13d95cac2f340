"""`awac-robot deploy` refuses what cannot work before anything starts, and ends every run with its last line.

Each refusal is one line on stderr (exit 2) and leaves no run folder behind; the runs are real
supervisor, controller and robot processes, stopped by real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from onnx_helpers import small_actor, write_policy

from awac_robot.cli import main
from awac_robot.control.runlog import load_log
from awac_robot.control.supervisor import CONTROLLER_LOG, SUPERVISOR_LOG
from awac_robot.envs import get_spec


@pytest.fixture(scope="module")
def door_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = get_spec("door")
    return write_policy(small_actor(spec), spec, tmp_path_factory.mktemp("policy") / "door.onnx")


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("case", ["empty", "missing folder", "link into a missing folder", "dangling link", "pressed"])
def test_an_estop_file_that_cannot_work_refuses_to_start(
    tmp_path: Path, door_policy: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    if case == "empty":  # a script passing an unset "$ESTOP"
        estop, says = "", "field 'estop_file' must be a file path"
    elif case == "missing folder":
        estop, says = str(tmp_path / "no-such-dir" / "ESTOP"), "does not exist"
    elif case == "link into a missing folder":
        (tmp_path / "gone").symlink_to(tmp_path / "removed")
        estop, says = str(tmp_path / "gone" / "ESTOP"), "does not exist"
    elif case == "dangling link":
        (tmp_path / "ESTOP").symlink_to(tmp_path / "removed" / "target")
        estop, says = str(tmp_path / "ESTOP"), "is a link to"
    else:
        (tmp_path / "ESTOP").touch()
        estop, says = str(tmp_path / "ESTOP"), "exists already"
    log = tmp_path / "run"
    err = refused(capsys, ["deploy", "--policy", str(door_policy), "--estop-file", estop, "--log", str(log)])
    assert says in err and "estop" in err.replace("-", "")
    assert not log.exists()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--duration", "nan", "--duration must be a positive number"),
        ("--duration", "-1", "--duration must be a positive number"),
        ("--duration", "inf", "--duration must be a positive number"),
        ("--seed", "-1", "--seed must be an integer in [0, "),
        ("--seed", str(2**70), "--seed must be an integer in [0, "),
    ],
)
def test_a_duration_or_seed_that_cannot_run_is_refused(
    tmp_path: Path, door_policy: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    log = tmp_path / "run"
    err = refused(capsys, ["deploy", "--policy", str(door_policy), flag, value, "--log", str(log)])
    assert says in err
    assert not log.exists()


def test_a_second_deploy_on_the_same_log_is_refused_and_sigterm_ends_the_first_cleanly(
    tmp_path: Path, door_policy: Path
) -> None:
    log = tmp_path / "run"
    command = [sys.executable, "-m", "awac_robot", "deploy", "--policy", str(door_policy), "--duration", "60"]
    first = subprocess.Popen(
        [*command, "--log", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("[running]"):
            break
    second = subprocess.run([*command, "--log", str(log)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"awac-robot deploy: error: {log} is the run folder of another deploy (pid {first.pid} on "
        f"{os.uname().nodename}): choose another --log"
    ]
    assert first.poll() is None  # the first run goes on, its log untouched by the second
    first.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    out, err = first.communicate(timeout=60)
    assert time.monotonic() - stopped < 15
    assert first.returncode == 0, err
    assert "Traceback" not in err and "leaked shared_memory" not in err
    assert "stopping on SIGTERM" in out and "controller:" in out  # the summary is printed
    lines = (log / SUPERVISOR_LOG).read_text().splitlines()
    assert lines[-1].endswith("run stopped by SIGTERM") and not any("FAILED" in line for line in lines)
    columns, meta = load_log(log / CONTROLLER_LOG)
    assert columns["mode"][-1] == 2 and meta["exit"] in ("normal", "signal")  # held at the end
