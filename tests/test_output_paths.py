"""Every command that writes checks its output path first: nothing overwritten that it did not write, nothing
written into another stage's folder, an unwritable folder named in one line before any work.

Real stores, real checkpoints, a real read-only folder (a read-only bind mount when run as root, whom
chmod does not stop; chmod otherwise), real `awac-robot` processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from onnx_helpers import small_actor, write_policy
from train_helpers import TINY, wait_for, write_config

from awac_robot.cli import build_parser, main
from awac_robot.collect import CollectConfig, collect
from awac_robot.control.limits import load_config, shipped_limits_file
from awac_robot.envs import get_spec
from awac_robot.export import card_path
from awac_robot.store import DemoStore
from awac_robot.store_lock import WriterLock


@pytest.fixture(scope="module")
def reach(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real reach store and a real run folder trained 20 updates on it."""
    root = tmp_path_factory.mktemp("reach")
    store, run = root / "reach.zarr", root / "run"
    collect(CollectConfig(task="reach", episodes=4, store=store, progress=False))
    config = write_config(root)
    argv = ["train", "--task", "reach", "--store", str(store), "--config", str(config), "--out", str(run)]
    assert main([*argv, "--offline-steps", "20", "--no-progress"]) == 0
    return store, run


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write in: a read-only bind mount for root, chmod 555 for anyone else."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        with pytest.raises(OSError):
            (folder / "probe").touch()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert says in err, err
    return err


