"""The run folder's human-facing record: `metrics.jsonl` (one JSON object a line) and `curve.png`.

Metric lines are appended and flushed one by one, so a killed run keeps every line it
wrote; a resumed run appends to the same file, and the curve is redrawn from it. A resume
redoes the work after its checkpoint and logs it again, so `rows()` reads the file as the
run's history: a `resume` event at update U supersedes the rows of updates after U written
before it (the file itself keeps them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
CURVE = "curve.png"


class RunLog:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / METRICS

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows: list[dict[str, Any]] = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the tail of a line cut by a kill
                continue
            if row.get("event") == "resume":
                rows = [r for r in rows if r.get("updates", -1) <= row["updates"]]
            rows.append(row)
        return rows

    def draw_curve(self, offline_steps: int) -> Path:
        """Eval success vs env steps; offline evaluations sit left of 0 on a shaded band, placed by update."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        evals = [r for r in self.rows() if "eval_success" in r]
        x = [r["env_steps"] if r["phase"] == "online" else r["updates"] - offline_steps for r in evals]
        y = [100.0 * r["eval_success"] for r in evals]
        fig, ax = plt.subplots(figsize=(7, 4))
        if offline_steps:
            ax.axvspan(-offline_steps, 0, color="0.9", label=f"offline pretraining ({offline_steps} updates)")
        ax.plot(x, y, marker="o")
        ax.set_xlabel("online env steps (offline phase: updates before the first env step)")
        ax.set_ylabel("eval success (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        fig.tight_layout()
        tmp = self.run_dir / f".{CURVE}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, self.run_dir / CURVE)
        return self.run_dir / CURVE
