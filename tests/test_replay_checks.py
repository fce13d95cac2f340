"""`replay` compares every column it can recompute and names the one that differs, without guessing why.

Real stores tampered with through zarr itself (as a hand edit or a bad tool would), and a real
deployment whose robot record lost its end.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from onnx_helpers import small_actor, write_policy

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.control.limits import default_config
from awac_robot.control.supervisor import ROBOT_LOG, Supervisor
from awac_robot.envs import get_spec
from awac_robot.replay import replay_deployment, replay_episodes


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=2, store=path, progress=False))
    return path


def tampered(store: Path, tmp_path: Path, array: str, row: int, change: object) -> Path:
    copy = tmp_path / f"{array.replace('/', '-')}.zarr"
    shutil.copytree(store, copy)
    group = zarr.open_group(copy, mode="r+")
    values = np.asarray(group[array][row])
    group[array][row] = change(values) if callable(change) else change
    return copy


@pytest.mark.parametrize(
    ("array", "row", "change", "says"),
    [
        ("data/reward", 7, lambda r: r + 1.0, "reward first at step 7"),
        ("data/success", 3, lambda s: not s, "success first at step 3"),
        ("data/terminated", 5, True, "terminated first at step 5"),
        ("data/action", 4, lambda a: -a, "obs first at step 5"),
        ("meta/seed", 0, 12345, "obs first at step 0"),
    ],
)
def test_replay_names_the_tampered_column_and_step(
    reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], array: str, row: int, change, says: str
) -> None:
    assert main(["replay", str(reach_store), "--episode", "0"]) == 0
    out = capsys.readouterr().out
    assert "replay matches the store exactly" in out and "compared: obs, reward, terminated, truncated, success" in out
    store = tampered(reach_store, tmp_path, array, row, change)
    assert main(["replay", str(store), "--episode", "0"]) == 1
    out = capsys.readouterr().out.strip()
    assert "replay DIFFERS from the store: " in out and says in out, out
    assert "another simulator" not in out and "task definition" not in out  # no guessed cause
    check = replay_episodes(store, [0])[0].check
    assert [d.column for d in check.differences][0] == says.split()[0]


def test_replay_of_a_robot_record_without_its_end_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = get_spec("door")
    policy = write_policy(small_actor(spec), spec, tmp_path / "door.onnx")
    run = tmp_path / "run"
    Supervisor(policy, default_config(spec), 1.0, run, seed=1, out=sys.stderr).run()
    assert main(["replay", "--log", str(run)]) == 0
    whole = capsys.readouterr().out
    assert "matches the robot record exactly" in whole and "no end" not in whole
    cut = tmp_path / "cut" / ROBOT_LOG
    cut.parent.mkdir()
    data = (run / ROBOT_LOG).read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # as a robot process killed mid-run leaves it
    assert main(["replay", "--log", str(cut)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "but the record has no end (killed: the process died without closing its log)" in out[-1]
    assert all("no end" not in line for line in out[:-1])
    assert replay_deployment(cut)[-1].check.missing is not None
