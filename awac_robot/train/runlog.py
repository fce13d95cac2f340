"""The run folder's human-facing record: `metrics.jsonl` (one JSON object a line), `curve.png`, TensorBoard.

Metric lines are appended and flushed one by one, so a killed run keeps every line it
wrote; a resumed run appends to the same file, and the curve (train/plots.py) is redrawn
from it. An evaluation's row is written when its result comes back from the evaluation
worker, after rows of later updates; its `updates`, `env_steps` and `time` are those of the
policy snapshot it scored. A resume redoes the work after its checkpoint and logs it again,
so `rows()` reads the file as the run's history: a `resume` event at update U supersedes the
rows of updates after U written before it, and the evaluation rows of the updates it lists
as `redo_evals` (evaluations still outstanding at the checkpoint, which the resume redoes);
the file itself keeps them. With `tensorboard=True` every
numeric value also goes to TensorBoard event files in `tensorboard/` (tensorboardX, the
optional `tensorboard` extra), flushed per line too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from awac_robot.train.evaluation import wilson_interval

METRICS = "metrics.jsonl"
CURVE = "curve.png"
TENSORBOARD = "tensorboard"


class RunLogError(RuntimeError):
    """The run log cannot do what was asked (TensorBoard without tensorboardX); the message says how to fix it."""


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.run_dir = run_dir
        self.path = run_dir / METRICS
        self._board = _board_writer(run_dir / TENSORBOARD) if tensorboard else None

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        if self._board is not None and "updates" in row and "phase" in row:
            for key, value in row.items():
                if key not in ("updates", "env_steps", "time") and isinstance(value, (int, float)):
                    self._board.add_scalar(f"{row['phase']}/{key}", value, row["updates"])
            if "eval_success" in row:
                self._board.add_scalar("eval/success_by_env_steps", row["eval_success"], row["env_steps"])
            self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            lines = self.path.read_text().splitlines()
        except UnicodeDecodeError:
            raise RunLogError(
                f"{self.path} is not a metrics log (not text): a run folder's file was replaced"
            ) from None
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the tail of a line cut by a kill
                    continue
                raise RunLogError(f"{self.path} line {number} is not JSON: not a metrics log as train writes") from None
            if not isinstance(row, dict):
                raise RunLogError(f"{self.path} line {number} is not a JSON object: not a metrics log as train writes")
            if row.get("event") == "resume":
                redone = set(row.get("redo_evals", ()))
                rows = [
                    r
                    for r in rows
                    if r.get("updates", -1) <= row["updates"] and not ("eval_success" in r and r["updates"] in redone)
                ]
            rows.append(row)
        return rows


def check_tensorboard() -> None:
    """Fail before a run starts, not after its store is open, when TensorBoard files cannot be written."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise RunLogError(
            "--tensorboard needs tensorboardX: pip install 'awac-robot[tensorboard]' (or drop --tensorboard)"
        ) from None


def _board_writer(folder: Path) -> Any:
    check_tensorboard()
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder))


def format_row(row: dict[str, Any]) -> str:
    """One plain line for a metrics row, for logs read without a progress bar (nohup, CI)."""
    where = f"[{row['phase']}] update {row['updates']} env step {row['env_steps']}"
    reported = f"{row.get('report')} policy on the report seeds: success"
    for prefix, what in (("report", reported), ("eval", "eval success")):
        if f"{prefix}_success" in row:
            success, episodes = row[f"{prefix}_success"], int(row[f"{prefix}_episodes"])
            low, high = wilson_interval(round(success * episodes), episodes)
            return (
                f"{where}: {what} {success:.2f} [{low:.2f}, {high:.2f}] over {episodes} episodes, "
                f"return {row[f'{prefix}_return']:.1f}"
            )
    shown = [("critic_loss", "critic", ".3g"), ("actor_loss", "actor", ".3g"), ("q_mean", "Q", ".3g")]
    shown += [
        ("weight_ess", "ESS", ".0f"),
        ("imitated", "imitated", ".2f"),
        ("explore_success", "exploring success", ".2f"),
    ]
    shown += [("explore_noise", "noise", ".2f"), ("updates_per_s", "updates/s", ".0f")]
    parts = [f"{name} {row[key]:{spec}}" for key, name, spec in shown if key in row]
    return f"{where}: {', '.join(parts)}"
