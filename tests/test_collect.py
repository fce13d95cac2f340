"""`collect` on real MuJoCo envs into a real store, and the `collect` / `demos` commands."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, CollectError, collect, resolve_demonstrator
from awac_robot.envs import TaskEnv, get_spec, make_env
from awac_robot.export import OPSET, write_onnx
from awac_robot.onnx_policy import PolicyMetadata
from awac_robot.spec import SpecMismatch
from awac_robot.store import DemoStore


class LinearDemonstrator:
    """A fixed random linear policy: deterministic in the observation, so runs are reproducible."""

    source = "policy"

    def __init__(self, keep: bool = True) -> None:
        self._weights: np.ndarray | None = None
        self._keep = keep
        self.episodes = 0

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        if self._weights is None:
            self._weights = np.random.default_rng(7).normal(size=(env.config.act_dim, env.config.obs_dim))
        self.episodes += 1

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self._weights @ obs).astype(np.float32)

    def keep_episode(self) -> bool:
        """Drop every second episode when asked, like a person rejecting takes."""
        return self._keep or self.episodes % 2 == 1


def _collect(path: Path, demo: LinearDemonstrator, **overrides) -> object:
    config = CollectConfig(task="reach", episodes=3, store=path, seed=10, progress=False, **overrides)
    return collect(config, demonstrator=demo)


def test_collect_records_exact_episodes_that_replay(tmp_path: Path) -> None:
    summary = _collect(tmp_path / "reach.zarr", LinearDemonstrator(), noise=0.3)
    store = DemoStore.open(tmp_path / "reach.zarr")
    meta = store.episode_meta()
    assert summary.episodes_kept == store.num_episodes == 3
    assert meta["seed"].tolist() == [10, 11, 12] and set(meta["source"].tolist()) == {"policy"}
    assert summary.steps_kept == store.num_steps == 150 and summary.successes == int(meta["success"].sum())
    assert summary.store_bytes == store.size_on_disk() > 0

    assert_episodes_replay(store, "reach")


def assert_episodes_replay(store: DemoStore, task: str) -> None:
    """Replaying the recorded (noisy, clipped) actions from the recorded seed reproduces every
    observation, including each episode's final one: nothing is lost, torn or invented."""
    env = make_env(task)
    for episode in store.episodes():
        assert np.abs(episode.action).max() <= 1.0
        obs, _ = env.reset(seed=episode.seed)
        replayed = [obs]
        for action in episode.action:
            obs, reward, terminated, truncated, _ = env.step(action)
            replayed.append(obs)
        np.testing.assert_array_equal(np.stack(replayed), episode.obs)
        assert truncated and episode.truncated[-1] and not episode.terminated.any()
        assert reward == (0.0 if episode.success[-1] else -1.0)


def test_collector_killed_with_sigkill_keeps_every_published_episode(tmp_path: Path) -> None:
    store_path = tmp_path / "reach.zarr"
    command = [sys.executable, "-m", "awac_robot", "collect", "--task", "reach", "--episodes", "1000"]
    command += ["--store", str(store_path), "--noise", "0.2", "--no-progress"]
    collector = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (store_path.exists() and DemoStore.open(store_path).num_episodes >= 4):
        assert time.monotonic() < deadline and collector.poll() is None, collector.stderr.read().decode()
        time.sleep(0.02)
    time.sleep(random.Random(3).uniform(0.0, 0.1))
    collector.send_signal(signal.SIGKILL)
    assert collector.wait(timeout=30) == -signal.SIGKILL

    store = DemoStore.open(store_path)
    count = store.num_episodes
    assert store.episode_meta()["seed"].tolist() == list(range(count)) and store.num_steps == 50 * count
    assert_episodes_replay(store, "reach")
    config = CollectConfig(task="reach", episodes=1, store=store_path, seed=count, noise=0.2, progress=False)
    collect(config)  # the dead collector's lock is gone and its leftovers are trimmed
    assert DemoStore.open(store_path).num_episodes == count + 1


def test_runs_are_reproducible_and_noise_changes_them(tmp_path: Path) -> None:
    runs = {}
    for name, noise, perturb in (("a", 0.2, 0.0), ("b", 0.2, 0.0), ("quiet", 0.0, 0.0), ("perturbed", 0.2, 1.0)):
        _collect(tmp_path / f"{name}.zarr", LinearDemonstrator(), noise=noise, perturb=perturb)
        runs[name] = DemoStore.open(tmp_path / f"{name}.zarr").load_transitions()
    np.testing.assert_array_equal(runs["a"].action, runs["b"].action)
    np.testing.assert_array_equal(runs["a"].next_obs, runs["b"].next_obs)
    assert not np.array_equal(runs["a"].action, runs["quiet"].action)
    assert not np.array_equal(runs["a"].action, runs["perturbed"].action)


