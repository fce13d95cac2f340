"""Tiny training runs for the trainer tests: a config that trains in seconds, the command line, one thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

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


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from a second thread and lose a lot when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
