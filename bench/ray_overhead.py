"""What a run costs as a Ray task beside the same run on this machine, on a quiet machine and beside busy processes.

    .venv/bin/python bench/ray_overhead.py [--scenario push-scripted] [--algo awac bc]
        [--offline-steps 2000] [--online-steps 2000] [--busy 2] [--conditions quiet loaded]
        [--work bench_runs/ray-overhead]

Each run of the tiny grid (the scenario's store, each --algo, seed 0) runs twice, back to back:
on this machine as `suite.py` runs it (bench/runner.py) and as a Ray task as `suite.py --ray`
runs it (bench/suite_ray.py: a local Ray with one CPU, started and stopped around that one run).
"loaded" runs both beside --busy processes that spin on a core each (a shared workstation or
a cluster node), started before the condition and stopped after it.

Printed per run: wall and CPU time (user + system of the finetune and its workers) of the run
itself, the Ray call's whole wall (Ray's start-up, the store through the object store, the run
folder back, the shutdown) and how much of it was Ray's own, Ray over local as ratios, and the
load average beside each. First
it prints what a Ray task's process and the finetune it starts get: niceness, CPU affinity,
OMP_NUM_THREADS and torch's threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner import ROOT, FinetuneJob, FinetuneResult, run_finetune
from scenarios import SCENARIOS
from stores import cached_store
from suite_ray import TASK_OPTIONS, ray_session, run_on_ray

#: A busy process ends by itself after this long, should this script be killed before it stops them.
BUSY_LIMIT_SECONDS = 1800
#: What the finetune (a child of the task's process) gets: printed by a child started the same way.
CHILD_PROBE = (
    "import os, torch; from awac_robot.train.config import TrainConfig, setup_torch; setup_torch(TrainConfig()); "
    "print(os.nice(0), ','.join(map(str, sorted(os.sched_getaffinity(0)))), os.environ.get('OMP_NUM_THREADS'), "
    "torch.get_num_threads())"
)


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def probe() -> dict[str, Any]:
    """Where a Ray task runs: what its process and a child of it get."""
    child = subprocess.run([sys.executable, "-c", CHILD_PROBE], capture_output=True, text=True, check=True)
    nice, affinity, omp, threads = child.stdout.split()
    return {
        "task": f"nice {os.nice(0)}, CPUs {','.join(map(str, sorted(os.sched_getaffinity(0))))}, "
        f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS')}",
        "finetune": f"nice {nice}, CPUs {affinity}, OMP_NUM_THREADS {omp}, torch threads {threads}",
    }


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each for the block (each also ends by itself after a limit)."""
    spin = f"import time\nend = time.monotonic() + {BUSY_LIMIT_SECONDS}\nwhile time.monotonic() < end: pass"
    processes = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


@dataclass
class Pair:
    """One run on this machine and the same run as a Ray task."""

    condition: str
    label: str
    local: FinetuneResult
    ray: FinetuneResult
    ray_call: float  # wall of the whole Ray call: start-up, store there, run, folder back, shutdown
    local_load: str
    ray_load: str


def on_ray(job: FinetuneJob) -> tuple[FinetuneResult, float]:
    results: list[FinetuneResult] = []
    started = time.time()
    run_on_ray([job], lambda _, result: results.append(result), address=None, cpus=1)
    return results[0], time.time() - started


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def row(pair: Pair) -> str:
    local, ray = pair.local, pair.ray
    cells = [
        pair.condition, pair.label, f"{local.wall:.0f} s", f"{local.cpu:.0f} s", f"{ray.wall:.0f} s",
        f"{ray.cpu:.0f} s", f"{pair.ray_call:.0f} s", ratio(ray.wall, local.wall), ratio(ray.cpu, local.cpu),
        f"{pair.ray_call - ray.wall:.0f} s", pair.local_load.removeprefix("load "), pair.ray_load.removeprefix("load "),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="push-scripted")
    parser.add_argument("--algo", choices=("awac", "bc"), nargs="+", default=["awac", "bc"])
    parser.add_argument("--offline-steps", type=int, default=2000)
    parser.add_argument("--online-steps", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the runs when loaded")
    parser.add_argument("--conditions", choices=("quiet", "loaded"), nargs="+", default=["quiet", "loaded"])
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs" / "ray-overhead")
    args = parser.parse_args()
    if args.busy < 1 or args.offline_steps < 0 or args.online_steps < 0:
        parser.error("--busy must be >= 1 and the step counts >= 0")

    scenario = SCENARIOS[args.scenario]
    store = cached_store(args.work / "stores", scenario.name, scenario.task, scenario.store)
    print(f"store {scenario.name}: {store.summary()}", flush=True)
    with ray_session(address=None, cpus=1):
        import ray

        where = ray.get(ray.remote(**TASK_OPTIONS)(probe).remote())
    print(f"a Ray task's process: {where['task']}\nthe finetune it starts: {where['finetune']}", flush=True)

    pairs = []
    for condition in args.conditions:
        with busy_processes(args.busy if condition == "loaded" else 0):
            for algo in args.algo:
                label = f"{scenario.name} {algo}"
                job = FinetuneJob(
                    label, scenario.task, store.path, args.work / condition / "local" / algo, algo, seed=0,
                    offline_steps=args.offline_steps, online_steps=args.online_steps,
                )  # fmt: skip
                print(f"{condition}: {label} on this machine ({load()})", flush=True)
                local_load = load()
                local = run_finetune(job)
                print(f"{condition}: {label} as a Ray task ({load()})", flush=True)
                ray_load = load()
                ray_result, call = on_ray(replace(job, folder=args.work / condition / "ray" / algo))
                pairs.append(Pair(condition, label, local, ray_result, call, local_load, ray_load))
                print(row(pairs[-1]), flush=True)

    print(
        "\n| condition | run | local wall | local CPU | Ray wall | Ray CPU | Ray call wall | wall Ray/local "
        "| CPU Ray/local | Ray's own time in the call | load before local (1/5/15 min) | load before Ray |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pair in pairs:
        print(row(pair))
    if any(pair.local.failed or pair.ray.failed for pair in pairs):
        raise SystemExit(f"a run failed: see its log under {args.work}")


if __name__ == "__main__":
    main()
