"""Tiny training runs for the trainer tests: a config that trains in seconds, the command line, one thread,
the run's processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from awac_robot.train.runlog import RunLog

TINY = {
    "actor_hidden": [32, 32],
    "critic_hidden": [32, 32],
    "batch_size": 32,
    "threads": 1,
    "eval_episodes": 1,
    "report_episodes": 2,
    "eval_interval": 200,
    "offline_eval_interval": 100,
    "log_interval": 50,
    "checkpoint_interval": 100,
}


def write_config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def finetune_args(
    store: Path, out: Path, config: Path, offline: int, online: int, *extra: str, task: str = "door", seed: int = 3
) -> list[str]:
    return [
        "finetune", "--task", task, "--store", str(store), "--config", str(config), "--out", str(out),
        "--offline-steps", str(offline), "--online-steps", str(online), "--seed", str(seed), "--no-progress", *extra,
    ]  # fmt: skip


def processes_of(parent: int) -> set[int]:
    """The live child processes of `parent` (from /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] not in "ZX":
            children.add(int(stat.parent.name))
    return children


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in "ZX"  # a zombie is dead; only its parent's reaper has not read its exit yet


def assert_gone_soon(pids: set[int], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if running(pid)] == [], f"still running {seconds} s after their parent died"


def worker_pids(run: Path) -> dict[str, int]:
    """The worker processes a run logged at its start, by name."""
    for row in RunLog(run).rows():
        if row.get("event") == "workers":
            return row["pids"]
    return {}


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str, seconds: float = 180) -> None:
    """Poll until `condition`, failing if `proc` ends first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from a second thread and lose a lot when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
