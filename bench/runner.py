"""Benchmarks drive the product through its own command line: one `awac-robot` subprocess per step.

A finetune run gets its own folder holding its own copy of the store (finetuning appends its
online episodes to the store it trains on, so runs must never share one) and the run folder
itself. Its evaluations are read from the run's metrics.jsonl while it is written, so they are
printed as they happen and a run cut short still reports what it reached. The command's own
output goes to a log beside the run, which a failed run points to.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awac_robot.train.runlog import RunLog

ROOT = Path(__file__).resolve().parents[1]
AWAC_ROBOT = (sys.executable, "-m", "awac_robot")
#: Runs the command after it (argv[2:]) tied to the process whose pid is argv[1]: Linux sends it SIGTERM
#: when that process ends, however it ends (its own workers die with it in turn), so a benchmark that is
#: killed or a Ray task that is cancelled leaves no run behind. The tie survives exec, so it is made
#: here rather than in a preexec_fn, which is unsafe in the suite's threads and in a Ray worker.
TIED = (
    sys.executable, "-c",
    "import os, sys; from awac_robot.processes import die_with_parent; "
    "die_with_parent(int(sys.argv[1])); os.execv(sys.argv[2], sys.argv[2:])",
)  # fmt: skip


def awac_robot(*args: str) -> None:
    """One product command; a failing command stops the benchmark with its own error on the console."""
    subprocess.run([*AWAC_ROBOT, *args], check=True)


@dataclass(frozen=True)
class FinetuneJob:
    """One `awac-robot finetune` run: `folder` gets the store copy (TASK.zarr), the run (run/) and its log."""

    label: str  # printed before each of the run's evaluations
    task: str
    store: Path  # the base store; it is copied, never written
    folder: Path
    algo: str
    seed: int
    offline_steps: int
    online_steps: int
    config: Path | None = None

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    @property
    def log(self) -> Path:
        return self.folder / "finetune.log"

    def command(self) -> list[str]:
        config = ["--config", str(self.config)] if self.config else []
        return [
            *AWAC_ROBOT, "finetune", "--task", self.task, "--store", str(self.folder / f"{self.task}.zarr"),
            *config, "--out", str(self.run_dir), "--seed", str(self.seed), "--algo", self.algo,
            "--offline-steps", str(self.offline_steps), "--online-steps", str(self.online_steps), "--no-progress",
        ]  # fmt: skip


@dataclass
class FinetuneResult:
    """What a run reached: every evaluation line of its metrics.jsonl, in order, and how it ended."""

    evals: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    #: CPU seconds (user + system) of the command and every process it waited for (its workers)
    cpu: float = 0.0
    returncode: int = 0
    last_output: str = ""  # the command's last output line: the error of a failed run

    @property
    def wall(self) -> float:
        return self.finished - self.started

    @property
    def failed(self) -> bool:
        return self.returncode != 0


def eval_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every evaluation of a run, each with the last updates/s logged before it (complete lines only)."""
    rows, speed = [], math.nan
    for row in RunLog(run_dir).rows():
        speed = row.get("updates_per_s", speed)
        if "eval_success" in row:
            rows.append({**row, "updates_per_s": speed})
    return rows


def describe_eval(row: dict[str, Any]) -> str:
    if row["phase"] == "offline":
        return f"offline {row['updates']:>7} updates"
    return f"online {row['env_steps']:>8} steps"


def run_finetune(job: FinetuneJob, poll_seconds: float = 5.0) -> FinetuneResult:
    """Run one finetune in a fresh folder, printing each evaluation as the run logs it."""
    shutil.rmtree(job.folder, ignore_errors=True)
    job.folder.mkdir(parents=True)
    shutil.copytree(job.store, job.folder / f"{job.task}.zarr")
    result = FinetuneResult(started=time.time())
    with open(job.log, "w") as log:
        command = [*TIED, str(os.getpid()), *job.command()]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        exited = os.pidfd_open(process.pid)  # readable when the run ends: waiting, not sleeping
        try:
            while True:
                if select.select([exited], [], [], poll_seconds)[0]:
                    _, status, usage = os.wait4(process.pid, 0)  # its rusage counts its reaped workers too
                    result.finished = time.time()
                    result.cpu = usage.ru_utime + usage.ru_stime
                    process.returncode = os.waitstatus_to_exitcode(status)
                finished = process.returncode is not None  # known before reading, so the last lines are never missed
                seen = len(result.evals)
                result.evals = eval_rows(job.run_dir)
                for row in result.evals[seen:]:
                    speed = f"  ({row['updates_per_s']:.0f} updates/s)" if math.isfinite(row["updates_per_s"]) else ""
                    print(
                        f"  {job.label} {describe_eval(row)}: success {row['eval_success']:.0%}"
                        f"  wall {row['time'] - result.started:7.0f} s{speed}",
                        flush=True,
                    )
                if finished:
                    break
        finally:
            os.close(exited)
    result.returncode = process.returncode
    lines = job.log.read_text().strip().splitlines()
    result.last_output = lines[-1] if lines else ""
    if result.failed:
        print(f"  {job.label}: finetune exited {result.returncode}: {result.last_output} (log {job.log})", flush=True)
    return result
