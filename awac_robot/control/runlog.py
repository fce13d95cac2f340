"""Run logs written as they go: one fixed-size row per step, appended to the file the moment it is complete.

A process that is SIGKILLed (or whose machine loses power after the page cache was flushed)
leaves every step it finished on disk: there is no buffer to lose and no rename at the end.
The controller and the robot process each keep one (`controller.runlog`, `robot.runlog` in the
run folder). Layout of a file (docs/deploy.md):

    MAGIC                       b"AWAC-RUNLOG 1\\n"
    header                      one line of JSON: {"columns": [[name, dtype, shape], ...], "meta": {...}}
    rows                        numpy structured records, little-endian, back to back
    trailer (clean end only)    JSON {"exit": ..., "steps": N}, then FOOTER and its own length (uint64)

`load_log` reads it back with numpy alone; a file without a trailer is a process that died,
and says so (`meta["exit"]`), with every whole row it had written.

Controller columns (`controller_columns`):

    t_boundary, t_wake, t_infer, t_sent   float64  perf_counter seconds (t_infer: inference duration)
    obs_stamp                             float64  when the robot measured the observation used
    obs                                   float32  [steps, obs_dim]
    raw_action                            float32  [steps, act_dim]  NaN where the policy was not run
    command                               float64  [steps, act_dim]  what the controller sent
    applied                               float64  [steps, act_dim]  what the robot was applying at obs_stamp
    mode                                  int8     1 = command, 2 = robot hold
    events                                int32    safety event bit flags (awac_robot.control.safety.EVENTS)
    missed                                int32    period boundaries missed after this step
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.control.safety import SAFE_STOP, count_events, event_names

MAGIC = b"AWAC-RUNLOG 1\n"
FOOTER = b"\nAWAC-RUNLOG-END"
_LENGTH = struct.Struct("<Q")

Columns = dict[str, tuple[tuple[int, ...], type]]


class RunLogError(ValueError):
    """A file that is not a run log, or one damaged beyond its last row."""


def controller_columns(obs_dim: int, act_dim: int) -> Columns:
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
    """An append-only log: fill `row[name][0]` for every column, then `append()` writes that row to the file."""

    def __init__(self, path: Path, columns: Columns, meta: dict[str, Any]) -> None:
        self.path = path
        self.dtype = np.dtype([(name, dtype, shape) for name, (shape, dtype) in columns.items()])
        self._buffer = np.zeros(1, self.dtype)
        #: one-row views per column: the loop writes `row["obs"][0] = obs`
        self.row: dict[str, np.ndarray] = {name: self._buffer[name] for name in columns}
        self._bytes = self._buffer.data
        self.steps = 0
        header = {
            "columns": [[name, np.dtype(dtype).str, list(shape)] for name, (shape, dtype) in columns.items()],
            "meta": meta,
        }
        # O_EXCL: a log is never overwritten, not even by a second run pointed at the same folder
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._write(MAGIC + json.dumps(header).encode() + b"\n")

    def append(self) -> None:
        self._write(self._bytes)
        self.steps += 1

    def close(self, end: dict[str, Any]) -> None:
        """Write the trailer that marks a clean end; a log never closed is read as a process that died."""
        trailer = json.dumps({**end, "steps": self.steps}).encode() + FOOTER
        self._write(trailer + _LENGTH.pack(len(trailer) + _LENGTH.size))
        self._close_fd()

    def abandon(self) -> None:
        """Close the file without a trailer (the reader will report the run as not ended cleanly)."""
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None, f"{self.path} is closed"
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self._fd, view) :]


def load_log(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Columns and metadata of a run log; `meta["exit"]` says how the run ended ("killed: ..." without a trailer)."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) or b"\n" not in data[len(MAGIC) :]:
        raise RunLogError(f"{path}: not an awac-robot run log (no {MAGIC!r} header)")
    header_end = data.index(b"\n", len(MAGIC)) + 1
    try:
        header = json.loads(data[len(MAGIC) : header_end])
        dtype = np.dtype([(name, np.dtype(code), tuple(shape)) for name, code, shape in header["columns"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunLogError(f"{path}: unreadable run log header ({exc})") from None
    body = data[header_end:]
    end: dict[str, Any] | None = None
    if len(body) >= _LENGTH.size and body[: -_LENGTH.size].endswith(FOOTER):
        size = _LENGTH.unpack(body[-_LENGTH.size :])[0]
        if size <= len(body) and (len(body) - size) % dtype.itemsize == 0:
            end = json.loads(body[len(body) - size : -_LENGTH.size - len(FOOTER)])
            body = body[: len(body) - size]
    torn = len(body) % dtype.itemsize
    rows = np.frombuffer(body[: len(body) - torn], dtype=dtype)
    columns = {name: rows[name].copy() for name in dtype.names or ()}
    meta: dict[str, Any] = dict(header["meta"])
    if end is None:
        meta.update(exit="killed: the process died without closing its log", steps=len(rows), torn_bytes=torn)
    else:
        meta.update(end)
        if end.get("steps") != len(rows):
            raise RunLogError(f"{path}: the trailer counts {end.get('steps')} rows, the file holds {len(rows)}")
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
