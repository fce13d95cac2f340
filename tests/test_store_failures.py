"""Writes that fail: damaged, corrupt, read-only and full stores, and all-or-nothing merge and import.

Each case ends with one line (exit code 2) and loses no published episode. The full disk is
a real 2 MiB tmpfs (mounting needs root) and, everywhere, a real RLIMIT_FSIZE-limited
collector process; the read-only store is a read-only bind mount (root) or a chmod.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import SPEC, assert_same_episodes, make_episode, read_episodes, store_files

from awac_robot.cli import main
from awac_robot.store import DemoStore, Episode

COLLECT = ["collect", "--task", "reach", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[Episode]:
    """Scripted reach episodes of seeds 0-11, collected without trouble: what every store here must match."""
    path = tmp_path_factory.mktemp("reference") / "reach.zarr"
    assert main([*COLLECT, "--episodes", "12", "--store", str(path)]) == 0
    return read_episodes(path)


@pytest.fixture
def reach_store(reference: list[Episode], tmp_path: Path) -> Path:
    """A store holding the first two reference episodes."""
    path = tmp_path / "reach.zarr"
    assert main([*COLLECT, "--episodes", "2", "--store", str(path)]) == 0
    assert_same_episodes(read_episodes(path), reference[:2])
    return path


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    for needle in needles:
        assert needle in error, error
    return error


def assert_prefix_of_reference(path: Path, reference: list[Episode], at_least: int) -> int:
    """The store holds seeds 0..n-1, each exactly the reference episode: nothing lost, torn or repeated."""
    episodes = read_episodes(path)
    assert len(episodes) >= at_least
    assert_same_episodes(episodes, reference[: len(episodes)])
    return len(episodes)


def test_collect_into_a_store_with_a_damaged_last_end_refuses(
    reach_store: Path, reference: list[Episode], capsys: pytest.CaptureFixture[str]
) -> None:
    """Format 1 took the damaged value for an unpublished tail, and collect trimmed the published episode."""
    ends = zarr.open_group(reach_store, mode="r+")["meta/episode_ends"]
    good = int(ends[1])
    ends[1] = 0
    before = store_files(reach_store)
    capsys.readouterr()
    assert main([*COLLECT, "--episodes", "2", "--store", str(reach_store)]) == 2
    one_line_error(capsys, "is damaged: meta/episode_ends does not match its publication record")
    assert store_files(reach_store) == before
    ends[1] = good
    assert_same_episodes(read_episodes(reach_store), reference[:2])


def test_collect_into_a_store_with_a_corrupt_chunk_refuses(
    reach_store: Path, reference: list[Episode], capsys: pytest.CaptureFixture[str]
) -> None:
    chunk = reach_store / "data" / "obs" / "c" / "0" / "0"
    original = chunk.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x10
    chunk.write_bytes(bytes(damaged))
    before = store_files(reach_store)
    capsys.readouterr()
    assert main([*COLLECT, "--episodes", "2", "--store", str(reach_store)]) == 2
    one_line_error(capsys, "array data/obs is corrupt", "appending would rewrite that chunk")
    assert store_files(reach_store) == before
    chunk.write_bytes(original)
    assert_same_episodes(read_episodes(reach_store), reference[:2])


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` seen read-only: a read-only bind mount as root (chmod does not stop root), else chmod a-w."""
    view = path.with_name(path.name + "-ro")
    view.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(path), str(view)], capture_output=True).returncode == 0
        if not mounted or subprocess.run(["mount", "-o", "remount,bind,ro", str(view)]).returncode != 0:
            subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip("running as root without permission to mount: cannot make a store read-only for root")
        try:
            yield view
        finally:
            subprocess.run(["umount", str(view)], check=True)
        return
    view.rmdir()
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield path
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_collect_into_a_read_only_store_refuses(
    reach_store: Path, reference: list[Episode], capsys: pytest.CaptureFixture[str]
) -> None:
    before = store_files(reach_store)
    with read_only(reach_store) as view:
        capsys.readouterr()
        assert main([*COLLECT, "--episodes", "2", "--store", str(view)]) == 2
        one_line_error(capsys, f"--store {view}: cannot write in {view} (a read-only file system)")
        assert main(["demos", "info", str(view)]) == 0  # reading needs no write access
        assert "episodes   2, steps 100" in capsys.readouterr().out
    assert store_files(reach_store) == before
    assert_same_episodes(read_episodes(reach_store), reference[:2])


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill_disk(directory: Path, leave: int) -> Path:
    """A filler file taking all free space of the filesystem but `leave` bytes."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize(
    ("leave_kib", "where"),
    [(0, "cannot be opened for appending"), (16, "writing 1 episode(s) failed (no space left")],
)
def test_collect_on_a_full_disk_ends_in_one_line_and_loses_nothing(
    reach_store: Path,
    reference: list[Episode],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    leave_kib: int,
    where: str,
) -> None:
    """0 KiB free: refused before any episode runs; 16 KiB: the disk fills up after an episode or two."""
    with small_tmpfs(tmp_path / "disk") as disk:
        store = disk / "reach.zarr"
        shutil.copytree(reach_store, store)
        filler = fill_disk(disk, leave_kib * 1024)
        capsys.readouterr()
        assert main([*COLLECT, "--episodes", "8", "--store", str(store)]) == 2
        one_line_error(capsys, where, "no space left: No space left on device", "free some disk space")
        count = assert_prefix_of_reference(store, reference, at_least=2)
        assert count < 10  # the disk did fill up
        filler.unlink()
        assert main([*COLLECT, "--episodes", "2", "--store", str(store)]) == 0
        assert f"continuing at seed {count}" in capsys.readouterr().out
        assert_prefix_of_reference(store, reference, at_least=count + 2)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed by the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_collect_past_a_file_size_limit_ends_in_one_line_and_loses_nothing(
    reach_store: Path, reference: list[Episode]
) -> None:
    """A real collector process whose files may not grow past 4 KiB: the obs chunk outgrows it within episodes."""
    command = [sys.executable, "-m", "awac_robot", *COLLECT, "--episodes", "8", "--store", str(reach_store)]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "writing 1 episode(s) failed" in result.stderr
    assert "a file size limit was reached: File too large" in result.stderr
    assert "ulimit -f" in result.stderr
    count = assert_prefix_of_reference(reach_store, reference, at_least=2)
    assert count < 10
    assert main([*COLLECT, "--episodes", "1", "--store", str(reach_store)]) == 0  # the next writer trims the rest
    assert_prefix_of_reference(reach_store, reference, at_least=count + 1)


def _door_store(path: Path, seeds: range) -> list[Episode]:
    episodes = [make_episode(seed) for seed in seeds]
    with DemoStore.create(path, SPEC) as store:
        store.append_many(episodes)
    return episodes


def test_merge_with_a_corrupt_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _door_store(tmp_path / "a.zarr", range(0, 3))
    _door_store(tmp_path / "b.zarr", range(3, 6))
    chunk = tmp_path / "b.zarr" / "data" / "action" / "c" / "0" / "0"
    damaged = bytearray(chunk.read_bytes())
    damaged[-10] ^= 0x01
    chunk.write_bytes(bytes(damaged))
    out = tmp_path / "merged.zarr"
    assert main(["demos", "merge", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--out", str(out)]) == 2
    one_line_error(capsys, "array data/action is corrupt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr"]  # no output, no staging left


def test_merging_a_store_with_itself_or_its_copy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused, not warned: every shared episode would be in the output twice, with nothing to tell them apart."""
    a = tmp_path / "a.zarr"
    _door_store(a, range(2))
    out = tmp_path / "merged.zarr"
    assert main(["demos", "merge", str(a), str(a), "--out", str(out)]) == 2
    one_line_error(capsys, "is given twice", "merging a store with itself would duplicate every episode")
    shutil.copytree(a, tmp_path / "copy.zarr")
    assert main(["demos", "merge", str(a), str(tmp_path / "copy.zarr"), "--out", str(out)]) == 2
    one_line_error(capsys, "are copies of one store")
    assert not out.exists()


