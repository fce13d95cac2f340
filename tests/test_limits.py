"""Limits files (issue 10, findings 2 and 4): no value switches a check off, every error names file and field,
and the shipped files are the ones in force wherever `deploy` runs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from onnx_helpers import small_actor, write_policy

from awac_robot.cli import main
from awac_robot.control.limits import (
    FETCH_WORKSPACE,
    LimitsError,
    check_config,
    default_config,
    load_config,
    shipped_limits_file,
    shipped_tasks,
)
from awac_robot.control.runlog import load_log
from awac_robot.control.supervisor import CONTROLLER_LOG, Supervisor
from awac_robot.envs import builtin_task_files, get_spec

DOOR, PUSH = get_spec("door"), get_spec("push")
REPO = Path(__file__).resolve().parents[1]

#: (task, limits file text, the field the one-line error must name, what it must say is allowed)
BAD_LIMITS = [
    ("door", "safety:\n  max_rate: .nan\n", "safety.max_rate[0]", "a finite number in (0, 100]"),
    ("push", "safety:\n  workspace_scale: .nan\n", "safety.workspace_scale", "[0.05, 1]"),
    ("door", "safety:\n  act_high: 50\n", "safety.act_high[0]", "(-1, 1]"),
    ("door", "safety:\n  act_low: .nan\n", "safety.act_low[0]", "[-1, 1]"),
    ("door", "safety:\n  stale_after: .inf\n", "safety.stale_after", "[0.01, 0.1]"),
    ("door", "safety:\n  stale_after: 1.0e+9\n", "safety.stale_after", "[0.01, 0.1]"),
    ("door", "safety:\n  max_consecutive_misses: .inf\n", "safety.max_consecutive_misses", "an integer"),
    ("door", "safety:\n  max_consecutive_misses: 5.5\n", "safety.max_consecutive_misses", "an integer"),
    ("door", "safety:\n  max_consecutive_misses: 1000000\n", "safety.max_consecutive_misses", "[0, 20]"),
    ("door", "safety:\n  max_rate: .inf\n", "safety.max_rate[0]", "(0, 100]"),
    ("door", "safety:\n  joint_margin: .nan\n", "safety.joint_margin", "[0, 0.5]"),
    ("door", "safety:\n  command_timeout: .inf\n", "safety.command_timeout", "[0.02, 0.1]"),
    ("door", "safety:\n  stale_after: 1e+1\n", "safety.stale_after", "[0.01, 0.1]"),  # a number (YAML 1.2)
    ("door", 'safety:\n  stale_after: "0.05"\n', "safety.stale_after", "a number, got '0.05' (a string"),
    ("door", "priority: ten\n", "priority", "an integer, got 'ten'"),
    ("door", "rate: .nan\n", "rate", "a finite number in [100, 5000]"),
    ("door", "rate: 1.0e+6\n", "rate", "[100, 5000]"),
    ("door", "prewarm: .inf\n", "prewarm", "[0, 0.01)"),
    ("push", "safety:\n  rate_dims: []\n", "safety.rate_dims", "[0, 1, 2] (the motion dims"),
    ("push", "safety:\n  workspace_obs: [3, 4, 5]\n", "safety.workspace_obs/_act", "the end effector"),
    ("push", "safety:\n  workspace_high: [1.6, 5.0, 0.8]\n", "safety.workspace_high[1]", "inside the table box"),
    ("push", "safety:\n  max_rate: [1.0, 2.0]\n", "safety.max_rate", "a number or a list of 4 numbers"),
]


@pytest.mark.parametrize(("task", "text", "field", "allowed"), BAD_LIMITS)
def test_every_bad_limit_is_refused_in_one_line_naming_file_and_field(
    tmp_path: Path, task: str, text: str, field: str, allowed: str
) -> None:
    path = tmp_path / f"{task}.yaml"
    path.write_text(text)
    with pytest.raises(LimitsError) as caught:
        load_config(path, get_spec(task))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: field '{field}' must be"), message
    assert allowed in message and "nan)" not in message and "invalid literal" not in message


def test_the_cli_refuses_a_bad_limits_file_and_a_bad_flag_before_starting(tmp_path: Path, capsys) -> None:
    policy = write_policy(small_actor(DOOR), DOOR, tmp_path / "door.onnx")
    bad = tmp_path / "door.yaml"
    bad.write_text("safety:\n  max_rate: .nan\n")
    run = ["deploy", "--policy", str(policy), "--log", str(tmp_path / "run")]
    assert main([*run, "--limits", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"awac-robot deploy: error: {bad}: field 'safety.max_rate[0]' must be a finite number in (0, 100], got nan"
    )
    assert main([*run, "--rate", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "with --rate nan: field 'rate' must be a finite number in [100, 5000]" in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # nothing started, nothing written


def test_a_config_built_in_code_gets_the_same_checks(tmp_path: Path) -> None:
    config = default_config(PUSH)
    nan_box = replace(config, limits=replace(config.limits, workspace_scale=float("nan")))
    with pytest.raises(LimitsError, match="field 'safety.workspace_scale'"):
        check_config(nan_box, PUSH)
    policy = write_policy(small_actor(PUSH), PUSH, tmp_path / "push.onnx")
    with pytest.raises(LimitsError, match="field 'safety.workspace_scale'"):
        Supervisor(policy, nan_box, 1.0, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_task_ships_a_limits_file_that_passes_its_checks() -> None:
    assert shipped_tasks() == sorted(builtin_task_files())
    for task in shipped_tasks():
        path = shipped_limits_file(task)
        assert path is not None and path.read_text() == (REPO / "deploy" / f"{task}.yaml").read_text()
        config = load_config(path, get_spec(task))
        assert config.source == str(path)


def _deploy_outside_the_repo(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    policy = write_policy(small_actor(PUSH), PUSH, outside / "push.onnx")
    command = [sys.executable, "-m", "awac_robot", "deploy", "--policy", "push.onnx", "--duration", "0.5"]
    done = subprocess.run([*command, "--log", "run", *flags], cwd=outside, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert policy.exists()
    _, meta = load_log(outside / "run" / CONTROLLER_LOG)
    return done, meta


def test_deploy_outside_the_repo_uses_the_shipped_limits_and_says_so(tmp_path: Path) -> None:
    done, meta = _deploy_outside_the_repo(tmp_path)
    shipped = shipped_limits_file("push")
    assert f"deploy: limits in force: {shipped} (shipped with awac-robot)" in done.stdout
    assert meta["deploy"]["source"] == str(shipped)
    assert meta["deploy"]["limits"]["workspace_high"] == [1.60, 1.10, 0.80]  # deploy/push.yaml, not the defaults


def test_deploy_without_a_limits_file_only_when_asked(tmp_path: Path, capsys) -> None:
    done, meta = _deploy_outside_the_repo(tmp_path, "--no-limits-file")
    assert "limits in force: built-in default bounds of task push (--no-limits-file)" in done.stdout
    assert meta["deploy"]["limits"]["workspace_high"] == list(FETCH_WORKSPACE[1])
    # a task with no shipped file (here a user's own task YAML) is refused unless asked
    own = tmp_path / "my_reach.yaml"
    own.write_text((REPO / "envs" / "reach.yaml").read_text().replace("name: reach", "name: my_reach"))
    spec = get_spec(str(own))
    policy = write_policy(small_actor(spec), spec, tmp_path / "mine.onnx")
    assert main(["deploy", "--policy", str(policy), "--task", str(own), "--log", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no limits file for task 'my_reach'" in err and "--no-limits-file" in err and "\n" not in err
