"""The per-run controller log: one row per control step, written as a single .npz at the end.

Rows go into preallocated chunks, so logging in the loop is a few array stores and never a
reallocation; the file is plain numpy (np.load) so any tool can audit a run. Columns
(docs/deploy.md has the full description):

    t_boundary, t_wake, t_infer, t_sent   float64  perf_counter seconds (t_infer: inference duration)
    obs_stamp                             float64  when the robot measured the observation used
    obs                                   float32  [steps, obs_dim]
    raw_action                            float32  [steps, act_dim]  NaN where the policy was not run
    command                               float64  [steps, act_dim]  what the controller sent
    applied                               float64  [steps, act_dim]  what the robot was applying at obs_stamp
    mode                                  int8     1 = command, 2 = robot hold
    events                                int32    safety event bit flags (awac_robot.control.safety.EVENTS)
    missed                                int32    period boundaries missed after this step
    meta                                  str      JSON: task spec, limits, policy metadata, event bits
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.control.safety import EVENTS, SAFE_STOP, count_events, event_names

CHUNK = 4096


def _columns(obs_dim: int, act_dim: int) -> dict[str, tuple[tuple[int, ...], type]]:
    return {
        "t_boundary": ((), np.float64),
        "t_wake": ((), np.float64),
        "t_infer": ((), np.float64),
        "t_sent": ((), np.float64),
        "obs_stamp": ((), np.float64),
        "obs": ((obs_dim,), np.float32),
        "raw_action": ((act_dim,), np.float32),
        "command": ((act_dim,), np.float64),
        "applied": ((act_dim,), np.float64),
        "mode": ((), np.int8),
        "events": ((), np.int32),
        "missed": ((), np.int32),
    }


class RunLog:
    """Chunked column store; the controller writes `chunk[name][row]` directly for speed."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self._spec = _columns(obs_dim, act_dim)
        self._chunks: list[dict[str, np.ndarray]] = []
        self.chunk: dict[str, np.ndarray] = {}
        self.row = CHUNK  # forces a chunk on the first next_row()
        self.steps = 0

    def next_row(self) -> int:
        """The row index in `self.chunk` for the next step (a new chunk every CHUNK steps)."""
        self.row += 1
        if self.row >= CHUNK:
            self.chunk = {name: np.empty((CHUNK, *shape), dtype) for name, (shape, dtype) in self._spec.items()}
            self._chunks.append(self.chunk)
            self.row = 0
        self.steps += 1
        return self.row

    def columns(self) -> dict[str, np.ndarray]:
        if not self._chunks:
            return {name: np.empty((0, *shape), dtype) for name, (shape, dtype) in self._spec.items()}
        sizes = [CHUNK] * (len(self._chunks) - 1) + [self.row + 1]
        return {
            name: np.concatenate([c[name][:n] for c, n in zip(self._chunks, sizes, strict=True)]) for name in self._spec
        }

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**meta, "event_bits": EVENTS}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **self.columns())
        tmp.replace(path)


def load_log(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as data:
        columns = {name: data[name] for name in data.files if name != "meta"}
        meta = json.loads(str(data["meta"]))
    return columns, meta


def summarize(columns: dict[str, np.ndarray], period: float) -> dict[str, Any]:
    """The figures printed at the end of a run (and by bench/control.py)."""
    steps = len(columns["t_wake"])
    if steps == 0:
        return {"steps": 0}
    step_us = (columns["t_sent"] - columns["t_wake"]) * 1e6
    from_boundary_us = (columns["t_sent"] - columns["t_boundary"]) * 1e6
    infer_us = columns["t_infer"][columns["mode"] == 1] * 1e6
    events = columns["events"]
    stops = np.flatnonzero(events & SAFE_STOP)
    elapsed = columns["t_sent"][-1] - columns["t_boundary"][0]
    summary: dict[str, Any] = {
        "steps": steps,
        "seconds": float(elapsed),
        "rate_hz": float((steps - 1) / elapsed) if steps > 1 and elapsed > 0 else float("nan"),
        "target_rate_hz": 1.0 / period,
        "deadline_misses": int(columns["missed"].sum()),
        "max_consecutive_misses": _longest_run(columns["missed"] > 0),
        "step_latency_us": _percentiles(step_us),
        "boundary_to_send_us": _percentiles(from_boundary_us),
        "inference_us": _percentiles(infer_us),
        "events": {k: v for k, v in count_events(events).items() if v},
        "hold_steps": int(np.count_nonzero(columns["mode"] == 2)),
        "safe_stop": None,
    }
    if stops.size:
        first = int(stops[0])
        summary["safe_stop"] = {"step": first, "reasons": event_names(int(events[first]) & SAFE_STOP)}
    return summary


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(values.max())}


def _longest_run(flags: np.ndarray) -> int:
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines a newcomer can read."""
    if not summary.get("steps"):
        return "controller ran 0 steps"
    lat, bnd = summary["step_latency_us"], summary["boundary_to_send_us"]
    lines = [
        f"controller: {summary['steps']} steps in {summary['seconds']:.2f} s "
        f"({summary['rate_hz']:.1f} Hz, target {summary['target_rate_hz']:.1f} Hz), "
        f"deadline misses {summary['deadline_misses']} (longest run {summary['max_consecutive_misses']})",
        f"step latency us: p50 {lat['p50']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  max {lat['max']:.1f}"
        f"   (period boundary -> command sent: p99 {bnd['p99']:.1f}, max {bnd['max']:.1f})",
    ]
    if summary["inference_us"]:
        inf = summary["inference_us"]
        lines.append(f"inference us: p50 {inf['p50']:.1f}  p99 {inf['p99']:.1f}  max {inf['max']:.1f}")
    events = ", ".join(f"{k} {v}" for k, v in summary["events"].items()) or "none"
    lines.append(f"safety events (steps): {events}")
    stop = summary["safe_stop"]
    lines.append(
        f"safe stop at step {stop['step']}: {', '.join(stop['reasons'])}; held for {summary['hold_steps']} steps"
        if stop
        else f"no safe stop; hold steps {summary['hold_steps']}"
    )
    return "\n".join(lines)
