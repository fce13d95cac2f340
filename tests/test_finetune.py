"""The training loop end to end: real door env, real Zarr store on disk, real subprocesses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import TINY, finetune_args, write_config

from awac_robot.cli import main
from awac_robot.envs import get_spec, make_env
from awac_robot.store import DemoStore, Episode
from awac_robot.train.checkpoint import list_checkpoints, load_actor, read_checkpoint, save_checkpoint
from awac_robot.train.config import ConfigError, load_config
from awac_robot.train.finetune import Trainer
from awac_robot.train.returns import returns_of_episodes


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


def test_short_finetune_writes_the_run_folder_and_grows_the_store(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(finetune_args(store, out, write_config(tmp_path), offline=150, online=250)) == 0
    assert "250 online env steps" in capsys.readouterr().out
    assert {"config.yaml", "metrics.jsonl", "curve.png", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert yaml.safe_load((out / "config.yaml").read_text())["offline_steps"] == 150
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_success" in r]
    handed_back = len([r for r in rows if r.get("event") == "handover"])  # `handover: best` logs its evaluation again
    assert [r["phase"] for r in evals] == ["offline"] * (2 + handed_back) + ["online", "online"]
    assert evals[-1]["env_steps"] == 250
    losses = [r for r in rows if "critic_loss" in r]
    assert losses and all(np.isfinite(r["critic_loss"]) and r["updates_per_s"] > 0 for r in losses)
    assert {"q_mean", "weight_max", "weight_ess", "adv_std"} <= set(losses[-1])
    loaded = load_actor(out)
    with DemoStore.open(store) as reopened:
        meta = reopened.episode_meta()
    assert list(meta["source"]) == ["scripted", "scripted", *[f"online:{loaded.run_id}"] * 2]
    assert meta["length"][2:].tolist() == [200, 50]  # the budget truncates the last episode
    online_batch = reopened.batches[meta["batch"][2]]  # the run's episodes are one provenance batch
    assert online_batch.kind == "online" and online_batch.arguments["run_dir"] == str(out.resolve())
    assert meta["batch"][2] == meta["batch"][3] and online_batch.command.startswith("awac-robot finetune")
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
            online = reopened.load_transitions([f"online:{state['run_id']}"])
        finals.append((state["learner"]["actor"], online.action, logged_figures(out)))
    (actor_a, actions_a, figures_a), (actor_b, actions_b, figures_b) = finals
    for key in actor_a:
        torch.testing.assert_close(actor_a[key], actor_b[key], rtol=0, atol=0)
    np.testing.assert_array_equal(actions_a, actions_b)
    evaluations, losses = figures_a
    assert [r["phase"] for r in evaluations] == ["offline", "online"] and losses  # both phases were scored
    assert figures_b == figures_a  # every loss and evaluation figure, to the last digit


def logged_figures(out: Path) -> tuple[list[dict], list[dict]]:
    """A run's evaluation rows and loss rows, without what depends on the clock.

    Evaluation rows are written when the worker's result comes back, so their place among the
    loss rows may vary from run to run; each kind keeps its own order.
    """
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    figures = [{k: v for k, v in r.items() if k not in ("time", "updates_per_s")} for r in rows if "phase" in r]
    return [r for r in figures if "eval_success" in r], [r for r in figures if "eval_success" not in r]


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


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("lr: 1e-3\ntarget_tau: 5E-3\nawr_lambda: 1.0e0\nreward_offset: -1e-1\n")
    config = load_config(path)
    assert (config.lr, config.target_tau, config.awr_lambda, config.reward_offset) == (1e-3, 5e-3, 1.0, -0.1)
    path.write_text('lr: "1e-3"\n')  # a string stays a string, and is refused as one
    with pytest.raises(ConfigError, match="key 'lr' must be float, got '1e-3'"):
        load_config(path)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("log_std_init: .nan", "'log_std_init' must be finite, got nan"),
        ("awr_lambda: .inf", "'awr_lambda' must be finite, got inf"),
        ("policy_average: -.inf", "'policy_average' must be finite, got -inf"),
        ("batch_size: -4", "'batch_size' must be in [2, 65536], got -4"),
        ("actor_hidden: [64, -1]", "'actor_hidden' needs positive sizes, got (64, -1)"),
        ("online_steps: -5", "'online_steps' must be >= 0, got -5"),
        ("log_std_init: 2.0", "'log_std_init' must be in [log_std_min, log_std_max]"),
        ("seed: -1", "'seed' must be in [0, 4294967295]"),
    ],
)
def test_bad_config_values_are_one_line_errors_naming_the_field(
    store: Path, tmp_path: Path, capsys, line: str, named: str
) -> None:
    key = line.split(":")[0]
    config = tmp_path / "bad.yaml"  # tiny, so a value wrongly accepted trains for a moment, not for hours
    config.write_text(yaml.safe_dump({k: v for k, v in {**TINY, "offline_steps": 2}.items() if k != key}) + line + "\n")
    out = tmp_path / "run"
    assert main(["train", "--task", "door", "--store", str(store), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{config}: config key {named}" in err
    assert not out.exists()


def test_checkpoints_ignore_a_half_written_file_and_keep_the_newest(tmp_path: Path) -> None:
    for updates in (10, 20, 30):
        save_checkpoint(tmp_path, updates, {"counters": {"updates": updates}}, keep=2)
    (tmp_path / "checkpoints" / ".ckpt_000000040.pt.tmp").write_bytes(b"killed mid-write")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    assert read_checkpoint(tmp_path)["counters"]["updates"] == 30


def test_handover_best_starts_online_from_the_best_offline_evaluation(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Random-action demos: every evaluation scores 0, so the best is the first (the earliest of equals).
    config = write_config(tmp_path, handover="best", keep_checkpoints=10)
    assert main(finetune_args(store, out, config, offline=300, online=50)) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    offline = [r for r in rows if r.get("phase") == "offline" and "eval_success" in r]
    assert [r["updates"] for r in offline] == [100, 200, 300, 300]
    assert offline[-1]["handover_from"] == 100 and offline[-1]["eval_success"] == offline[0]["eval_success"]
    assert [r["from_updates"] for r in rows if r.get("event") == "handover"] == [100]
    at_best, handed_over = (read_checkpoint(out / "checkpoints" / f"ckpt_{n:09d}.pt") for n in (100, 300))
    for part in ("actor", "critic", "target_critic", "policy"):
        for key, value in at_best["learner"][part].items():
            torch.testing.assert_close(handed_over["learner"][part][key], value, rtol=0, atol=0)
    assert handed_over["counters"]["updates"] == 300 and "offline_best" not in handed_over
    assert "offline_best" in read_checkpoint(out / "checkpoints" / "ckpt_000000200.pt")


@pytest.mark.parametrize("explore_mean", ["actor", "policy"])
def test_exploration_samples_around_the_configured_mean(store: Path, tmp_path: Path, explore_mean: str) -> None:
    out = tmp_path / "run"
    config = write_config(
        tmp_path, explore_mean=explore_mean, explore_noise=[1.0], policy_average=0.01, keep_checkpoints=10
    )
    assert main(finetune_args(store, out, config, offline=100, online=1)) == 0
    start = read_checkpoint(out / "checkpoints" / "ckpt_000000100.pt")  # the learner the first online step used
    actor, policy = (load_actor(out).policy, load_actor(out).policy)
    actor.load_state_dict(start["learner"]["actor"])
    policy.load_state_dict(start["learner"]["policy"])
    with DemoStore.open(store) as reopened:
        episode = list(reopened.episodes())[-1]
    obs = torch.from_numpy(episode.obs[:1])
    noise = torch.randn((1, 28), generator=torch.Generator().manual_seed(3 + 2))  # the run's exploration generator
    with torch.no_grad():
        means = {"actor": actor(obs), "policy": policy(obs)}
        expected = (means[explore_mean] + noise * actor.clamped_log_std().exp()).clamp(-1, 1)
        other = means[{"actor": "policy", "policy": "actor"}[explore_mean]] + noise * actor.clamped_log_std().exp()
    np.testing.assert_allclose(episode.action[0], expected[0].numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(episode.action[0], other.clamp(-1, 1)[0].numpy(), atol=1e-4)


def test_the_exploration_noise_ladder_goes_episode_by_episode(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(
        tmp_path, explore_noise=[0.0, 0.5], explore_choice="cycle", explore_mean="actor", keep_checkpoints=10
    )
    assert main(finetune_args(store, out, config, offline=100, online=201)) == 0  # two episodes: 200 steps + 1
    with DemoStore.open(store) as reopened:
        first, second = list(reopened.episodes())[-2:]
    # Each episode starts at a checkpoint (taken on episode boundaries): its learner and exploration generator.
    for episode, updates, scale in ((first, 100, 0.0), (second, 300, 0.5)):
        state = read_checkpoint(out / "checkpoints" / f"ckpt_{updates:09d}.pt")
        actor = load_actor(out).policy
        actor.load_state_dict(state["learner"]["actor"])
        generator = torch.Generator()
        generator.set_state(state["explore_rng"])
        with torch.no_grad():
            expected = actor.sample(actor(torch.from_numpy(episode.obs[:1])), generator, scale)
        np.testing.assert_allclose(episode.action[0], expected[0].numpy(), rtol=0, atol=1e-6)
    with torch.no_grad():
        mean = actor(torch.from_numpy(second.obs[:1]))[0].numpy()
    assert not np.allclose(second.action[0], mean, atol=1e-3)  # the second episode is noisy


def test_explore_noise_must_be_finite_multiples(store: Path, tmp_path: Path, capsys) -> None:
    for bad in ("[]", "[1.0, .nan]", "[-0.5]"):
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump({**TINY, "offline_steps": 2}) + f"explore_noise: {bad}\n")
        assert main(["train", "--task", "door", "--store", str(store), "--config", str(config)]) == 2
        assert "config key 'explore_noise' needs one or more finite multiples in [0, 10]" in capsys.readouterr().err


def test_explore_choice_and_memory_are_checked(store: Path, tmp_path: Path, capsys) -> None:
    for key, bad, message in (
        ("explore_choice", "ucb", "must be one of ('cycle', 'bandit', 'fallback')"),
        ("explore_memory", "0", "must be >= 1 (episodes)"),
    ):
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump({**TINY, "offline_steps": 2}) + f"{key}: {bad}\n")
        assert main(["train", "--task", "door", "--store", str(store), "--config", str(config)]) == 2
        assert f"config key '{key}' {message}" in capsys.readouterr().err


def test_target_floor_return_floors_every_row_at_its_episode_return(store: Path, tmp_path: Path) -> None:
    with DemoStore.open(store, "a") as demos:  # a solved episode: the door opens at step 150 and stays open
        episode = next(iter(demos.episodes()))
        solved = np.arange(episode.length) >= 150
        demos.append(replace(episode, reward=np.where(solved, 0.0, -1.0), success=solved, seed=99), spec=demos.spec)
    out = tmp_path / "run"
    assert main(finetune_args(store, out, write_config(tmp_path, target_floor="return"), offline=100, online=250)) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["floored"] < 1 for r in rows if "critic_loss" in r)  # the solved episode's targets are lifted
    trainer = Trainer(out, None, None, resume=True, online=True, progress=False)  # its replay, rebuilt from the store
    try:
        with DemoStore.open(store) as demos:
            meta, data = demos.episode_meta(), demos.load_transitions()
        expected = returns_of_episodes(data.reward, data.terminal, meta["length"], 0.99)
        np.testing.assert_allclose(trainer.replay.data[: trainer.replay.size, -1].numpy(), expected, rtol=1e-6)
    finally:
        trainer.store.close()
        trainer.log.close()
    ours = expected[400:600]  # the solved episode, after the two random ones
    assert ours[150] == 0.0 and ours[149] == -1.0 and ours[0] == pytest.approx(-(1 - 0.99**150) / 0.01, rel=1e-5)
    np.testing.assert_allclose(np.delete(expected, np.arange(400, 600)), -100.0, rtol=1e-5)  # failures: no information


def test_n_step_rows_match_the_stores_episodes_live_and_when_rebuilt_on_resume(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path, n_step=3, offline_steps=100, online_steps=250))
    live = Trainer(out, store, config, resume=False, online=True, progress=False)
    live.train()  # two online episodes: 200 steps, then one cut at 50 by the budget
    with DemoStore.open(store) as demos:
        meta, data = demos.episode_meta(), demos.load_transitions()
    assert int(meta["length"].sum()) == live.replay.size and meta["length"][-2:].tolist() == [200, 50]
    want_reward, want_next, want_terminal = [], [], []
    for start, length in zip(np.cumsum(meta["length"]) - meta["length"], meta["length"], strict=True):
        for t in range(start, start + length):
            k = min(3, start + length - t)
            want_reward.append(sum(0.99**j * data.reward[t + j] for j in range(k)))
            want_next.append(data.next_obs[t + k - 1])
            want_terminal.append(data.terminal[t + k - 1])
    rows = live.replay.data[: live.replay.size]
    batch = live.replay.batch_of(torch.arange(live.replay.size))  # every row, in order
    np.testing.assert_allclose(batch.reward.numpy(), want_reward, rtol=1e-5)  # online episodes included
    np.testing.assert_allclose(batch.next_obs.numpy(), np.array(want_next), rtol=1e-6)
    np.testing.assert_array_equal(batch.terminal.numpy(), want_terminal)
    assert batch.steps is not None and set(batch.steps.tolist()) == {1.0, 2.0, 3.0}
    rebuilt = Trainer(out, None, None, resume=True, online=True, progress=False)
    try:
        assert torch.equal(rebuilt.replay.data[: rebuilt.replay.size], rows)  # a resume learns from the same rows
    finally:
        rebuilt.store.close()
        rebuilt.log.close()


def test_target_clip_takes_its_range_from_every_reward_the_run_has_seen(store: Path, tmp_path: Path) -> None:
    with DemoStore.open(store, "a") as demos:  # a solved episode beside the random ones: reward 0 from step 150 on
        episode = next(iter(demos.episodes()))
        solved = np.arange(episode.length) >= 150
        demos.append(replace(episode, reward=np.where(solved, 0.0, -1.0), success=solved, seed=99), spec=demos.spec)
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path, target_clip="reward_range", offline_steps=100, online_steps=250))
    live = Trainer(out, store, config, resume=False, online=True, progress=False)
    live.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in rows if "critic_loss" in r]
    assert updates and all(0 <= r["clipped"] <= 1 for r in updates)
    with DemoStore.open(store) as demos:
        data = demos.load_transitions()
    assert data.reward.min() == -1.0 and data.reward.max() == 0.0  # online episodes included
    torch.testing.assert_close(live.replay.sample(4).reward_range, torch.tensor([-1.0, 0.0]))
    rebuilt = Trainer(out, None, None, resume=True, online=True, progress=False)
    try:  # a resume rebuilds the same rows from the store, and with them the same range
        torch.testing.assert_close(rebuilt.replay.sample(4).reward_range, torch.tensor([-1.0, 0.0]))
        assert torch.equal(rebuilt.replay.data[: rebuilt.replay.size], live.replay.data[: live.replay.size])
    finally:
        rebuilt.store.close()
        rebuilt.log.close()
