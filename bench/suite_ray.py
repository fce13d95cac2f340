"""The suite's grid as Ray tasks: one task per scenario x seed x algo, on a local Ray or a cluster.

Each task is a real `awac-robot` subprocess (bench/runner.py: an offline phase, or an online
phase forked from one), run in a scratch folder on whichever node Ray picks: the base store (and
for a fork, the offline run it starts from) travels to it through Ray's object store, and the
whole run folder (run, store copy, log) travels back and is unpacked where a local run would
have put it, so the table and the results file cannot tell the two apart. No shared file
system is needed; every node needs the same awac-robot install (`pip install -e '.[ray]'`)
and Python, because the bench modules are shipped by value and the product is not.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fork
import runner
from runner import FinetuneJob, FinetuneResult, run_finetune


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


def run_on_ray(
    jobs: list[FinetuneJob],
    on_done: Callable[[FinetuneJob, FinetuneResult], None],
    address: str | None,
    cpus: int,
) -> None:
    """Run every job as a Ray task (one CPU each); `on_done` gets each as it finishes, in any order."""
    import ray  # an optional extra: imported only when asked for

    for module in (runner, fork, sys.modules[__name__]):  # the workers cannot import bench/: ship its code
        ray.cloudpickle.register_pickle_by_value(module)
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(finetune_in_scratch)
        stores = {store: ray.put(pack(store)) for store in {job.store for job in jobs}}
        # a fork's offline run: its folder (run/checkpoints/ckpt_N.pt and run/metrics.jsonl, which the fork copies)
        starts: dict[Path, Any] = {job.start: ray.put(pack(job.start.parents[2])) for job in jobs if job.start}
        pending = {
            task.remote(job, stores[job.store], None if job.start is None else starts[job.start]): job for job in jobs
        }
        while pending:
            ready, _ = ray.wait(list(pending))
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result, folder = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task itself died (node lost, out of memory)
                    on_done(job, FinetuneResult(returncode=-1, last_output=f"Ray task failed: {exc}".splitlines()[0]))
                    continue
                unpack(folder, job.folder)
                on_done(job, FinetuneResult(**result))
    finally:
        ray.shutdown()
