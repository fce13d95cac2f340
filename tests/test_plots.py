"""Run figures and logs from real (tiny) finetuning runs: plot for 1 and 3 runs, curve.png, TensorBoard, plain lines."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml
from tensorboardX.proto.event_pb2 import Event
from test_finetune import TINY as FINETUNE_TINY

from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.train.evaluation import wilson_interval
from awac_robot.train.plots import Run, success_curve
from awac_robot.train.runlog import CURVE, TENSORBOARD, RunLog

TINY = {**FINETUNE_TINY, "eval_episodes": 2, "eval_interval": 25, "offline_eval_interval": 25, "log_interval": 25}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Three seeds of reach finetuning (50 updates offline, 50 env steps online); seed 0 with --tensorboard."""
    root = tmp_path_factory.mktemp("plots")
    store = root / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=3, store=store, progress=False))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    folders, printed = [], ""
    for seed in SEEDS:
        out = root / f"reach-s{seed}"
        argv = ["finetune", "--task", "reach", "--store", str(store), "--config", str(config), "--seed", str(seed)]
        argv += ["--offline-steps", "50", "--online-steps", "50", "--out", str(out), "--no-progress"]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(argv + (["--tensorboard"] if seed == 0 else [])) == 0
        printed = printed or stdout.getvalue()
        folders.append(out)
    return {"folders": folders, "printed": printed}


def test_plot_of_one_run_and_its_curve(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = runs["folders"][0]
    out = tmp_path / "one.png"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (1 run)"
    assert iio.imread(out).shape[:2] == (750, 1800)
    curve = iio.imread(run / CURVE)  # redrawn at every evaluation of the run
    assert curve.shape[:2] == (400, 1000) and curve[..., :3].std() > 10


def test_plot_of_three_seeds_pools_their_episodes(runs: dict, tmp_path: Path) -> None:
    folders = runs["folders"]
    out = tmp_path / "three.svg"
    assert main(["plot", *map(str, folders), "--out", str(out), "--title", "reach, 3 seeds"]) == 0
    assert "reach, 3 seeds" in out.read_text()

    loaded = [Run.load(folder) for folder in folders]
    curve = success_curve(loaded, "online")
    evals = [[r for r in RunLog(f).rows() if "eval_success" in r] for f in folders]
    # online x: 0 (the last offline evaluation), then every 25 env steps
    assert curve.x.tolist() == [0, 25, 50] and len(curve.runs) == 3
    for i, x in enumerate(curve.x):
        rows = [next(r for r in reversed(rows) if r["env_steps"] == x) for rows in evals]
        rates = [r["eval_success"] for r in rows]
        assert curve.mean[i] == pytest.approx(sum(rates) / 3)
        low, high = wilson_interval(round(sum(rates) * 2), 6)
        assert (curve.low[i], curve.high[i]) == pytest.approx((low, high))
    offline = success_curve(loaded, "offline")
    assert offline.x.tolist() == [25, 50]


def test_no_progress_prints_one_plain_line_per_metrics_row(runs: dict) -> None:
    note, *lines = runs["printed"].splitlines()
    assert note.startswith("run ") and "pretraining on" in note  # first the run says what it trains on
    rows = [r for r in RunLog(runs["folders"][0]).rows() if "phase" in r]
    assert lines[: len(rows)] and len([line for line in lines if line.startswith("[")]) == len(rows)
    assert lines[0].startswith("[offline] update 25 env step 0: critic ") and "ESS " in lines[0]
    evals = [line for line in lines if "eval success" in line]
    assert evals[0].startswith("[offline] update 25 env step 0: eval success ") and "over 2 episodes" in evals[0]
    assert any(line.startswith("[online] update 100 env step 50: eval success") for line in evals)


def read_events(folder: Path) -> list[Event]:
    """TFRecord framing: uint64 length, uint32 masked CRC, the Event proto, uint32 CRC."""
    events = []
    for path in folder.iterdir():
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            events.append(Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_tensorboard_event_files_hold_the_logged_scalars(runs: dict) -> None:
    run = runs["folders"][0]
    scalars = {}
    for event in read_events(run / TENSORBOARD):
        for value in event.summary.value:
            scalars[(value.tag, event.step)] = value.simple_value
    rows = RunLog(run).rows()
    ess = next(r for r in rows if r.get("phase") == "online" and "weight_ess" in r)
    assert scalars[("online/weight_ess", ess["updates"])] == pytest.approx(ess["weight_ess"], rel=1e-6)
    last_eval = [r for r in rows if "eval_success" in r][-1]
    assert scalars[("eval/success_by_env_steps", 50)] == pytest.approx(last_eval["eval_success"])
    assert not (runs["folders"][1] / TENSORBOARD).exists()


def test_bad_plot_requests_are_one_line_errors(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert main(["plot", str(runs["folders"][0]), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "is not a run folder (no config.yaml)" in err[0] and "must end in .png" in err[1]
