"""Every task's demonstrators, and hints whose commands really produce a store of successful demonstrations."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from reference_data import ADROIT, absent

from awac_robot.cli import main
from awac_robot.demonstrators import catalog
from awac_robot.demonstrators.catalog import collect_hint, task_demonstrators
from awac_robot.demonstrators.scripted import scripted_tasks
from awac_robot.envs import builtin_task_files, task_names
from awac_robot.store import DemoStore

#: the hinted commands run in the default test run for these (cheap) tasks; all of them in the slow run
QUICK = ("reach", "door")


def run_hinted_commands(task: str, tmp_path: Path) -> DemoStore:
    """Run the commands `awac-robot tasks` gives for `task`, for real, with 2 episodes instead of 100.

    A published expert's weights are taken from the reference data (the hint names the file
    the DAPG project publishes; the test skips when it is absent).
    """
    store = tmp_path / f"{task}.zarr"
    for command in task_demonstrators(task).commands(store):
        argv = shlex.split(command)
        assert argv[0] == "awac-robot"
        argv = argv[1:]
        if argv[0] == "collect":
            argv[argv.index("--episodes") + 1] = "2"
            argv.append("--no-progress")
        if argv[0] == "import-policy":
            weights = ADROIT / argv[2]
            if not weights.exists():
                pytest.skip(absent(weights))
            argv[2] = str(weights)
            argv[argv.index("--out") + 1] = str(tmp_path / argv[argv.index("--out") + 1])
            argv += ["--verify", "1000", "--eval-episodes", "0"]
        if "--demonstrator" in argv and argv[argv.index("--demonstrator") + 1].startswith("policy:policies/"):
            at = argv.index("--demonstrator") + 1
            argv[at] = f"policy:{tmp_path / argv[at].removeprefix('policy:')}"
        assert main(argv) == 0, command
    return DemoStore.open(store)


def _runnable(task: str) -> bool:
    demos = task_demonstrators(task)
    return demos.scripted or demos.published is not None


@pytest.mark.parametrize("task", [t for t in QUICK if _runnable(t)])
def test_hinted_commands_fill_a_store_with_successful_demonstrations(task: str, tmp_path: Path) -> None:
    store = run_hinted_commands(task, tmp_path)
    meta = store.episode_meta()
    assert store.num_episodes == 2 and meta["success"].all(), meta["success"]


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in task_names() if _runnable(t) and t not in QUICK])
def test_hinted_commands_fill_a_store_for_every_task(task: str, tmp_path: Path) -> None:
    store = run_hinted_commands(task, tmp_path)
    assert store.num_episodes == 2 and store.episode_meta()["success"].any()


def test_every_shipped_task_has_a_way_to_successful_demonstrations() -> None:
    # The shipped tasks only: a task another test registered (the registry is process-wide) may have none.
    for task in builtin_task_files():
        demos = task_demonstrators(task)
        assert demos.scripted or demos.published is not None, f"{task} has no scripted or published expert"


def test_hints_follow_the_table() -> None:
    store = Path("demos/pen.zarr")
    pen = collect_hint("pen", store)
    assert "`awac-robot import-policy dapg pen_expert.npz --task pen --out policies/pen-dapg.onnx`" in pen
    assert "--demonstrator policy:policies/pen-dapg.onnx" in pen and "\n" not in pen
    for task in scripted_tasks():
        hint = collect_hint(task, store)
        assert f"`awac-robot collect --task {task} --episodes 100 --store {store}`" in hint
        assert "--demonstrator" not in hint


def test_finetune_without_a_store_names_the_command_for_its_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.zarr"
    assert main(["finetune", "--task", "pen", "--store", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "import-policy dapg pen_expert.npz --task pen" in err and err.count("\n") == 1
    assert not missing.exists() and not (tmp_path / "run").exists()


def test_tasks_lists_each_tasks_demonstrators_and_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    table = out.split("\ndemonstrators:")[0].splitlines()
    rows = {line.split()[0]: line for line in table if line and line.split()[0] in task_names()}
    assert rows["pen"].endswith("dapg expert, policy") and rows["push"].endswith("scripted, keyboard, policy")
    assert "awac-robot import-policy dapg pen_expert.npz --task pen" in out
    for task in task_names():
        assert f"awac-robot collect --task {task} " in out


def test_demo_refuses_a_task_without_a_scripted_expert(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--task", "pen", "--out", str(tmp_path / "demo")]) == 2
    assert "has none" in capsys.readouterr().err and not (tmp_path / "demo").exists()


def test_tasks_shows_what_the_bench_measured_beside_each_demonstrator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figures come from the file bench/demonstrators.py writes; a task it has not measured says so."""
    figures = tmp_path / "teaching.json"
    row = {"demonstrator": "scripted", "stores": [{"episodes": 50, "demonstrator_success": 0.98, "bc_success": 0.61}]}
    row["stores"].append({"episodes": 200, "demonstrator_success": 0.98, "bc_success": 0.85})
    figures.write_text(json.dumps({"push": row}))
    monkeypatch.setattr(catalog, "TEACHING", figures)
    assert main(["tasks"]) == 0
    measured = capsys.readouterr().out.split("\nmeasured")[1].split("\n\n")[0].splitlines()
    lines = {line.split()[0]: line for line in measured[2:]}
    assert lines["push"].split(None, 1)[1] == "scripted 98%, BC 61% on 50, 85% on 200 episodes"
    assert lines["reach"].endswith("not measured") and set(lines) == set(task_names())
