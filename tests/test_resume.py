"""A run's lineage: killed and resumed runs, runs sharing a store, damaged checkpoints.

Real `awac-robot finetune` processes killed with SIGKILL, real Zarr stores from the scripted
reach expert, real checkpoint files cut short or flipped on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import assert_gone_soon, finetune_args, processes_of, wait_for, worker_pids, write_config

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.store import DemoStore, StoreError, check_source
from awac_robot.train.checkpoint import list_checkpoints, read_checkpoint
from awac_robot.train.runlog import RunLog

DEMOS = 4  # scripted reach episodes of 50 steps in every test store
#: Online evaluations every 2 episodes and checkpoints every 5, so a redo crosses both.
SETTINGS = {"eval_interval": 100, "offline_eval_interval": 50, "checkpoint_interval": 250}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=DEMOS, store=path, progress=False))
    return path


def copy_store(demos: Path, path: Path) -> Path:
    shutil.copytree(demos, path)
    return path


def config_file(tmp_path: Path, **extra: object) -> Path:
    return write_config(tmp_path, **{**SETTINGS, **extra})


def finetune(store: Path, out: Path, config: Path, offline: int, online: int, *extra: str) -> list[str]:
    return finetune_args(store, out, config, offline, online, *extra, task="reach", seed=1)


def resume(out: Path, *extra: str) -> list[str]:
    return ["finetune", "--task", "reach", "--out", str(out), "--resume", "--no-progress", *extra]


def online_episodes(store: Path) -> int:
    with DemoStore.open(store) as reader:
        return reader.num_episodes - DEMOS


def kill_when(
    args: list[str], store: Path, episodes: int, meanwhile: Callable[[subprocess.Popen], None] | None = None
) -> None:
    """Run the CLI in a subprocess and SIGKILL it once the store holds `episodes` online episodes.

    `meanwhile` acts on the running process first. Its worker processes (and any other
    child) must be gone within seconds of the kill: none outlives it.
    """
    proc = subprocess.Popen([sys.executable, "-m", "awac_robot", *args], stdout=subprocess.DEVNULL)
    try:
        if meanwhile is not None:
            meanwhile(proc)
        wait_for(lambda: online_episodes(store) >= episodes, proc, f"{episodes} online episodes in the store")
        children = processes_of(proc.pid)
        assert len(children) >= 2  # the evaluation and exploration workers at least
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run ended before the kill landed"
        assert_gone_soon(children)
    finally:
        if proc.poll() is None:
            proc.kill()


def evaluation_back_after_its_checkpoint(out: Path, updates: int) -> Callable[[subprocess.Popen], None]:
    """Hold the evaluation worker (SIGSTOP) until the checkpoint at `updates` holds its evaluation as outstanding.

    Then let it go and wait until the trainer has logged that evaluation: a kill now leaves a
    logged result that the checkpoint does not know about, the case a resume must not count twice.
    """

    def hold_and_release(proc: subprocess.Popen) -> None:
        wait_for(lambda: "evaluation" in worker_pids(out), proc, "the evaluation worker")
        worker = worker_pids(out)["evaluation"]
        os.kill(worker, signal.SIGSTOP)  # still starting up: it has answered nothing yet
        checkpoint = out / "checkpoints" / f"ckpt_{updates:09d}.pt"
        wait_for(checkpoint.exists, proc, f"checkpoint {checkpoint.name}")
        assert [r["counters"]["updates"] for r in read_checkpoint(checkpoint)["evals_outstanding"]] == [updates]
        os.kill(worker, signal.SIGCONT)
        wait_for(lambda: updates in [r["updates"] for r in evaluation_rows(out)], proc, "the late evaluation logged")

    return hold_and_release


def evaluation_rows(out: Path) -> list[dict]:
    return [r for r in RunLog(out).rows() if "eval_success" in r]


def final_state(out: Path, store: Path) -> tuple[dict, np.ndarray]:
    state = read_checkpoint(out)
    with DemoStore.open(store) as reader:
        actions = reader.load_transitions([f"online:{state['run_id']}"]).action
    return state, actions


def evaluations(rows: list[dict]) -> list[tuple]:
    return [(r["phase"], r["updates"], r["env_steps"], r["eval_success"]) for r in rows if "eval_success" in r]


#: the default's noise choices (explore_choice: fallback), and under imitate_online: solved which rows the actor
#: is fitted to, depend on the outcomes of earlier episodes: a resume must rebuild them. "paper" is AWAC's own rule.
EXPLORATION = {
    "paper": {"explore_noise": [1.0], "explore_choice": "cycle", "explore_mean": "actor", "imitate_online": "all"},
    "default": {},
}


@pytest.mark.parametrize("exploration", EXPLORATION)
def test_a_run_killed_twice_ends_exactly_like_an_uninterrupted_one(
    exploration: str, demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The offline end's evaluation comes back after its checkpoint, which `handover: best` cannot allow (its hand-over
    # waits for that evaluation; the test of its kill is below), so this run hands over the last learner; nor can the
    # handover's report evaluation, which waits for every evaluation before that checkpoint: none here.
    config = config_file(
        tmp_path, checkpoint_interval=200, handover="last", report_episodes=0, **EXPLORATION[exploration]
    )
    offline, online = 50, 1000  # 20 episodes; online checkpoints after episodes 4, 8, 12 and 16
    whole_store, whole = copy_store(demos, tmp_path / "whole.zarr"), tmp_path / "whole"
    assert main(finetune(whole_store, whole, config, offline, online)) == 0

    store, out = copy_store(demos, tmp_path / "killed.zarr"), tmp_path / "killed"
    late = evaluation_back_after_its_checkpoint(out, offline)
    kill_when(finetune(store, out, config, offline, online), store, 2, late)  # newest checkpoint: offline end
    # The first run went on while the late evaluation came back, so it may have stored more than 2 episodes:
    # kill the second once it has stored 2 of its own (and at least 6 in all), past its checkpoint after episode 4.
    kill_when(resume(out, "--store", str(store)), store, episodes=max(6, online_episodes(store) + 2))
    capsys.readouterr()
    assert main(resume(out, "--store", str(store))) == 0
    printed = capsys.readouterr().out
    assert f"{offline + online} updates, {online} online env steps" in printed
    assert "the store holds" in printed and "redoing their" in printed

    (a, actions_a), (b, actions_b) = final_state(whole, whole_store), final_state(out, store)
    assert (
        b["counters"]
        == a["counters"]
        == {
            "updates": offline + online,
            "env_steps": online,
            "online_episodes": 20,
            "offline_done": True,
        }
    )
    for key, weights in a["learner"]["actor"].items():
        torch.testing.assert_close(b["learner"]["actor"][key], weights, rtol=0, atol=0)
    np.testing.assert_array_equal(actions_b, actions_a)  # the same 1000 exploration actions, none lost or repeated

    rows = RunLog(out).rows()
    resumes = [r for r in rows if r.get("event") == "resume"]
    redos = [r for r in rows if r.get("event") == "redo"]
    assert len(resumes) == 2 and resumes[0]["checkpoint"] == f"ckpt_{offline:09d}.pt"
    assert resumes[0]["redo_evals"] == [offline]
    # The second kill may find any evaluation outstanding, the redone one included when its worker is slow (load):
    # then it is logged once more. Either way the log holds it at least twice: logged, killed, redone ...
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in logged if "eval_success" in r].count(offline) >= 2
    assert resumes[0]["redo_episodes"] >= 2  # everything the killed process had stored
    assert [r["env_steps"] for r in redos] == [50 * r["redo_episodes"] for r in resumes if r["redo_episodes"]]
    assert all(r["actions_reproduced"] == r["env_steps"] for r in redos)  # the redo drew the actions it had taken
    assert evaluations(rows) == evaluations(RunLog(whole).rows())  # ... and counted once: redone rows replace theirs
    noise = {r["explore_noise"] for r in rows if "explore_noise" in r}
    if exploration == "paper":
        assert noise == {1.0}
    else:
        assert len(noise) > 1  # the noise choices varied, and the killed run made the same ones
        with DemoStore.open(store) as reader:  # ... and marked the same rows imitated: some online episodes, not all
            solved = reader.episode_meta()["success"][-20:]
        assert 0 < solved.sum() < 20
        assert all(0 < r["imitated"] < 1 for r in rows if r.get("phase") == "online" and "imitated" in r)


def test_a_second_run_pretrains_on_demonstrations_only_unless_asked(
    demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, config = copy_store(demos, tmp_path / "reach.zarr"), config_file(tmp_path)
    assert main(finetune(store, tmp_path / "first", config, 20, 100)) == 0
    first = read_checkpoint(tmp_path / "first")["run_id"]
    capsys.readouterr()

    assert main(finetune(store, tmp_path / "second", config, 20, 100)) == 0
    assert f"pretraining on {DEMOS} episodes (200 steps): scripted {DEMOS}; left out: online:{first} 2" in (
        capsys.readouterr().out
    )
    second = read_checkpoint(tmp_path / "second")
    assert second["pretraining"] == {
        "episodes": DEMOS,
        "steps": 50 * DEMOS,
        "used": {"scripted": DEMOS},
        "left_out": {f"online:{first}": 2},
    }
    with DemoStore.open(store) as reader:
        sources = reader.episode_meta()["source"].tolist()
    assert sources == ["scripted"] * DEMOS + [f"online:{first}"] * 2 + [f"online:{second['run_id']}"] * 2

    # Asked for by name, the first run's episodes are pretraining data; the second run's are left out.
    assert main(finetune(store, tmp_path / "third", config, 20, 0, "--sources", f"scripted,online:{first}")) == 0
    third = read_checkpoint(tmp_path / "third")["pretraining"]
    assert third["used"] == {f"online:{first}": 2, "scripted": DEMOS} and third["steps"] == 300

    # Resuming the finished first run counts its own 100 env steps, not the 200 online steps the store holds.
    capsys.readouterr()
    assert main(resume(tmp_path / "first")) == 0
    assert "120 updates, 100 online env steps" in capsys.readouterr().out


def test_a_source_that_names_nothing_in_the_store_is_refused(
    demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, config = copy_store(demos, tmp_path / "reach.zarr"), config_file(tmp_path)
    refused = {"online:nobody": "no episodes from source 'online:nobody'", "human": "(it has: scripted)"}
    for sources, said in refused.items():
        assert main(finetune(store, tmp_path / "run", config, 20, 0, "--sources", sources)) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and said in error
        assert not (tmp_path / "run").exists()
    assert main(finetune(store, tmp_path / "run", config, 20, 0, "--sources", "humans")) == 2
    assert "config key 'sources' has an unknown source 'humans'" in capsys.readouterr().err


def test_resume_on_another_store_of_the_same_task_is_refused(
    demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, config, out = copy_store(demos, tmp_path / "reach.zarr"), config_file(tmp_path), tmp_path / "run"
    before = copy_store(demos, tmp_path / "copy-before-the-run.zarr")
    other = tmp_path / "other.zarr"
    collect(CollectConfig(task="reach", episodes=DEMOS, store=other, seed=100, progress=False))
    assert main(finetune(store, out, config, 20, 100)) == 0
    run_id = read_checkpoint(out)["run_id"]
    capsys.readouterr()

    assert main(resume(out, "--store", str(other))) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"trained on store {store.resolve()}" in error
    assert f"{other} is another store" in error and f"resume with --store {store.resolve()}" in error

    assert main(resume(out, "--store", str(before))) == 2  # same demonstrations, but not the run's episodes
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"holds 0 online episodes of run {run_id}" in error
    assert online_episodes(other) == online_episodes(before) == 0  # a refused resume wrote nothing

    assert main(resume(out)) == 0  # without --store: the store the run recorded
    assert "120 updates, 100 online env steps" in capsys.readouterr().out
    moved = store.rename(tmp_path / "moved.zarr")  # the same store elsewhere is the same store, and said so
    assert main(resume(out, "--store", str(moved))) == 0
    assert f"store {moved} is not where the run found it ({store.resolve()})" in capsys.readouterr().out


def offline_run(demos: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """An offline-only run with checkpoints at updates 50 and 100 kept, and the command that made it."""
    store, out = copy_store(demos, tmp_path / "reach.zarr"), tmp_path / "run"
    args = ["train", "--task", "reach", "--store", str(store), "--out", str(out), "--no-progress"]
    config = config_file(tmp_path, checkpoint_interval=50)
    assert main([*args, "--config", str(config), "--offline-steps", "100"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_000000050.pt", "ckpt_000000100.pt"]
    return out, [*args, "--resume"]


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_weight(path: Path) -> None:
    """Flip a byte inside the largest tensor: `torch.load` alone reads it back as a wrong weight."""
    with zipfile.ZipFile(path) as archive:
        tensors = [info for info in archive.infolist() if "/data/" in info.filename]
        record = max(tensors, key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26 : record.header_offset + 30])
    data[record.header_offset + 30 + name_length + extra_length + record.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [cut_short, flip_a_weight])
def test_resume_falls_back_from_a_damaged_latest_checkpoint_and_says_so(
    demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage
) -> None:
    out, args = offline_run(demos, tmp_path)
    latest = list_checkpoints(out)[-1]
    damage(latest)
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "warning:" in captured.err and latest.name in captured.err
    assert "resuming from the previous kept checkpoint ckpt_000000050.pt" in captured.err
    assert "resuming run" in captured.out and "100 updates" in captured.out
    assert (latest.parent / f"{latest.name}.unreadable").exists()  # kept for inspection, not deleted
    assert read_checkpoint(out)["counters"]["updates"] == 100


def test_resume_with_no_readable_checkpoint_says_so(
    demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, args = offline_run(demos, tmp_path)
    for path in list_checkpoints(out):
        cut_short(path)
    capsys.readouterr()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no readable checkpoint in" in error
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_000000050.pt", "ckpt_000000100.pt"]  # left as found


def test_online_sources_carry_a_run_id() -> None:
    check_source("online:door-run_2-1a2b3c4d")
    check_source("online")  # stores written before runs were tagged stay valid
    for bad in ("online:", "online:a b", "online:x/y"):
        with pytest.raises(StoreError, match="online:<run id>"):
            check_source(bad)


def test_a_run_killed_before_its_handover_hands_over_the_same_learner(demos: Path, tmp_path: Path) -> None:
    """`handover: best` keeps the best offline learner in the offline checkpoints, so a kill cannot lose it."""
    config = config_file(tmp_path, handover="best", checkpoint_interval=100)
    offline, online = 600, 100
    whole_store, whole = copy_store(demos, tmp_path / "whole.zarr"), tmp_path / "whole"
    assert main(finetune(whole_store, whole, config, offline, online)) == 0

    store, out = copy_store(demos, tmp_path / "killed.zarr"), tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "awac_robot", *finetune(store, out, config, offline, online)])
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "ckpt_000000200.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    newest = read_checkpoint(out)
    assert not newest["counters"]["offline_done"] and "offline_best" in newest  # killed inside the offline phase
    assert main(resume(out, "--store", str(store))) == 0

    (a, actions_a), (b, actions_b) = final_state(whole, whole_store), final_state(out, store)
    for part in ("actor", "critic", "policy"):
        for key, weights in a["learner"][part].items():
            torch.testing.assert_close(b["learner"][part][key], weights, rtol=0, atol=0)
    np.testing.assert_array_equal(actions_b, actions_a)
    handovers = [r for r in RunLog(out).rows() if r.get("event") == "handover"]
    assert len(handovers) == 1 and handovers == [r for r in RunLog(whole).rows() if r.get("event") == "handover"]
    # ... and scored the handed-over and the final policy once each, as the uninterrupted run did
    reports = [
        [{k: v for k, v in r.items() if k != "time"} for r in RunLog(run).rows() if "report" in r]
        for run in (out, whole)
    ]
    assert [r["report"] for r in reports[0]] == ["handover", "final"] and reports[0] == reports[1]
