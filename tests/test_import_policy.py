"""`awac-robot import-policy dapg`: DAPG expert weights -> verified ONNX policy -> `collect --demonstrator policy:`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from reference_data import ADROIT, absent

from awac_robot.cli import main
from awac_robot.collect import run_episode
from awac_robot.dapg_policy import WEIGHT_KEYS, DapgWeights, PolicyImportError, import_dapg_policy
from awac_robot.demonstrators.policy import OnnxPolicyDemonstrator
from awac_robot.envs import get_spec, make_env
from awac_robot.export import card_path
from awac_robot.onnx_policy import OnnxPolicy
from awac_robot.spec import SpecMismatch
from awac_robot.store import DemoStore

PEN_EXPERT = ADROIT / "pen_expert.npz"
needs_pen_expert = pytest.mark.skipif(not PEN_EXPERT.exists(), reason=absent(PEN_EXPERT))


def write_weights(path: Path, obs_dim: int, act_dim: int, hidden: int = 16, seed: int = 0) -> Path:
    """A DAPG-format weight file with random weights (a real MLP, not a trained expert)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "in_shift": rng.normal(0, 0.1, obs_dim),
        "in_scale": rng.uniform(0.5, 2.0, obs_dim),
        "w0": rng.normal(0, 0.5, (hidden, obs_dim)),
        "b0": rng.normal(0, 0.1, hidden),
        "w1": rng.normal(0, 0.5, (hidden, hidden)),
        "b1": rng.normal(0, 0.1, hidden),
        "w2": rng.normal(0, 0.5, (act_dim, hidden)),
        "b2": rng.normal(0, 0.1, act_dim),
        "out_shift": rng.normal(0, 0.1, act_dim),
        "out_scale": rng.uniform(0.5, 1.5, act_dim),
        "log_std": np.full(act_dim, -1.0),
    }
    np.savez(path, **arrays)
    return path


def test_weights_become_a_verified_policy_with_card_and_metadata(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "pen_expert.npz", 45, 24)
    out = tmp_path / "policies" / "pen-dapg.onnx"
    report = import_dapg_policy(weights, "pen", out, verify=1000, eval_episodes=2)
    assert report.export.verified_on == 1000 and report.export.max_abs_diff <= 1e-5
    assert report.success_rate is not None and 0.0 <= report.success_rate <= 1.0

    policy = OnnxPolicy(out)
    policy.check_spec(get_spec("pen"))
    assert policy.metadata.run_id == "dapg:pen_expert" and policy.metadata.task == "pen"
    obs = np.stack([make_env("pen").reset(seed=seed)[0] for seed in range(5)])
    reference = DapgWeights.load(weights, get_spec("pen")).actions(obs)
    np.testing.assert_allclose(policy.batch(obs), reference, atol=1e-5)

    card = yaml.safe_load(card_path(out).read_text())
    assert card["origin"]["format"] == "dapg" and card["origin"]["weights"] == "pen_expert.npz"
    assert card["verification"]["observations"] == 1000 and card["eval"]["episodes"] == 2


def test_imported_policy_is_a_collect_demonstrator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = write_weights(tmp_path / "w.npz", 45, 24)
    out = tmp_path / "pen.onnx"
    argv = ["import-policy", "dapg", str(weights), "--task", "pen", "--out", str(out)]
    assert main([*argv, "--verify", "1000", "--eval-episodes", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"--demonstrator policy:{out}" in printed and "numpy forward pass" in printed
    store = tmp_path / "pen.zarr"
    argv = ["collect", "--task", "pen", "--episodes", "2", "--store", str(store), "--demonstrator", f"policy:{out}"]
    assert main([*argv, "--no-progress"]) == 0
    meta = DemoStore.open(store).episode_meta()
    assert list(meta["source"]) == ["policy", "policy"] and list(meta["length"]) == [200, 200]


def test_weights_for_another_task_are_refused_in_one_line(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "door_expert.npz", 39, 28)
    out = tmp_path / "pen.onnx"
    with pytest.raises(
        SpecMismatch, match=r"maps 39 observation numbers to 28 actions, task 'pen' needs 45 -> 24"
    ) as err:
        import_dapg_policy(weights, "pen", out, verify=1000, eval_episodes=0)
    assert "\n" not in str(err.value) and not out.exists()


def test_broken_weight_files_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = dict(np.load(write_weights(tmp_path / "good.npz", 45, 24)))
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in good.items() if k != "w1"})
    np.savez(tmp_path / "inconsistent.npz", **{**good, "b1": np.zeros(3)})
    (tmp_path / "text.npz").write_text("not an npz")
    cases = {"missing.npz": "lacks the DAPG policy arrays w1", "inconsistent.npz": "b1 is (3,), not (16,)"}
    cases["text.npz"] = "not an .npz of numeric arrays"
    for name, message in cases.items():
        with pytest.raises(PolicyImportError, match=re.escape(message)):
            import_dapg_policy(tmp_path / name, "pen", tmp_path / "out.onnx", verify=1000, eval_episodes=0)
        argv = ["import-policy", "dapg", str(tmp_path / name), "--task", "pen", "--out", str(tmp_path / "out.onnx")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()
    assert main(["import-policy", "dapg", str(tmp_path / "absent.npz"), "--task", "pen", "--out", "x.onnx"]) == 2
    assert set(WEIGHT_KEYS) == set(good)


def pen_expert_solved(tmp_path: Path, episodes: int) -> list[bool]:
    """The real DAPG pen expert, imported, run as a demonstrator on seeds 0.. episodes-1."""
    out = tmp_path / "pen-dapg.onnx"
    import_dapg_policy(PEN_EXPERT, "pen", out, verify=1000, eval_episodes=0)
    env = make_env("pen")
    demo = OnnxPolicyDemonstrator(out, get_spec("pen"))
    return [run_episode(env, demo, seed).solved for seed in range(episodes)]


@needs_pen_expert
def test_dapg_pen_expert_solves_pen_through_collect(tmp_path: Path) -> None:
    assert sum(pen_expert_solved(tmp_path, 3)) >= 2


@pytest.mark.slow
@needs_pen_expert
def test_dapg_pen_expert_fifty_episode_success_rate(tmp_path: Path) -> None:
    solved = np.mean(pen_expert_solved(tmp_path, 50))
    assert solved >= 0.7, solved  # measured 74% (any step) over seeds 0-49
