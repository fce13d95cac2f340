"""Checkpoints: everything a run needs to continue, written so a kill at any moment leaves a good one.

A checkpoint is one `torch.save` file `checkpoints/ckpt_<updates>.pt` holding the config,
the task spec, the learner (networks, target critics, optimizer, its RNG), the replay
sampler's RNG, the exploration RNG, the counters, the latest evaluation and the evaluations
still outstanding at the evaluation worker (with their policy snapshots). It is written
to a temporary name and moved into place with `os.replace`, which is atomic on POSIX: a
reader sees the old file or the new one, never half of one. Only plain tensors, numbers
and strings are stored, so loading uses `weights_only=True` and never runs pickled code.

Reading checks the zip container's CRC32 of every record first: `torch.load` alone reads a
flipped byte in a tensor back as a wrong weight. A run resumes from its newest checkpoint
that passes; newer ones that do not are renamed `*.unreadable` (kept for inspection, out of
the way of pruning) and named in the resume's warning, never skipped silently.

Format 2 adds the store record and pretraining set a resume needs (train/finetune.py);
format 1 checkpoints still load as policies (export, evaluate) but cannot be resumed.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from awac_robot.spec import TaskSpec
from awac_robot.train.build import build_actor
from awac_robot.train.config import TrainConfig, from_saved

CHECKPOINT_DIR = "checkpoints"
#: The policy with the highest eval success so far (the earliest of equals), kept apart from the
#: rotating checkpoints: it holds what `evaluate` and `export` read (no optimizer, no replay RNG),
#: so it cannot be resumed from.
BEST = "best.pt"
FORMAT = 2
READABLE_FORMATS = (1, 2)
UNREADABLE_SUFFIX = ".unreadable"
_NAME = re.compile(r"ckpt_(\d+)\.pt")


class CheckpointError(FileNotFoundError):
    """No usable checkpoint where one was asked for (missing, truncated, corrupt, foreign): one line names it.

    A FileNotFoundError, so every command reports it as the user-fixable problem it is.
    """


def save_checkpoint(run_dir: Path, updates: int, state: dict[str, Any], keep: int) -> Path:
    """Atomically write `state` as the checkpoint for `updates`, then drop all but the newest `keep`."""
    path = _save(Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{updates:09d}.pt", state)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def save_best(
    run_dir: Path,
    run: dict[str, Any],
    policy: dict[str, torch.Tensor],
    counters: dict[str, Any],
    evaluation: dict[str, Any],
) -> Path:
    """Write best.pt: `run` (config, spec, run_id) and the evaluated policy's state with its counters and eval."""
    state = {**run, "counters": counters, "learner": {"policy": policy}, "eval": evaluation}
    return _save(Path(run_dir) / CHECKPOINT_DIR / BEST, state)


def best_success(run_dir: Path) -> float | None:
    """The eval success rate stored in a run's best checkpoint, None if it has none yet."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST
    return float(read_checkpoint(path)["eval"]["success_rate"]) if path.is_file() else None


def _save(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, **state}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (temporary files from a killed write are ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    numbered = [(int(match.group(1)), p) for p in folder.iterdir() if (match := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(numbered, key=lambda item: item[0])]


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"no checkpoint or run folder at {path}")
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"run folder {path} has no checkpoint yet (expected {path / CHECKPOINT_DIR}/ckpt_*.pt)")
    return found[-1]


def read_checkpoint(path: Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        state = None if damaged else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one and why, in one line
        raise CheckpointError(f"{path} is not a readable awac-robot checkpoint ({type(exc).__name__})") from None
    if damaged:
        raise CheckpointError(f"{path} is corrupt: record {damaged} fails its CRC check")
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} is not an awac-robot checkpoint of format {' or '.join(map(str, READABLE_FORMATS))}"
        )
    state["path"] = str(path)
    return state


def read_latest_checkpoint(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The newest readable checkpoint of a run, and one line for each newer one that was unreadable.

    Those newer ones are renamed `*.unreadable`: left in place they would count as the newest
    when old checkpoints are pruned, and the good one resumed from would be deleted first.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"run folder {run_dir} has no checkpoint yet (expected {run_dir}/{CHECKPOINT_DIR}/ckpt_*.pt)"
        )
    problems: list[str] = []
    for path in reversed(found):
        try:
            state = read_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        unreadable = found[found.index(path) + 1 :]
        for bad in unreadable:
            bad.rename(bad.with_name(bad.name + UNREADABLE_SUFFIX))
        lines = [
            f"{problem} (kept as {bad.name}{UNREADABLE_SUFFIX})"
            for problem, bad in zip(problems, reversed(unreadable), strict=True)
        ]
        return state, lines
    raise CheckpointError(f"no readable checkpoint in {run_dir / CHECKPOINT_DIR}: {'; '.join(problems)}")


@dataclass
class LoadedActor:
    """A trained policy ready for export: `policy(obs [B, obs_dim]) -> action [B, act_dim]` in [-1, 1]."""

    policy: torch.nn.Module
    spec: TaskSpec
    run_id: str
    step: int
    eval: dict[str, Any]
    config: TrainConfig


def load_actor(path: Path) -> LoadedActor:
    """The deterministic policy (tanh mean, observation normalisation inside) of a checkpoint or run folder.

    That is the averaged actor when the run kept one (`policy_average`), the one its evaluations scored.
    """
    state = read_checkpoint(path)
    config = from_saved(state["config"], f"{state['path']} config")
    spec = TaskSpec.from_dict(state["spec"])
    actor = build_actor(config, spec)
    actor.load_state_dict(state["learner"]["policy"])
    actor.eval().requires_grad_(False)
    return LoadedActor(
        policy=actor,
        spec=spec,
        run_id=state["run_id"],
        step=int(state["counters"]["updates"]),
        eval=dict(state.get("eval") or {}),
        config=config,
    )
