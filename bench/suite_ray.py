"""The suite's grid as Ray tasks: one task per scenario x seed x algo, on a local Ray or a cluster.

Each task is a real `awac-robot` subprocess (bench/runner.py: an offline phase, or an online
phase forked from one), run in a scratch folder on whichever node Ray picks: the base store (and
for a fork, the offline run it starts from) travels to it through Ray's object store, and the
whole run folder (run, store copy, log) travels back and is unpacked where a local run would
have put it, so the table and the results file cannot tell the two apart. No shared file
system is needed; every node needs the same awac-robot install (`pip install -e '.[ray]'`)
and Python, because the bench modules are shipped by value and the product is not.

A task runs at the niceness of the processes beside it, not Ray's default 15 for workers
(RAY_worker_niceness in TASK_OPTIONS): the finetune and its evaluation and exploration workers
inherit the task's niceness, and at 15 they got a few per cent of a core beside any busy
process, so a run that takes 30 s beside two busy loops outside Ray took many minutes inside
(issue 36; bench/ray_overhead.py measures it, docs/benchmarks.md has the figures).

A suite stopped by SIGINT or SIGTERM cancels the tasks still running (their finetunes die with
them, bench/runner.py) and raises `Stopped`; the runs that finished were handed to `on_done`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
import signal
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import fork
import runner
from runner import FinetuneJob, FinetuneResult, run_finetune

#: How every run's task is scheduled: one CPU, and the niceness of an ordinary process (see above).
TASK_OPTIONS: dict[str, Any] = {"num_cpus": 1, "runtime_env": {"env_vars": {"RAY_worker_niceness": "0"}}}


class Stopped(Exception):
    """The suite was stopped by a signal; the message names it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def pack(folder: Path) -> bytes:
    """A folder as an uncompressed tar (Zarr chunks are compressed already)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    """Replace `folder` with the packed one; it appears whole or not at all."""
    staging = folder.with_name(f".{folder.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(staging, filter="data")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)


def finetune_in_scratch(
    job: FinetuneJob, packed_store: bytes, packed_start: bytes | None
) -> tuple[dict[str, Any], bytes]:
    """The body of one Ray task: the run in a scratch folder on the worker, returned as data."""
    with tempfile.TemporaryDirectory(prefix="awac-suite-") as scratch:
        base = Path(scratch) / "base.zarr"
        unpack(packed_store, base)
        start = None
        if job.start is not None and packed_start is not None:  # the offline run's folder, its checkpoint inside
            offline = Path(scratch) / "offline-run"
            unpack(packed_start, offline)
            start = offline / job.start.relative_to(job.start.parents[2])
        here = dataclasses.replace(job, store=base, folder=Path(scratch) / "run-folder", start=start)
        result = run_finetune(here)
        return dataclasses.asdict(result), pack(here.folder)


@contextmanager
def ray_session(address: str | None, cpus: int, verbose: bool = False) -> Iterator[None]:
    """Ray joined at `address` (or a local one with `cpus` CPUs) for the block; SIGINT and SIGTERM raise `Stopped`.

    Ray's own start-up notices (the token authentication notice, "Started a local Ray instance")
    are shown only with `verbose`; the tasks' output (each run's evaluations) is always shown.
    """
    import ray  # an optional extra: imported only when asked for

    received = signal.SIGINT

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received = signal.Signals(signum)
        # KeyboardInterrupt, because Ray's blocking calls let it through: any other exception raised by a
        # handler inside them comes out as a SystemError with a stack dump.
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for module in (runner, fork, sys.modules[__name__]):  # the workers cannot import bench/: ship its code
            ray.cloudpickle.register_pickle_by_value(module)
        level = logging.INFO if verbose else logging.ERROR
        if address:
            ray.init(address=address, logging_level=level)
        else:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=level)
        signal.signal(signal.SIGTERM, stop)  # again: ray.init installs its own, which exits on the spot
        yield
    except KeyboardInterrupt:
        raise Stopped(received) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def run_on_ray(
    jobs: list[FinetuneJob],
    on_done: Callable[[FinetuneJob, FinetuneResult], None],
    address: str | None,
    cpus: int,
    verbose: bool = False,
) -> None:
    """Run every job as a Ray task; `on_done` gets each as it finishes, in any order.

    Raises `Stopped` on SIGINT or SIGTERM, after cancelling the tasks that had not finished.
    """
    import ray

    with ray_session(address, cpus, verbose):
        task = ray.remote(**TASK_OPTIONS)(finetune_in_scratch)
        stores = {store: ray.put(pack(store)) for store in {job.store for job in jobs}}
        # a fork's offline run: its folder (run/checkpoints/ckpt_N.pt and run/metrics.jsonl, which the fork copies)
        starts: dict[Path, Any] = {job.start: ray.put(pack(job.start.parents[2])) for job in jobs if job.start}
        pending = {
            task.remote(job, stores[job.store], None if job.start is None else starts[job.start]): job for job in jobs
        }
        try:
            while pending:
                ready, _ = ray.wait(list(pending))
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        result, folder = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the task itself died (node lost, out of memory)
                        line = f"Ray task failed: {exc}".splitlines()[0]
                        on_done(job, FinetuneResult(returncode=-1, last_output=line))
                        continue
                    unpack(folder, job.folder)
                    on_done(job, FinetuneResult(**result))
        finally:
            for ref in pending:  # a stopped suite leaves no run behind: the worker and its finetune end
                ray.cancel(ref, force=True)