def test_merge_killed_halfway_leaves_nothing_at_the_output(tmp_path: Path) -> None:
    _door_store(tmp_path / "a.zarr", range(0, 150))
    _door_store(tmp_path / "b.zarr", range(150, 300))
    out = tmp_path / "merged.zarr"
    command = [sys.executable, "-m", "awac_robot", "demos", "merge", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")]
    merger = subprocess.Popen([*command, "--out", str(out)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".merged.zarr.creating-*")):
        assert time.monotonic() < deadline and merger.poll() is None, merger.stderr.read().decode()
        time.sleep(0.005)
    merger.send_signal(signal.SIGKILL)
    merger.wait(timeout=30)
    if out.exists():  # the merge won the race and finished: then it is complete
        assert DemoStore.open(out).num_episodes == 300
    else:
        assert list(tmp_path.glob(".merged.zarr.creating-*"))  # only the hidden staging directory is left


def _dapg_file(path: Path, episodes: int, broken: dict[int, tuple[str, float]] | None = None) -> Path:
    """A DAPG-format pickle of door-sized episodes; `broken` puts a value into one episode's array."""
    rng = np.random.default_rng(0)
    demos = []
    for index in range(episodes):
        demo = {"observations": rng.normal(size=(30, 39)), "actions": rng.uniform(-1, 1, size=(30, 28))}
        if broken and index in broken:
            name, value = broken[index]
            demo[name][7, 2] = value
        demos.append(demo)
    path.write_bytes(pickle.dumps(demos))
    return path


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("observations", np.nan, "episode 3 has NaN or inf observations at step 7"),
        ("actions", np.inf, "episode 3 has NaN or inf actions at step 7"),
        ("actions", -np.inf, "episode 3 has NaN or inf actions at step 7"),
    ],
)
def test_import_with_a_bad_value_in_episode_3_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: float, message: str
) -> None:
    """Episodes 0-2 used to stay in the store, and a rerun duplicated them; inf actions were clipped silently."""
    bad = _dapg_file(tmp_path / "demos.pickle", 5, {3: (name, value)})
    new_store = tmp_path / "new.zarr"
    assert main(["demos", "import", "dapg", str(bad), "--task", "door", "--store", str(new_store)]) == 2
    one_line_error(capsys, message, "nothing was imported")
    assert not new_store.exists() and not list(tmp_path.glob(".new.zarr.*"))

    existing = tmp_path / "existing.zarr"
    _door_store(existing, range(1))
    before = store_files(existing)
    assert main(["demos", "import", "dapg", str(bad), "--task", "door", "--store", str(existing)]) == 2
    one_line_error(capsys, message)
    assert store_files(existing) == before


def test_import_clips_slightly_out_of_range_actions_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demos = _dapg_file(tmp_path / "demos.pickle", 2, {1: ("actions", 1.04)})
    store = tmp_path / "door.zarr"
    assert main(["demos", "import", "dapg", str(demos), "--task", "door", "--store", str(store)]) == 0
    assert "clipped 1 of 1624 action entries to [-1, 1]" in capsys.readouterr().out
    imported = read_episodes(store)
    assert len(imported) == 2 and imported[1].action[7, 2] == 1.0
    batch = DemoStore.open(store).batches[0]
    assert (batch.kind, batch.demonstrator, batch.arguments["file"]) == ("import", "dapg", str(demos.resolve()))
    assert len(batch.arguments["sha256"]) == 64 and batch.seed_range is None
