"""`awac-robot check-robot` (issue 34): the fault drills against the simulated robot, the network driver and the
documented example driver, as real processes and signals; and a broken driver that the drills catch."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from network_helpers import ArmServerProcess

from awac_robot.cli import main
from awac_robot.control.drills import DRILLS

ROOT = Path(__file__).resolve().parents[1]
TESTS, DOCS = ROOT / "tests", ROOT / "docs"
LINE = re.compile(r"^(PASS|FAIL)  (\S+)\s+(?:hold latency ([\d.]+) ms \(bound ([\d.]+) ms\); )?(.*)$")


def check_robot(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, tuple[str, float | None]]]:
    """Run check-robot; its exit code and, per drill, the verdict and the hold latency it printed (ms)."""
    code = main(["check-robot", *argv])
    printed: dict[str, tuple[str, float | None]] = {}
    for line in capsys.readouterr().out.splitlines():
        match = LINE.match(line)
        if match:
            verdict, name, latency, bound = match.group(1), match.group(2), match.group(3), match.group(4)
            if latency is not None:
                assert float(latency) <= float(bound) or verdict == "FAIL", line
            printed[name] = (verdict, float(latency) if latency else None)
    return code, printed


def assert_all_passed(code: int, printed: dict[str, tuple[str, float | None]], drills: list[str]) -> None:
    assert code == 0 and sorted(printed) == sorted(drills), printed
    assert all(verdict == "PASS" for verdict, _ in printed.values()), printed
    holds = [d for d in drills if d not in ("rate-violation", "workspace-wall")]
    assert all(printed[d][1] is not None for d in holds)  # every hold drill printed its latency


def test_drills_on_the_simulated_robot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drills = ["controller-sigkill", "nan-command", "rate-violation"]
    code, printed = check_robot(capsys, "--task", "door", "--drills", ",".join(drills), "--log", str(tmp_path / "d"))
    assert_all_passed(code, printed, drills)


def test_drills_on_the_network_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = ArmServerProcess("push", seconds=120)
    config = tmp_path / "robot.yaml"
    config.write_text(f"host: 127.0.0.1\nport: {server.port}\n")
    drills = ["controller-sigstop", "out-of-bounds", "workspace-wall"]
    try:
        argv = ["--task", "push", "--robot", "network", "--robot-config", str(config), "--drills", ",".join(drills)]
        code, printed = check_robot(capsys, *argv, "--log", str(tmp_path / "d"))
    finally:
        server.stop()
    assert_all_passed(code, printed, drills)


def test_the_documented_example_driver_is_the_file_and_passes_drills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (DOCS / "example_driver.py").read_text()
    guide = (DOCS / "deploy.md").read_text()
    assert f"```python\n{source}```" in guide, "docs/deploy.md must show docs/example_driver.py as it is"
    monkeypatch.syspath_prepend(str(DOCS))
    monkeypatch.setenv("PYTHONPATH", str(DOCS))  # the robot process imports the driver as a user's would
    drills = ["stale-observations", "nan-command"]
    argv = ["--task", "push", "--robot", "example_driver:ExampleArmDriver", "--drills", ",".join(drills)]
    code, printed = check_robot(capsys, *argv, "--log", str(tmp_path / "d"))
    assert_all_passed(code, printed, drills)


def test_a_driver_that_does_not_hold_fails_the_drills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    argv = ["--task", "push", "--robot", "drivers_for_tests:RecklessDriver", "--drills", "nan-command"]
    code, printed = check_robot(capsys, *argv, "--log", str(tmp_path / "d"))
    assert code == 1 and printed["nan-command"][0] == "FAIL"


def test_unknown_drills_and_used_folders_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-robot", "--task", "door", "--drills", "workspace-wall", "--log", str(tmp_path / "a")]) == 2
    assert "no drill 'workspace-wall' for task door" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert main(["check-robot", "--task", "door", "--log", str(tmp_path / "used")]) == 2
    assert "already holds drill records" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("task", ["door", "push"])
def test_every_drill_on_the_simulated_robot(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str) -> None:
    code, printed = check_robot(capsys, "--task", task, "--seed", "3", "--log", str(tmp_path / "d"))
    expected = [d for d in DRILLS if task == "push" or d != "workspace-wall"]
    assert_all_passed(code, printed, expected)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["door", "push"])
def test_every_drill_on_the_network_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str) -> None:
    server = ArmServerProcess(task, seconds=300)
    config = tmp_path / "robot.yaml"
    config.write_text(f"port: {server.port}\n")
    start = time.monotonic()
    try:
        argv = ["--task", task, "--robot", "network", "--robot-config", str(config), "--seed", "4"]
        code, printed = check_robot(capsys, *argv, "--log", str(tmp_path / "d"))
    finally:
        server.stop()
    assert time.monotonic() - start < 300
    assert_all_passed(code, printed, [d for d in DRILLS if task == "push" or d != "workspace-wall"])
