"""The scenario suite: offline -> online learning on stores the trainer was not tuned on, AWAC vs BC.

    .venv/bin/python bench/suite.py [--only door-human,push-scripted] [--algo awac bc] [--seeds 1] [--first-seed 0]
        [--jobs 2] [--offline-steps N] [--online-steps N] [--config FILE] [--work bench_runs]
        [--ray [--ray-address ADDR] [--verbose]] [--report-only]

Scenarios (bench/scenarios.py) name a task, the recipe of its store and its step budget. Each
store is built once per recipe with the product's own commands and cached under
WORK/stores/ (bench/stores.py). Every run is a real `awac-robot finetune` subprocess with its
own folder under WORK/runs/ and its own copy of the store, so runs never touch each other's
data; `--config` is passed to every run unchanged (one config for all scenarios, never
per-scenario settings), and --offline-steps / --online-steps replace every scenario's budget.
Runs go `--jobs` at a time on this machine, or as Ray tasks with `--ray` (a local Ray with
`--jobs` CPUs, or the cluster at `--ray-address`; bench/suite_ray.py).

It prints one table (scenario | data success | algo | offline evals | online evals | AWAC vs
BC | wall time), then the learning issue's targets per scenario as PASS/FAIL lines. Results
go to WORK/suite-results.json as each run ends; `--report-only` prints the table from it
without running anything. docs/benchmarks.md has the scenario table and the full run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from runner import ROOT, FinetuneJob, FinetuneResult, run_finetune
from scenarios import SCENARIOS, Scenario
from stores import BuiltStore, cached_store
from suite_ray import Stopped, run_on_ray
from suite_report import RESULTS, Results, table, targets

from awac_robot.store import StoreError
from awac_robot.store_lock import LockHeld, WriterLock
from awac_robot.train.config import ConfigError, TrainConfig, load_config

ALGOS = ("awac", "bc")


@dataclass(frozen=True)
class GridSettings:
    """What the whole grid shares: the same for every scenario by construction."""

    work: Path
    algos: tuple[str, ...] = ALGOS
    seeds: int = 1
    #: the first seed: runs take seeds first_seed .. first_seed + seeds - 1, so more seeds join an earlier run's
    first_seed: int = 0
    jobs: int = 1
    offline_steps: int | None = None  # None: each scenario's own budget
    online_steps: int | None = None
    config: Path | None = None
    ray: bool = False
    ray_address: str | None = None
    verbose: bool = False  # Ray's own start-up notices

    def train_config(self) -> TrainConfig:
        return load_config(self.config) if self.config else TrainConfig()


def fail(message: str) -> NoReturn:
    print(f"suite: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def sole_suite_in(work: Path) -> Iterator[None]:
    """Hold WORK for this suite alone, or fail saying who holds it.

    Each suite saves the whole results file it holds in memory, so two suites in one folder would each
    overwrite the other's finished rows. The stores' own writer lock, so a suite killed by SIGKILL
    leaves no stale lock either.
    """
    lock = WriterLock(work)
    try:
        lock.acquire()
    except LockHeld as held:
        fail(f"another suite ({held.holder}) is running in {work}: wait for it to end or pass another --work")
    try:
        yield
    finally:
        lock.release()


def build_stores(scenarios: list[Scenario], settings: GridSettings, results: Results) -> dict[str, BuiltStore]:
    """Every scenario's store, one build at a time: door-paper's trains a BC policy, a full core's work."""
    built = {}
    for scenario in scenarios:
        store = cached_store(settings.work / "stores", scenario.name, scenario.task, scenario.store)
        print(f"store {scenario.name}: {store.summary()}", flush=True)
        built[scenario.name] = store
        results.stores[scenario.name] = {
            "task": scenario.task,
            "recipe": scenario.store.describe(),
            "path": str(store.path),
            "episodes": store.episodes,
            "steps": store.steps,
            "success": store.success,
            "success_by_source": store.success_by_source,
            "episodes_by_source": store.episodes_by_source,
            "build_seconds": store.build_seconds,
        }
    results.save()
    return built


