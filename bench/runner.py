"""Benchmarks drive the product through its own command line: one `awac-robot` subprocess per step.

A suite run is two jobs. The offline phase is `awac-robot train` reading the base store (it
never writes to it); its last checkpoint is cached and shared by every candidate whose config
differs only in online keys. The online phase is a fork of that checkpoint (bench/fork.py) in
its own folder, holding its own copy of the store (finetuning appends its online episodes to
the store it trains on, so runs must never share one), continued by `finetune --resume`.
Each job's evaluations are read from its metrics.jsonl while it is written, so they are
printed as they happen and a run cut short still reports what it reached. The command's own
output goes to a log beside the run, which a failed run points to; its wall and CPU time
(the command and every process it waited for: the evaluation and exploration workers) are kept.
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

import yaml
from fork import fork

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
    """One phase of a suite run: `folder` gets the run (run/) and its log.

    With `start` None, the offline phase (`awac-robot train` on the base store). Else the online
    phase forked from `start` (an offline run's last checkpoint) with `changes` (config keys as
    YAML, bench/fork.py's `--set`) into run/, which holds the run's own store copy.
    """

    label: str  # printed before each of the run's evaluations
    task: str
    store: Path  # the base store; read or copied, never written
    folder: Path
    algo: str
    seed: int
    offline_steps: int
    online_steps: int
    config: Path | None = None
    start: Path | None = None
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    @property
    def log(self) -> Path:
        return self.folder / "finetune.log"

    def prepare(self) -> list[str]:
        """Make the job's folder afresh (the fork's run folder and store copy) and return its command."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        if self.start is None:
            config = ["--config", str(self.config)] if self.config else []
            return [
                *AWAC_ROBOT, "train", "--task", self.task, "--store", str(self.store), *config,
                "--out", str(self.run_dir), "--seed", str(self.seed), "--algo", self.algo,
                "--offline-steps", str(self.offline_steps), "--no-progress",
            ]  # fmt: skip
        changes = {key: yaml.safe_load(value) for key, value in self.changes}
        fork(self.start, self.store, self.run_dir, {**changes, "online_steps": self.online_steps})
        return [
            *AWAC_ROBOT, "finetune", "--task", self.task, "--out", str(self.run_dir), "--resume",
            "--store", str(self.run_dir / "store.zarr"), "--no-progress",
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
    """Every evaluation of a run (curve and reports), each with the last updates/s logged before it."""
    rows, speed = [], math.nan
    for row in RunLog(run_dir).rows():
        speed = row.get("updates_per_s", speed)
        if "eval_success" in row or "report_success" in row:
            rows.append({**row, "updates_per_s": speed})
    return rows


def success(row: dict[str, Any]) -> float:
    """An evaluation row's success rate, a curve point's or a report's."""
    return float(row["eval_success"] if "eval_success" in row else row["report_success"])


def describe_eval(row: dict[str, Any]) -> str:
    if "report" in row:
        return f"{row['report']} policy, {row['report_episodes']} report episodes"
    if row["phase"] == "offline":
        return f"offline {row['updates']:>7} updates"
    return f"online {row['env_steps']:>8} steps"


def run_finetune(job: FinetuneJob, poll_seconds: float = 5.0) -> FinetuneResult:
    """Run one job in a fresh folder, printing each evaluation as the run logs it."""
    command = job.prepare()
    result = FinetuneResult(started=time.time(), evals=eval_rows(job.run_dir))  # a fork's copied rows: not printed
    with open(job.log, "w") as log:
        process = subprocess.Popen([*TIED, str(os.getpid()), *command], stdout=log, stderr=subprocess.STDOUT)
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
                        f"  {job.label} {describe_eval(row)}: success {success(row):.0%}"
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
