"""The training loop end to end: real door env, real Zarr store on disk, real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from awac_robot.cli import main
from awac_robot.envs import get_spec, make_env
from awac_robot.store import DemoStore, Episode
from awac_robot.train.checkpoint import list_checkpoints, load_actor, read_checkpoint, save_checkpoint

TINY = {
    "actor_hidden": [32, 32],
    "critic_hidden": [32, 32],
    "batch_size": 32,
    "threads": 1,
    "eval_episodes": 1,
    "eval_interval": 200,
    "offline_eval_interval": 100,
    "log_interval": 50,
    "checkpoint_interval": 100,
}


def fill_store(path: Path, episodes: int) -> None:
    """Random-action door episodes, recorded exactly as collect would."""
    env = make_env("door")
    rng = np.random.default_rng(0)
    with DemoStore.open_or_create(path, get_spec("door"), "sparse") as store:
        for seed in range(episodes):
            obs, _ = env.reset(seed=seed)
            observations, actions, rewards, successes, done = [obs], [], [], [], False
            while not done:
                action = rng.uniform(-1, 1, 28).astype(np.float32)
                obs, reward, terminated, truncated, info = env.step(action)
                observations.append(obs)
                actions.append(action)
                rewards.append(reward)
                successes.append(info["success"])
                done = terminated or truncated
            last = np.arange(len(actions)) == len(actions) - 1
            store.append(
                Episode(
                    obs=np.stack(observations),
                    action=np.stack(actions),
                    reward=np.array(rewards),
                    terminated=last & terminated,
                    truncated=last & truncated,
                    success=np.array(successes),
                    source="scripted",
                    seed=seed,
                )
            )


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "door.zarr"
    fill_store(path, 2)
    return path


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> Path:
    """A private copy: finetuning appends to its store."""
    import shutil

    copy = tmp_path / "door.zarr"
    shutil.copytree(base_store, copy)
    return copy


def write_config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def finetune_args(store: Path, out: Path, config: Path, offline: int, online: int) -> list[str]:
    return [
        "finetune", "--task", "door", "--store", str(store), "--config", str(config), "--out", str(out),
        "--offline-steps", str(offline), "--online-steps", str(online), "--seed", "3", "--no-progress",
    ]  # fmt: skip


def test_short_finetune_writes_the_run_folder_and_grows_the_store(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(finetune_args(store, out, write_config(tmp_path), offline=150, online=250)) == 0
    assert "250 online env steps" in capsys.readouterr().out
    assert {"config.yaml", "metrics.jsonl", "curve.png", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert yaml.safe_load((out / "config.yaml").read_text())["offline_steps"] == 150
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_success" in r]
    assert [r["phase"] for r in evals] == ["offline", "offline", "online", "online"]
    assert evals[-1]["env_steps"] == 250
    losses = [r for r in rows if "critic_loss" in r]
    assert losses and all(np.isfinite(r["critic_loss"]) and r["updates_per_s"] > 0 for r in losses)
    assert {"q_mean", "weight_max", "weight_ess", "adv_std"} <= set(losses[-1])
    with DemoStore.open(store) as reopened:
        meta = reopened.episode_meta()
    assert list(meta["source"]) == ["scripted", "scripted", "online", "online"]
    assert meta["length"][2:].tolist() == [200, 50]  # the budget truncates the last episode
    online_batch = reopened.batches[meta["batch"][2]]  # the run's episodes are one provenance batch
    assert online_batch.kind == "online" and online_batch.arguments["run_dir"] == str(out.resolve())
    assert meta["batch"][2] == meta["batch"][3] and online_batch.command.startswith("awac-robot finetune")
    loaded = load_actor(out)
    assert loaded.step == 400 and loaded.eval["env_steps"] == 250
    action = loaded.policy(torch.zeros(4, loaded.spec.obs_dim))
    assert action.shape == (4, 28) and action.abs().max() <= 1.0

    assert main(["evaluate", "--checkpoint", str(out), "--episodes", "1"]) == 0
    assert "success" in capsys.readouterr().out


def test_seeded_runs_are_reproducible(base_store: Path, tmp_path: Path) -> None:
    import shutil

    finals = []
    for name in ("a", "b"):
        store = tmp_path / f"{name}.zarr"
        shutil.copytree(base_store, store)
        out = tmp_path / name
        assert main(finetune_args(store, out, write_config(tmp_path), offline=60, online=120)) == 0
        state = read_checkpoint(out)
        with DemoStore.open(store) as reopened:
            online = reopened.load_transitions(["online"])
        finals.append((state["learner"]["actor"], online.action))
    (actor_a, actions_a), (actor_b, actions_b) = finals
    for key in actor_a:
        torch.testing.assert_close(actor_a[key], actor_b[key], rtol=0, atol=0)
    np.testing.assert_array_equal(actions_a, actions_b)


def test_sigkill_then_resume_loses_no_online_episode(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Checkpoints only at the phase boundary, so the kill lands after online episodes the checkpoint never saw.
    config = write_config(tmp_path, checkpoint_interval=100_000, eval_interval=100_000)
    args = finetune_args(store, out, config, offline=50, online=1500)
    proc = subprocess.Popen([sys.executable, "-m", "awac_robot", *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        online_at_kill = 0
        while online_at_kill < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no online episode reached the store in time"
            time.sleep(0.2)
            if (store / "meta" / "episode_ends").exists():
                with DemoStore.open(store) as reader:
                    online_at_kill = reader.num_episodes - 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    with DemoStore.open(store) as reader:
        steps_at_kill = reader.num_steps - 400
        episodes_at_kill = reader.num_episodes
    assert read_checkpoint(out)["counters"]["env_steps"] == 0  # the newest checkpoint predates those episodes

    resume = ["finetune", "--task", "door", "--store", str(store), "--out", str(out), "--resume", "--no-progress"]
    assert main(resume) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.startswith("{")]
    resumed = [r for r in rows if r.get("event") == "resume"]
    assert resumed[-1]["env_steps"] == steps_at_kill  # every stored online episode was reloaded and counted
    state = read_checkpoint(out)
    assert state["counters"]["env_steps"] == 1500
    with DemoStore.open(store) as reader:
        meta = reader.episode_meta()
    assert reader.num_steps - 400 == 1500
    assert len(meta["source"]) > episodes_at_kill and (meta["source"][2:] == "online").all()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path, reward_offset=-1e30)
    assert main(finetune_args(store, out, config, offline=50, online=0)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "non-finite loss at update 1" in err and "last good checkpoint" in err
    kept = list_checkpoints(out)
    assert [p.name for p in kept] == ["ckpt_000000000.pt"]
    assert all(torch.isfinite(p).all() for p in load_actor(out).policy.parameters())


def test_missing_store_says_how_to_collect(tmp_path: Path, capsys) -> None:
    assert main(["finetune", "--task", "door", "--store", str(tmp_path / "none.zarr"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no demo store at" in err and "awac-robot collect --task door" in err


def test_existing_run_folder_needs_resume(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path)
    assert main(finetune_args(store, out, config, offline=10, online=0)) == 0
    assert main(finetune_args(store, out, config, offline=10, online=0)) == 2
    assert "--resume" in capsys.readouterr().err


def test_unknown_config_key_is_one_line(store: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("batch_sise: 64\n")
    assert main(finetune_args(store, tmp_path / "run", config, offline=10, online=0)) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown field 'batch_sise'" in err and len(err.splitlines()) == 1


def test_checkpoints_ignore_a_half_written_file_and_keep_the_newest(tmp_path: Path) -> None:
    for updates in (10, 20, 30):
        save_checkpoint(tmp_path, updates, {"counters": {"updates": updates}}, keep=2)
    (tmp_path / "checkpoints" / ".ckpt_000000040.pt.tmp").write_bytes(b"killed mid-write")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    assert read_checkpoint(tmp_path)["counters"]["updates"] == 30