def grid_jobs(
    scenarios: list[Scenario], settings: GridSettings, stores: dict[str, BuiltStore]
) -> dict[FinetuneJob, str]:
    """One job per scenario x algo x seed (with its scenario's name), the longest first."""
    jobs = {
        FinetuneJob(
            label=f"{s.name} {algo} s{seed}",
            task=s.task,
            store=stores[s.name].path,
            folder=settings.work / "runs" / f"{s.name}-{algo}-s{seed}",
            algo=algo,
            seed=seed,
            offline_steps=s.offline_steps if settings.offline_steps is None else settings.offline_steps,
            online_steps=s.online_steps if settings.online_steps is None else settings.online_steps,
            config=settings.config,
        ): s.name
        for s in scenarios
        for algo in settings.algos
        for seed in range(settings.first_seed, settings.first_seed + settings.seeds)
    }
    order = sorted(jobs, key=lambda j: (-(j.offline_steps + j.online_steps), j.algo != "awac"))
    return {job: jobs[job] for job in order}


def run_grid(scenarios: list[Scenario], settings: GridSettings, results: Results) -> list[FinetuneResult]:
    """Build the stores, run the grid locally or on Ray, and record every run in `results` as it ends."""
    config = settings.train_config()
    stores = build_stores(scenarios, settings, results)
    jobs = grid_jobs(scenarios, settings, stores)
    lock = threading.Lock()
    finished: list[FinetuneResult] = []

    def record(job: FinetuneJob, result: FinetuneResult) -> None:
        row: dict[str, Any] = {
            "scenario": jobs[job],
            "algo": job.algo,
            "seed": job.seed,
            "offline_steps": job.offline_steps,
            "online_steps": job.online_steps,
            "config": str(job.config) if job.config else None,
            "eval_every": {"offline": config.offline_eval_interval, "online": config.eval_interval},
            "where": f"ray {settings.ray_address or 'local'}" if settings.ray else "local",
            "folder": str(job.folder),
            "log": str(job.log),
            "wall": result.wall,
            **{key: getattr(result, key) for key in ("started", "finished", "returncode", "last_output", "evals")},
        }
        with lock:
            results.runs[Results.key(row["scenario"], job.algo, job.seed)] = row
            results.save()
            finished.append(result)

    where = f"Ray ({settings.ray_address or f'local, {settings.jobs} CPUs'})" if settings.ray else "this machine"
    print(f"{len(jobs)} runs on {where}, {settings.jobs} at a time; config {settings.config or 'defaults'}", flush=True)
    if settings.ray:
        try:
            run_on_ray(list(jobs), record, settings.ray_address, settings.jobs, settings.verbose)
        except Stopped as stop:  # one line, no stack: the finished runs are in the results file already
            print(
                f"suite: stopped by {stop}: {len(finished)} of {len(jobs)} runs finished, kept in {results.path}",
                file=sys.stderr,
            )
            raise SystemExit(128 + stop.signum) from None
    else:
        with ThreadPoolExecutor(settings.jobs) as pool:  # the threads only wait on finetune subprocesses
            list(pool.map(lambda job: record(job, run_finetune(job)), jobs))
    return finished


def report(results: Results, names: list[str], algos: tuple[str, ...]) -> str:
    lines = ["", table(results, names, list(algos)), "", "targets (issue 9; AWAC, mean over seeds):"]
    for name in names:
        lines += targets(results, name)
    passed = sum(line.startswith("  PASS") for line in lines)
    failed = sum(line.startswith("  FAIL") for line in lines)
    lines.append(f"targets: {passed} PASS, {failed} FAIL")
    return "\n".join(lines)


