"""The suite's grid as Ray tasks: one task per scenario x seed x algo, on a local Ray or a cluster.

Each task is a real `awac-robot finetune` subprocess (bench/runner.py), run in a scratch folder
on whichever node Ray picks: the base store travels to it through Ray's object store, and the
whole run folder (store copy, run, log) travels back and is unpacked where a local run would
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


def finetune_in_scratch(job: FinetuneJob, packed_store: bytes) -> tuple[dict[str, Any], bytes]:
    """The body of one Ray task: the run in a scratch folder on the worker, returned as data."""
    with tempfile.TemporaryDirectory(prefix="awac-suite-") as scratch:
        base = Path(scratch) / "base.zarr"
        unpack(packed_store, base)
        here = dataclasses.replace(job, store=base, folder=Path(scratch) / "run-folder")
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

    for module in (runner, sys.modules[__name__]):  # the workers cannot import bench/: ship its code
        ray.cloudpickle.register_pickle_by_value(module)
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(finetune_in_scratch)
        stores = {store: ray.put(pack(store)) for store in {job.store for job in jobs}}
        pending = {task.remote(job, stores[job.store]): job for job in jobs}
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