def export_argv(run: Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--checkpoint", str(run), "--out", str(out), "--verify", "1000", *extra]


def test_export_never_replaces_what_it_did_not_write(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = reach
    checkpoint = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    before = checkpoint.read_bytes()
    refused(capsys, export_argv(run, checkpoint), "must end in .onnx")
    refused(capsys, export_argv(run, run / "policy.onnx"), "is inside")
    assert checkpoint.read_bytes() == before
    refused(capsys, export_argv(run, tmp_path / "x.yaml"), "must end in .onnx")

    # a deploy folder with its limits file: the card can never take the limits file's name
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    limits = deploy / "reach.yaml"
    shutil.copy(shipped_limits_file("reach"), limits)
    shipped = limits.read_bytes()
    out = deploy / "reach.onnx"
    assert main(export_argv(run, out)) == 0
    assert limits.read_bytes() == shipped and load_config(limits, get_spec("reach")).task == "reach"
    card = yaml.safe_load(card_path(out).read_text())
    assert card_path(out).name == "reach.card.yaml" and card["policy"] == "reach.onnx"
    assert main(export_argv(run, out)) == 0  # its own policy and card: replaced
    capsys.readouterr()

    # a file at --out or at the card's path that export did not write: refused, kept; --force replaces it
    other = tmp_path / "notes.onnx"
    other.write_text("my notes")
    refused(capsys, export_argv(run, other), "exists and is not a policy this command wrote")
    assert other.read_text() == "my notes"
    assert main(export_argv(run, other, "--force")) == 0
    capsys.readouterr()
    card_path(tmp_path / "fresh.onnx").write_text("task: reach\n")
    refused(capsys, export_argv(run, tmp_path / "fresh.onnx"), "exists and is not a policy card this command wrote")
    assert not (tmp_path / "fresh.onnx").exists()


def test_outputs_into_another_stages_folder_are_refused(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, run = reach
    listing = sorted(p.name for p in store.iterdir())
    config = write_config(tmp_path)
    train = ["--task", "reach", "--store", str(store), "--config", str(config), "--offline-steps", "5"]
    refused(capsys, ["finetune", *train, "--online-steps", "5", "--out", str(store)], "is a demo store")
    refused(capsys, ["train", *train, "--out", str(store / "run")], "is inside")
    policy = tmp_path / "door.onnx"
    policy.write_text("not a folder")
    refused(capsys, ["train", *train, "--out", str(policy)], "is a file, not a folder")
    refused(capsys, export_argv(run, store / "x.onnx"), "is inside")
    refused(capsys, ["render", "--task", "reach", "--out", str(store / "x.png")], "is inside")
    refused(capsys, ["collect", "--task", "reach", "--episodes", "1", "--store", str(run)], "is a training run folder")
    split = ["demos", "split", str(store), "--out-train", str(run / "t.zarr"), "--out-val", str(tmp_path / "v.zarr")]
    refused(capsys, split, "is inside")
    spec = get_spec("reach")
    onnx = write_policy(small_actor(spec), spec, tmp_path / "reach.onnx")
    refused(capsys, ["deploy", "--policy", str(onnx), "--duration", "1", "--log", str(store / "logs")], "is inside")
    refused(capsys, ["deploy", "--policy", str(onnx), "--duration", "1", "--log", str(run)], "is a training run folder")
    assert sorted(p.name for p in store.iterdir()) == listing
    assert not (tmp_path / "v.zarr").exists()


def test_outputs_into_a_read_only_folder_fail_in_one_line_before_any_work(
    reach: tuple[Path, Path], read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, run = reach
    says = "cannot write in"
    config = write_config(read_only.parent)
    refused(capsys, ["render", "--task", "reach", "--out", str(read_only / "x.png")], says)
    refused(capsys, ["evaluate", "--checkpoint", str(run), "--episodes", "1", "--video", str(read_only / "v")], says)
    refused(capsys, ["replay", str(store), "--episode", "0", "--video", str(read_only / "x.mp4")], says)
    refused(capsys, ["replay", str(store), "--episode", "0", "--grid", str(read_only / "x.png")], says)
    refused(capsys, ["plot", str(run), "--out", str(read_only / "plot.png")], says)
    refused(capsys, export_argv(run, read_only / "x.onnx"), says)
    train = ["--task", "reach", "--store", str(store), "--config", str(config), "--offline-steps", "5"]
    refused(capsys, ["train", *train, "--out", str(read_only / "run")], says)
    refused(capsys, ["collect", "--task", "reach", "--episodes", "1", "--store", str(read_only / "s.zarr")], says)
    split = ["--out-train", str(read_only / "t.zarr"), "--out-val", str(read_only / "v.zarr")]
    refused(capsys, ["demos", "split", str(store), *split], says)
    refused(capsys, ["demos", "merge", str(store), "--out", str(read_only / "m.zarr")], says)
    refused(capsys, ["demo", "--task", "reach", "--out", str(read_only / "demo")], says)
    assert list(read_only.iterdir()) == []


def test_media_outputs_are_replaced_only_with_force(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, run = reach
    picture = tmp_path / "mine.png"
    picture.write_bytes(b"a picture of my own")
    refused(capsys, ["render", "--task", "reach", "--out", str(picture), "--size", "64"], "pass --force")
    refused(capsys, ["plot", str(run), "--out", str(picture)], "pass --force")
    refused(capsys, ["replay", str(store), "--episode", "0", "--grid", str(picture), "--size", "32"], "pass --force")
    assert picture.read_bytes() == b"a picture of my own"
    assert main(["render", "--task", "reach", "--out", str(picture), "--size", "64", "--force"]) == 0
    assert picture.read_bytes() != b"a picture of my own"


def test_plot_and_config_files_that_are_not_what_they_claim_fail_in_one_line(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, run = reach
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metrics = copy / "metrics.jsonl"
    metrics.write_bytes(os.urandom(4096) + b"\xff\xfe")
    refused(capsys, ["plot", str(copy), "--out", str(tmp_path / "a.png")], "not text")
    metrics.write_text(json.dumps([1, 2, 3]) + "\n" + json.dumps({"updates": 1}) + "\n")
    refused(capsys, ["plot", str(copy), "--out", str(tmp_path / "a.png")], "line 1 is not a JSON object")
    (copy / "config.yaml").write_bytes(b"\x00\x9f\x92\x96" * 64)
    refused(capsys, ["plot", str(copy), "--out", str(tmp_path / "a.png")], "not a text file")

    train = ["train", "--task", "reach", "--store", str(store), "--out", str(tmp_path / "r"), "--offline-steps", "5"]
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    refused(capsys, [*train, "--config", str(config)], "not a text file")
    config.write_text(yaml.safe_dump({**TINY, "batch_size": 10**9}))
    refused(capsys, [*train, "--config", str(config)], "config key 'batch_size' must be")
    config.write_text("batch_size: 32\nlr: 0.001\nbatch_size: 64\n")
    refused(capsys, [*train, "--config", str(config)], "field 'batch_size' is given twice")
    assert not (tmp_path / "r").exists()


def test_seeds_no_episode_can_use_are_refused_and_leave_nothing(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = reach
    split = ["demos", "split", str(store), "--out-train", str(tmp_path / "t"), "--out-val", str(tmp_path / "v")]
    refused(capsys, [*split, "--seed", "-1"], "--seed must be an integer in [0, ")
    new = tmp_path / "new.zarr"
    argv = ["collect", "--task", "reach", "--episodes", "2", "--store", str(new), "--no-progress"]
    refused(capsys, [*argv, "--seed", str(10**20)], "--seed must be an integer in [0, ")
    refused(capsys, ["render", "--task", "reach", "--seed", "-5", "--out", str(tmp_path / "x.png")], "--seed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_second_training_process_on_one_run_folder_is_refused(reach: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = reach
    run = tmp_path / "run"
    config = write_config(tmp_path, checkpoint_interval=50)
    train = ["train", "--task", "reach", "--store", str(store), "--config", str(config), "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-m", "awac_robot", *train, "--out", str(run), "--offline-steps", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(list((run / "checkpoints").glob("ckpt_*.pt"))) >= 2, first, "a second checkpoint")
        rows = (run / "metrics.jsonl").read_text().count("\n")
        for argv in (["train", "--task", "reach", "--resume", "--out", str(run)], [*train, "--out", str(run)]):
            second = subprocess.run(
                [sys.executable, "-m", "awac_robot", *argv], capture_output=True, text=True, timeout=120
            )
            assert second.returncode == 2, second.stderr
            assert second.stderr.strip().splitlines() == [
                f"awac-robot train: error: run folder {run} is in use by another train or finetune "
                f"(pid {first.pid} on {os.uname().nodename}): wait for it to end, or choose another --out"
            ]
        assert first.poll() is None
        assert (run / "metrics.jsonl").read_text().count("\n") >= rows  # only the first run writes rows
    finally:
        first.kill()
        first.wait()
    lock = WriterLock(run)
    lock.acquire()  # the kernel let go of the killed run's lock: a resume can start
    lock.release()


def test_demos_info_reads_every_chunk_it_vouches_for(
    reach: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = reach
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    chunk = max((p for p in (copy / "data" / "obs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a chunk cut short, e.g. by a full disk
    refused(capsys, ["demos", "info", str(copy)], "array data/obs is corrupt")
    with DemoStore.open(store) as intact:
        assert intact.num_episodes == 4


def test_no_help_text_shows_a_doubled_percent_sign() -> None:
    parser = build_parser()
    helps = [parser.format_help()]
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    stack = list(commands.values())
    while stack:
        sub = stack.pop()
        helps.append(sub.format_help())
        for action in sub._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    assert len(helps) > 20 and not [text for text in helps if "%%" in text]
