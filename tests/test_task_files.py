"""A task file of one's own is checked like a config, never trusted: no shadowing, no absurd numbers, no code.

Each refusal is one line naming the file and the field; the import test runs real `awac-robot`
processes with a module on their path that leaves a mark if anything imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from awac_robot.cli import main
from awac_robot.envs import get_task

REACH = Path(get_task("reach").source).read_text()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name: my_reach_task": "name: door"}, "field 'name' is 'door', a built-in task"),
        ({"name: my_reach_task": "name: ../../etc/x"}, "field 'name' is '../../etc/x'"),
        ({"control_period: 0.04": "control_period: .nan"}, "field 'control_period' must be in"),
        ({"control_period: 0.04": "control_period: 1e-9"}, "field 'control_period' must be in"),
        ({"episode_steps: 50": "episode_steps: 1000000000000"}, "field 'episode_steps' must be in"),
        ({"id: FetchReach-v4": "id: this:Foo-v0"}, "field 'simulator.id' is 'this:Foo-v0'"),
        ({"id: FetchReach-v4": "id: awac_robot/door-v0"}, "field 'simulator.id' is 'awac_robot/door-v0'"),
        ({"size: 16": "size: 100000000"}, "field 'observation.size' must be in"),
        ({"kwargs: {}": "kwargs: {model_path: ../../etc/x}"}, "field 'simulator.kwargs.model_path' is '../../etc/x'"),
    ],
)
def test_a_task_file_that_shadows_or_holds_absurd_values_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, str], field: str
) -> None:
    text = REACH.replace("name: reach", "name: my_reach_task")
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert main(["tasks", "--register", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"awac-robot tasks: error: {path}: {field}"), err


def test_the_shipped_file_by_its_path_is_its_own_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--register", get_task("door").source]) == 0
    assert "\ndoor " in capsys.readouterr().out


def test_a_simulator_id_never_imports_a_module_named_in_the_file(tmp_path: Path) -> None:
    mark = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(mark)!r}, 'w').write('code from a task file ran')\n")
    path = tmp_path / "mine.yaml"
    path.write_text(REACH.replace("name: reach", "name: planted_task").replace("FetchReach-v4", "planted:Foo-v0"))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for argv in (["tasks", "--register", str(path)], ["render", "--task", str(path), "--out", str(tmp_path / "x.png")]):
        done = subprocess.run(
            [sys.executable, "-m", "awac_robot", *argv], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "field 'simulator.id' is 'planted:Foo-v0'" in done.stderr
    assert not mark.exists()


def test_an_unregistered_simulator_id_is_refused_when_the_env_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(REACH.replace("name: reach", "name: nowhere_task").replace("FetchReach-v4", "NoSuchRobot-v3"))
    assert main(["render", "--task", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "field 'simulator.id' is 'NoSuchRobot-v3', which no installed simulator" in err