def test_rejected_episodes_are_not_stored(tmp_path: Path) -> None:
    summary = _collect(tmp_path / "kept.zarr", LinearDemonstrator(keep=False))
    meta = DemoStore.open(tmp_path / "kept.zarr").episode_meta()
    assert (summary.episodes_run, summary.episodes_kept) == (3, 2)
    assert meta["seed"].tolist() == [10, 12]


def test_collect_command_with_the_scripted_door_expert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "demos" / "door.zarr"  # the default store path, shared with `awac-robot train`
    assert main(["collect", "--task", "door", "--episodes", "2", "--seed", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    meta = DemoStore.open(store).episode_meta()
    assert meta["source"].tolist() == ["scripted", "scripted"] and meta["seed"].tolist() == [5, 6]
    solved = int(meta["success"].sum())
    assert f"success rate {solved / 2:.1%} ({solved}/2)" in out and "collected 2 episodes (0 dropped), 400 steps" in out
    assert main(["demos", "info", str(store)]) == 0
    assert "episodes   2, steps 400" in capsys.readouterr().out


def test_collect_refuses_a_store_of_another_task(tmp_path: Path) -> None:
    _collect(tmp_path / "reach.zarr", LinearDemonstrator())
    config = CollectConfig(task="push", episodes=1, store=tmp_path / "reach.zarr", progress=False)
    with pytest.raises(SpecMismatch, match="name is 'reach', task 'push' needs 'push'"):
        collect(config, demonstrator=LinearDemonstrator())
    assert DemoStore.open(tmp_path / "reach.zarr").num_episodes == 3


def test_bad_requests_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CollectError, match="unknown demonstrator 'joystick'"):
        resolve_demonstrator("joystick", make_env("reach"))
    with pytest.raises(CollectError, match="--noise"):
        CollectConfig(task="reach", episodes=1, store=tmp_path / "x.zarr", noise=-1.0)
    code = main(["collect", "--task", "reach", "--store", str(tmp_path / "x.zarr"), "--demonstrator", "joystick"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "unknown demonstrator" in error
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    ("flags", "named"), [(["--noise", "nan"], "--noise"), (["--noise", "inf"], "--noise"), (["--seed", "-1"], "--seed")]
)
def test_bad_numbers_are_refused_before_a_store_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    store = tmp_path / "reach.zarr"
    code = main(["collect", "--task", "reach", "--episodes", "1", "--store", str(store), "--no-progress", *flags])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and named in error
    assert not store.exists() and list(tmp_path.iterdir()) == []


def test_demos_info_and_merge_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _collect(tmp_path / "a.zarr", LinearDemonstrator())
    _collect(tmp_path / "b.zarr", LinearDemonstrator(keep=False))
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    assert main(["demos", "merge", a, b, "--out", str(tmp_path / "c")]) == 0
    merged = DemoStore.open(tmp_path / "c")
    assert merged.num_episodes == 5 and merged.episode_meta()["seed"].tolist() == [10, 11, 12, 10, 12]
    capsys.readouterr()

    assert main(["demos", "info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "task       reach" in out and "episodes   5, steps 250" in out
    assert "compression" in out and "MB on disk" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("policy")] == [["policy", "5", "250"]]

    push = CollectConfig(task="push", episodes=1, store=tmp_path / "push.zarr", progress=False)
    collect(push, demonstrator=LinearDemonstrator())
    code = main(["demos", "merge", a, str(tmp_path / "push.zarr"), "--out", str(tmp_path / "d")])
    assert code == 2 and "made for a different task" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["demos", "info", str(tmp_path)]) == 2
    assert "not a demo store" in capsys.readouterr().err


def _write_linear_onnx(task: str, path: Path) -> torch.nn.Sequential:
    """A real exported ONNX policy (tanh of a fixed linear map) with the awac-robot metadata."""
    spec = get_spec(task)
    torch.manual_seed(0)
    policy = torch.nn.Sequential(torch.nn.Linear(spec.obs_dim, spec.act_dim), torch.nn.Tanh()).eval()
    meta = PolicyMetadata(task, spec, spec.control_period, "test", 0, "test", OPSET)
    write_onnx(policy, spec, path, meta)
    return policy


def test_collect_from_an_onnx_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _write_linear_onnx("reach", tmp_path / "reach.onnx")
    store_path = tmp_path / "reach.zarr"
    args = ["collect", "--task", "reach", "--episodes", "2", "--no-progress", "--store"]
    assert main([*args, str(store_path), "--demonstrator", f"policy:{tmp_path / 'reach.onnx'}"]) == 0
    store = DemoStore.open(store_path)
    assert store.episode_meta()["source"].tolist() == ["policy", "policy"]
    data = store.load_transitions()
    with torch.no_grad():
        expected = policy(torch.from_numpy(data.obs)).numpy()
    np.testing.assert_allclose(data.action, expected, atol=1e-5)

    _write_linear_onnx("push", tmp_path / "push.onnx")
    capsys.readouterr()
    code = main([*args, str(tmp_path / "other.zarr"), "--demonstrator", f"policy:{tmp_path / 'push.onnx'}"])
    assert code == 2 and "different task" in capsys.readouterr().err
    assert not (tmp_path / "other.zarr").exists()


def _collect_cli(store: Path, *extra: str) -> int:
    return main(["collect", "--task", "reach", "--episodes", "2", "--store", str(store), "--no-progress", *extra])


def test_collecting_again_continues_the_seeds_or_refuses_repeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Collecting twice used to repeat seeds 0.. and store byte-identical episodes."""
    store_path = tmp_path / "reach.zarr"
    assert _collect_cli(store_path) == 0
    assert "continuing" not in capsys.readouterr().out
    assert _collect_cli(store_path) == 0
    out = capsys.readouterr().out
    assert f"store {store_path} already holds seeds 0-1 from scripted: continuing at seed 2\n" in out
    assert DemoStore.open(store_path).episode_meta()["seed"].tolist() == [0, 1, 2, 3]

    before = DemoStore.open(store_path).load_transitions()
    assert _collect_cli(store_path, "--seed", "3") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds seeds 3 from scripted, which --seed 3 --episodes 2" in error
    assert "leave out --seed to continue at seed 4" in error
    after = DemoStore.open(store_path).load_transitions()
    assert after.num_episodes == 4 and np.array_equal(after.obs, before.obs)

    assert _collect_cli(store_path, "--seed", "10") == 0  # no overlap: taken as given
    assert _collect_cli(store_path) == 0
    assert "continuing at seed 12" in capsys.readouterr().out
    seeds = DemoStore.open(store_path).episode_meta()["seed"].tolist()
    assert seeds == [0, 1, 2, 3, 10, 11, 12, 13] and len(set(seeds)) == len(seeds)


class OtherLinearDemonstrator(LinearDemonstrator):
    """Another demonstrator: its episodes of the same seeds are different data, so they are not repeats."""


def test_seeds_continue_per_demonstrator(tmp_path: Path) -> None:
    store_path = tmp_path / "reach.zarr"
    for demo in (LinearDemonstrator(), OtherLinearDemonstrator(), LinearDemonstrator()):
        config = CollectConfig(task="reach", episodes=2, store=store_path, progress=False)
        collect(config, demonstrator=demo)
    store = DemoStore.open(store_path)
    assert store.episode_meta()["seed"].tolist() == [0, 1, 0, 1, 2, 3]
    assert [batch.demonstrator for batch in store.batches] == [
        "test_collect.LinearDemonstrator",
        "test_collect.OtherLinearDemonstrator",
        "test_collect.LinearDemonstrator",
    ]


def test_collect_records_its_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "reach.zarr"
    assert _collect_cli(store_path, "--noise", "0.1", "--perturb", "0.5", "--seed", "7") == 0
    policy_path = tmp_path / "reach.onnx"
    _write_linear_onnx("reach", policy_path)
    assert _collect_cli(store_path, "--demonstrator", f"policy:{policy_path}") == 0
    store = DemoStore.open(store_path)
    scripted, policy = store.batches
    assert (scripted.kind, scripted.demonstrator, scripted.noise, scripted.perturb) == ("collect", "scripted", 0.1, 0.5)
    assert scripted.seed_range == (7, 8) and scripted.arguments == {"task": "reach", "episodes": 2, "reward": "sparse"}
    assert scripted.awac_robot_version and scripted.host and scripted.started_utc
    assert "collect --task reach --episodes 2" in scripted.command and "--seed 7" in scripted.command
    assert policy.demonstrator == f"policy:{policy_path.resolve()}" and policy.seed_range == (0, 1)
    assert policy.arguments["sha256"] == hashlib.sha256(policy_path.read_bytes()).hexdigest()
    assert store.episode_meta()["batch"].tolist() == [0, 0, 1, 1]
    capsys.readouterr()
    assert main(["demos", "info", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "batch 0: collect by scripted, noise 0.1, perturb 0.5, seeds 7-8, 2 episodes (scripted)" in out
    assert f"batch 1: collect by policy:{policy_path.resolve()}, noise 0, perturb 0, seeds 0-1" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"), (["--noise", "nan"], "finite")],
)
def test_bad_seed_and_noise_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert _collect_cli(tmp_path / "x.zarr", *flags) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "x.zarr").exists()
