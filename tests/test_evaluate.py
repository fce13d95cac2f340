"""`awac-robot evaluate` on a real trained run: the trainer's seeds, ONNX == checkpoint, best.pt, videos, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import imageio_ffmpeg
import pytest
import yaml
from test_finetune import TINY as FINETUNE_TINY

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.export import card_path
from awac_robot.train.checkpoint import BEST, CHECKPOINT_DIR, read_checkpoint
from awac_robot.train.evaluation import (
    MAX_REPORT_EPISODES,
    MAX_SELECT_EPISODES,
    REPORT,
    eval_seed,
    wilson_interval,
)
from awac_robot.train.runlog import RunLog
from awac_robot.video import BAR

TINY = {**FINETUNE_TINY, "eval_episodes": 4, "seed": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    store = root / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=4, store=store, noise=0.1, progress=False))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    argv = ["train", "--task", "reach", "--store", str(store), "--config", str(config), "--offline-steps", "300"]
    assert main([*argv, "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


def evaluate_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_uses_the_trainers_seeds_and_onnx_scores_like_its_checkpoint(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer_last = [row for row in RunLog(run).rows() if "eval_success" in row][-1]
    from_checkpoint = evaluate_json(capsys, "--checkpoint", str(run))
    assert from_checkpoint["episodes"] == TINY["eval_episodes"] and from_checkpoint["seed"] == TINY["seed"]
    assert [e["seed"] for e in from_checkpoint["per_episode"]] == [eval_seed(3, i) for i in range(4)]
    assert from_checkpoint["success_rate"] == trainer_last["eval_success"]
    assert from_checkpoint["mean_return"] == pytest.approx(trainer_last["eval_return"])

    policy = tmp_path / "reach.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(policy)]) == 0
    from_onnx = evaluate_json(capsys, "--policy", str(policy), "--seed", "3", "--episodes", "4")
    for key in ("success_rate", "successes", "ci95", "per_episode", "step", "run_id"):
        assert from_onnx[key] == from_checkpoint[key], key


def test_the_run_keeps_its_best_checkpoint_and_export_takes_it(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evals = [row for row in RunLog(run).rows() if "eval_success" in row]
    best = max(evals, key=lambda row: row["eval_success"])  # max keeps the earliest of equals
    state = read_checkpoint(run / CHECKPOINT_DIR / BEST)
    assert state["eval"]["success_rate"] == best["eval_success"] and state["counters"]["updates"] == best["updates"]

    policy = tmp_path / "best.onnx"
    assert main(["export", "--checkpoint", str(run / CHECKPOINT_DIR / BEST), "--out", str(policy)]) == 0
    card = yaml.safe_load(card_path(policy).read_text())
    assert card["step"] == best["updates"] and card["eval"]["success_rate"] == best["eval_success"]
    scored = evaluate_json(capsys, "--policy", str(policy), "--seed", "3", "--episodes", "4")
    assert scored["success_rate"] == best["eval_success"]


def test_selection_and_report_seeds_never_meet_and_report_seeds_ignore_the_run_seed() -> None:
    report = [eval_seed(run_seed, i, REPORT) for run_seed in (0, 3) for i in range(MAX_REPORT_EPISODES)]
    assert report[:MAX_REPORT_EPISODES] == report[MAX_REPORT_EPISODES:]  # the same starts for every run seed
    assert len(set(report)) == MAX_REPORT_EPISODES and min(report) >= 0
    select = {eval_seed(run_seed, i) for run_seed in (0, 1, 3, 10_000) for i in range(MAX_SELECT_EPISODES)}
    assert len(select) == 4 * MAX_SELECT_EPISODES  # run seeds do not share selection starts either
    assert select.isdisjoint(report)


def test_the_reported_handover_and_final_are_scored_on_the_report_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=4, store=store, noise=0.1, progress=False))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "report_episodes": 3}))
    run = tmp_path / "run"
    argv = ["finetune", "--task", "reach", "--store", str(store), "--config", str(config), "--out", str(run)]
    assert main([*argv, "--offline-steps", "300", "--online-steps", "100", "--no-progress"]) == 0
    assert "handover policy" in capsys.readouterr().out.splitlines()[-1]
    rows = RunLog(run).rows()
    reports = [row for row in rows if "report_success" in row]
    assert [(r["report"], r["phase"], r["updates"], r["env_steps"]) for r in reports] == [
        ("handover", "offline", 300, 0),
        ("final", "online", 400, 100),
    ]
    assert all(r["report_episodes"] == 3 for r in reports)
    assert not any("report_success" in r and "eval_success" in r for r in rows)  # reports are no curve points

    final = evaluate_json(capsys, "--checkpoint", str(run), "--report")  # the run's last checkpoint: its final policy
    assert [e["seed"] for e in final["per_episode"]] == [eval_seed(0, i, REPORT) for i in range(3)]
    assert final["success_rate"] == reports[1]["report_success"]
    assert final["mean_return"] == pytest.approx(reports[1]["report_return"])
    selected = read_checkpoint(run / CHECKPOINT_DIR / BEST)["eval"]  # best.pt: chosen on a curve evaluation
    curve = [row for row in rows if "eval_success" in row]
    assert (selected["updates"], selected["success_rate"]) in [(r["updates"], r["eval_success"]) for r in curve]


def test_evaluate_prints_a_table_and_a_wilson_interval(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "3", "--seed", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"seeds {eval_seed(7, 0)}..{eval_seed(7, 2)}" in lines[0]
    assert lines[1].split() == ["episode", "seed", "steps", "return", "solved", "at", "step"]
    assert [line.split()[:3] for line in lines[2:5]] == [[str(i), str(eval_seed(7, i)), "50"] for i in range(3)]
    assert lines[5].startswith("success ") and "95% interval [" in lines[5] and "(Wilson)" in lines[5]


def test_wilson_interval_matches_the_textbook_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(30, 30) == pytest.approx((0.8865, 1.0), abs=1e-4)


def test_evaluate_writes_one_marked_video_per_episode(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = tmp_path / "videos"
    result = evaluate_json(capsys, "--checkpoint", str(run), "--episodes", "2", "--video", str(videos))
    expected = [
        videos / f"episode_{i:03d}_seed_{e['seed']}_{'solved' if e['solved'] else 'failed'}.mp4"
        for i, e in enumerate(result["per_episode"])
    ]
    assert result["videos"] == [str(p) for p in expected] and sorted(videos.iterdir()) == expected
    reader = imageio_ffmpeg.read_frames(str(expected[0]))
    meta = next(reader)
    assert meta["size"] == (320, 320 + BAR) and len(list(reader)) == 51  # reset + 50 steps at 25 Hz


def test_bad_evaluate_requests_are_one_line_errors(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "0"]) == 2
    assert main(["evaluate", "--policy", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--episodes must be at least 1" in err[0] and "no such policy file" in err[1]
