"""Real-time helpers shared by the robot and controller processes: absolute-deadline sleeping, real-time priority.

Sleeping to absolute deadlines (boundary k = start + k * period) keeps a loop from drifting;
after an overrun the next boundary is the first one still ahead, so a late loop skips
periods instead of bursting to catch up.
"""

from __future__ import annotations

import math
import os
import time


def next_boundary(boundary: float, period: float, now: float) -> tuple[float, int]:
    """The first period boundary after `now` following `boundary`, and how many boundaries were skipped."""
    late = now - boundary
    if late < period:
        return boundary + period, 0
    skipped = math.floor(late / period)
    return boundary + (skipped + 1) * period, skipped


def sleep_until(deadline: float, spin: float) -> None:
    """Sleep until `deadline` (time.perf_counter seconds); busy-wait the last `spin` seconds for a precise wake-up."""
    remaining = deadline - time.perf_counter() - spin
    if remaining > 0:
        time.sleep(remaining)
    while time.perf_counter() < deadline:
        pass


def set_realtime(priority: int) -> str:
    """Ask for SCHED_FIFO at `priority` (0: leave the process alone); returns what was granted, for the log.

    A fixed-rate loop on a shared machine misses deadlines whenever the scheduler gives its
    core to someone else; a real-time policy is what a robot computer gives its controller.
    Linux still reserves 5% of each second for normal processes (sched_rt_runtime_us), so a
    runaway loop cannot lock up the machine. Without permission this falls back to normal.
    """
    if priority <= 0:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"SCHED_FIFO {priority}"
    except (OSError, AttributeError) as exc:
        return f"normal (SCHED_FIFO refused: {exc})"
