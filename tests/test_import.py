"""`demos import dapg`: the human door demos, and the restricted unpickler against hostile files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from reference_data import ADROIT, absent

from awac_robot.cli import main
from awac_robot.envs import get_spec
from awac_robot.importers import DapgImportError, import_dapg, load_restricted_pickle
from awac_robot.spec import SpecMismatch
from awac_robot.store import DemoStore

ROOT = Path(__file__).resolve().parents[1]
DOOR_DEMOS = ADROIT / "door-v0_demos.pickle"
needs_door_demos = pytest.mark.skipif(not DOOR_DEMOS.exists(), reason=absent(DOOR_DEMOS))
HINGE = get_spec("door").obs_names.index("door_hinge_angle")


def _read_trusted_reference() -> list[dict]:
    """The reference file itself, read through the restricted loader the importer uses."""
    return load_restricted_pickle(DOOR_DEMOS)


@needs_door_demos
def test_human_door_demos_import_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "door.zarr"
    assert main(["demos", "import", "dapg", str(DOOR_DEMOS), "--task", "door", "--store", str(store_path)]) == 0
    assert "imported 25 episodes" in capsys.readouterr().out

    raw = _read_trusted_reference()
    store = DemoStore.open(store_path)
    meta = store.episode_meta()
    assert store.num_episodes == 25 and set(meta["source"].tolist()) == {"human"}
    assert 7 <= int(meta["success"].sum()) <= 8
    for demo, episode in zip(raw, store.episodes(), strict=True):
        # the last recorded action has no observation after it: dropped, and every kept transition is exact
        assert episode.length == len(demo["actions"]) - 1
        np.testing.assert_array_equal(episode.obs, demo["observations"].astype(np.float32))
        np.testing.assert_array_equal(episode.action, np.clip(demo["actions"][:-1], -1, 1).astype(np.float32))
        solved = demo["observations"][1:, HINGE] >= 1.35
        np.testing.assert_array_equal(episode.success, solved)
        np.testing.assert_array_equal(episode.reward, np.where(solved, 0.0, -1.0))
        assert episode.truncated[-1] and episode.truncated.sum() == 1 and not episode.terminated.any()
    assert np.abs(np.concatenate([d["actions"] for d in raw])).max() > 1.0  # clipping was needed

    data = store.load_transitions(sources=["human"])
    assert len(data) == sum(len(d["actions"]) - 1 for d in raw) and data.terminal.sum() == 0


class _RunsShellOnLoad:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_hostile_pickle_is_refused_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "demos.pickle"
    hostile.write_bytes(pickle.dumps([{"observations": np.zeros((3, 39)), "actions": _RunsShellOnLoad()}]))
    with pytest.raises(DapgImportError, match=r"refused to load (posix|os)\.system"):
        import_dapg(hostile, "door", tmp_path / "door.zarr")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "door.zarr").exists()


def test_wrong_files_and_tasks_write_nothing(tmp_path: Path) -> None:
    wrong_size = tmp_path / "pen_like.pickle"
    demo = {"observations": np.zeros((5, 45)), "actions": np.zeros((5, 24)), "rewards": np.zeros(5)}
    wrong_size.write_bytes(pickle.dumps([demo]))
    with pytest.raises(SpecMismatch, match=r"episode 0 has observations \(5, 45\).*needs \(T, 39\)"):
        import_dapg(wrong_size, "door", tmp_path / "door.zarr")
    with pytest.raises(DapgImportError, match="DAPG files hold Adroit hand demonstrations .* 'push' is not one"):
        import_dapg(wrong_size, "push", tmp_path / "push.zarr")
    own_task = tmp_path / "my_pen.yaml"  # a task of the user's own: no rule is known for it
    own_task.write_text((ROOT / "envs" / "pen.yaml").read_text().replace("name: pen", "name: my_pen"))
    with pytest.raises(DapgImportError, match="'my_pen' has no success rule that can be recomputed") as err:
        import_dapg(wrong_size, str(own_task), tmp_path / "push.zarr")
    assert "\n" not in str(err.value)
    not_a_list = tmp_path / "dict.pickle"
    not_a_list.write_bytes(pickle.dumps({"observations": 1}))
    with pytest.raises(DapgImportError, match="non-empty list of episode dicts"):
        import_dapg(not_a_list, "door", tmp_path / "door.zarr")
    garbage = tmp_path / "garbage.pickle"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(DapgImportError, match="not a readable pickle"):
        import_dapg(garbage, "door", tmp_path / "door.zarr")
    assert not (tmp_path / "door.zarr").exists() and not (tmp_path / "push.zarr").exists()