def stores_table(results: Results, names: list[str]) -> str:
    lines = ["| scenario | task | store | episodes | data success | build time |", "|---|---|---|---|---|---|"]
    for name in names:
        s = results.stores.get(name)
        if s:
            cells = [name, s["task"], s["recipe"], str(s["episodes"]), f"{s['success']:.0%}"]
            lines.append("| " + " | ".join([*cells, f"{s['build_seconds']:.0f} s"]) + " |")
    return "\n".join(lines)


def select(only: str | None) -> list[Scenario]:
    if only is None:
        return list(SCENARIOS.values())
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        fail(f"--only: unknown scenario {given}; the scenarios are {', '.join(SCENARIOS)}")
    return [SCENARIOS[name] for name in names]


def with_reference_data(scenarios: list[Scenario], explicit: bool) -> list[Scenario]:
    """Drop (and say so) the scenarios whose reference data is absent; asked for by name, that is an error."""
    kept = []
    for scenario in scenarios:
        missing = [str(path) for path in scenario.store.needs(scenario.task) if not path.exists()]
        if not missing:
            kept.append(scenario)
        elif explicit:
            fail(f"scenario {scenario.name} needs reference data that is missing: {', '.join(missing)}")
        else:
            print(f"skipping {scenario.name}: its store needs {', '.join(missing)} (reference data)")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="A,B", help=f"scenarios to run (default all: {', '.join(SCENARIOS)})")
    parser.add_argument("--algo", choices=ALGOS, nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: K .. K+seeds-1 (add seeds to a run)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each takes one core: threads 1)")
    parser.add_argument("--offline-steps", type=int, help="offline updates of every run (default: the scenario's)")
    parser.add_argument("--online-steps", type=int, help="online env steps of every run (default: the scenario's)")
    parser.add_argument("--config", type=Path, help="training config YAML passed to every run")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs", help="stores, runs and results")
    parser.add_argument("--ray", action="store_true", help="run the grid as Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--ray-address", help="Ray cluster to join (e.g. HEAD:6379); default a local Ray")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own start-up notices")
    parser.add_argument("--report-only", action="store_true", help="print the table from the results file only")
    args = parser.parse_args()

    if args.seeds < 1 or args.jobs < 1:
        fail("--seeds and --jobs must be >= 1")
    if args.first_seed < 0:
        fail("--first-seed must be >= 0")
    for flag in ("offline_steps", "online_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            fail(f"--{flag.replace('_', '-')} must be >= 0")
    if args.ray_address and not args.ray:
        fail("--ray-address needs --ray")
    if args.ray and importlib.util.find_spec("ray") is None:
        fail("--ray needs Ray: pip install -e '.[ray]'")
    scenarios = select(args.only)
    algos = tuple(dict.fromkeys(args.algo))
    if args.report_only:
        results = Results(args.work / RESULTS)
        if not results.runs:
            fail(f"no runs in {results.path}: run the suite first (without --report-only)")
        known = [s.name for s in scenarios if s.name in results.stores]
        print(stores_table(results, known))
        print(report(results, known, algos))
        return
    settings = GridSettings(
        args.work, algos, args.seeds, args.first_seed, args.jobs, args.offline_steps, args.online_steps,
        args.config, args.ray, args.ray_address, args.verbose,
    )  # fmt: skip
    try:
        settings.train_config()
    except (ConfigError, FileNotFoundError) as exc:
        fail(f"--config: {exc}")
    scenarios = with_reference_data(scenarios, explicit=args.only is not None)
    args.work.mkdir(parents=True, exist_ok=True)
    with sole_suite_in(args.work):
        results = Results(args.work / RESULTS)  # read under the lock: the last suite's rows are all in it
        print(f"suite: {' '.join(sys.argv[1:]) or '(defaults)'}")
        try:
            finished = run_grid(scenarios, settings, results)
        except StoreError as exc:  # e.g. a store cached by an older awac-robot: its message says what to do
            fail(str(exc))
        names = [s.name for s in scenarios]
        print("\n" + stores_table(results, names))
        print(report(results, names, algos))
    if any(result.failed for result in finished):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
