"""The scenario suite: offline -> online learning on stores the trainer was not tuned on, judged with statistics.

    .venv/bin/python bench/suite.py [--only door-human,push-scripted] [--algo awac bc] [--seeds 3] [--first-seed 0]
        [--jobs 1] [--offline-steps N] [--online-steps N] [--config FILE] [--name NAME] [--compare BASELINE.json]
        [--no-compile] [--work bench_runs] [--ray [--ray-address ADDR] [--verbose]] [--report-only]

Scenarios (bench/scenarios.py) name a task, the recipe of its store and its step budget. Each
store is built once per recipe with the product's own commands and cached under
WORK/stores/ (bench/stores.py), shared by every seed and candidate. A run is two real
`awac-robot` subprocesses (bench/runner.py): its offline phase, cached under WORK/offline/ and
shared by every candidate whose config differs only in online keys, and its online phase forked
from that phase's last checkpoint (bench/fork.py) into WORK/runs/NAME/ with its own store copy.
`--config` is passed to every run unchanged (one config for all scenarios, never per-scenario
settings), and --offline-steps / --online-steps replace every scenario's budget. Runs go `--jobs`
at a time on this machine, or as Ray tasks with `--ray` (a local Ray with `--jobs` CPUs, or the
cluster at `--ray-address`; bench/suite_ray.py).

It prints one table (scenario | data success | algo | offline evals | online evals | AWAC vs
BC | wall time), issue 9's targets per scenario as PASS/FAIL lines, the statistics of
bench/suite_stats.py (seed means, aggregates, intervals), what the runs cost and, with
`--compare`, the judgment against a baseline's results: ADOPT, REJECT or UNDECIDED, last.
Results go to WORK/results/NAME.json as each run ends; `--report-only` prints everything from
it without running anything. docs/benchmarks.md has the scenario table, the instrument and
the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from fork import ONLINE_KEYS
from runner import ROOT, FinetuneJob, FinetuneResult, run_finetune
from scenarios import SCENARIOS, Scenario
from stores import BuiltStore, cached_store
from suite_ray import Stopped, run_on_ray
from suite_report import Results, cost_line, table, targets
from suite_stats import StatsError, aggregate_lines, judge, judgment_lines, scenario_table

from awac_robot.store import StoreError
from awac_robot.store_lock import LockHeld, WriterLock
from awac_robot.train.config import ConfigError, TrainConfig, load_config, require_cpp_compiler, save_config

ALGOS = ("awac", "bc")


@dataclass(frozen=True)
class GridSettings:
    """What the whole grid shares: the same for every scenario by construction."""

    work: Path
    algos: tuple[str, ...] = ALGOS
    seeds: int = 3
    #: the first seed: runs take seeds first_seed .. first_seed + seeds - 1, so more seeds join an earlier run's
    first_seed: int = 0
    jobs: int = 1
    offline_steps: int | None = None  # None: each scenario's own budget
    online_steps: int | None = None
    config: Path | None = None
    #: the candidate: its results go to WORK/results/NAME.json, its online runs to WORK/runs/NAME/
    name: str = "defaults"
    #: torch.compile every run's update (the same maths, ~20% less CPU per update), where a C++ compiler is
    compile: bool = False
    ray: bool = False
    ray_address: str | None = None
    verbose: bool = False  # Ray's own start-up notices

    def train_config(self) -> TrainConfig:
        config = load_config(self.config) if self.config else TrainConfig()
        return config.replace(compile=True) if self.compile else config

    @property
    def results(self) -> Path:
        return self.work / "results" / f"{self.name}.json"


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


def offline_part(config: TrainConfig) -> dict[str, Any]:
    """What shapes a run's offline phase: the config without its online keys (bench/fork.py's ONLINE_KEYS)."""
    return {key: value for key, value in config.to_dict().items() if key not in ONLINE_KEYS}


def online_changes(config: TrainConfig) -> tuple[tuple[str, str], ...]:
    """The candidate's online keys as a fork sets them (YAML values), online_steps apart: the job sets that."""
    data = config.to_dict()
    return tuple((key, yaml.safe_dump(data[key]).strip()) for key in ONLINE_KEYS if key != "online_steps")


@dataclass(frozen=True)
class GridRun:
    """One scenario x algo x seed of the grid: its offline phase (cached, shared) and its online fork."""

    scenario: str
    offline: FinetuneJob
    online: FinetuneJob

    @property
    def offline_record(self) -> Path:
        """Written when the offline phase ended well: what a later grid reuses instead of running it again."""
        return self.offline.folder / "offline.json"


def grid_runs(
    scenarios: list[Scenario], settings: GridSettings, stores: dict[str, BuiltStore], config_file: Path
) -> list[GridRun]:
    """One run per scenario x algo x seed, the longest first.

    The offline phase's folder is named by a digest of everything that shapes it (the config's
    offline part, the budget, the store), so every candidate whose config differs only online
    forks the same offline checkpoints: their comparison is paired down to the weights.
    """
    config = settings.train_config()
    changes = online_changes(config)
    runs = []
    for s in scenarios:
        offline_steps = s.offline_steps if settings.offline_steps is None else settings.offline_steps
        online_steps = s.online_steps if settings.online_steps is None else settings.online_steps
        for algo in settings.algos:
            for seed in range(settings.first_seed, settings.first_seed + settings.seeds):
                shaped = {
                    "config": offline_part(config.replace(algo=algo, seed=seed, offline_steps=offline_steps)),
                    "store": stores[s.name].path.parent.name,
                }
                digest = hashlib.sha1(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:8]
                job = FinetuneJob(
                    label=f"{s.name} {algo} s{seed} offline",
                    task=s.task,
                    store=stores[s.name].path,
                    folder=settings.work / "offline" / f"{s.name}-{algo}-s{seed}-{digest}",
                    algo=algo,
                    seed=seed,
                    offline_steps=offline_steps,
                    online_steps=0,
                    config=config_file,
                )
                start = job.run_dir / "checkpoints" / f"ckpt_{offline_steps:09d}.pt"
                online = dataclasses.replace(
                    job,
                    label=f"{s.name} {algo} s{seed}",
                    folder=settings.work / "runs" / settings.name / f"{s.name}-{algo}-s{seed}",
                    online_steps=online_steps,
                    config=None,
                    start=start,
                    changes=changes,
                )
                runs.append(GridRun(s.name, job, online))
    return sorted(runs, key=lambda r: (-(r.online.offline_steps + r.online.online_steps), r.online.algo != "awac"))


def run_jobs(
    jobs: list[FinetuneJob], settings: GridSettings, on_done: Callable[[FinetuneJob, FinetuneResult], None]
) -> None:
    if settings.ray:
        run_on_ray(jobs, on_done, settings.ray_address, settings.jobs, settings.verbose)
    else:
        with ThreadPoolExecutor(settings.jobs) as pool:  # the threads only wait on the jobs' subprocesses
            list(pool.map(lambda job: on_done(job, run_finetune(job)), jobs))


def run_grid(scenarios: list[Scenario], settings: GridSettings, results: Results) -> list[FinetuneResult]:
    """Build the stores, run the offline phases not cached yet, then every online fork; record each run as it ends.

    A run's row holds its online job's figures and the cost of its offline phase, with whether
    this grid ran it or found it cached: the cost of one judgment is what the grid itself ran.
    """
    config = settings.train_config()
    stores = build_stores(scenarios, settings, results)
    config_file = settings.work / "configs" / f"{settings.name}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    save_config(config, config_file)
    runs = grid_runs(scenarios, settings, stores, config_file)
    lock = threading.Lock()
    finished: list[FinetuneResult] = []
    offline_costs: dict[Path, dict[str, Any]] = {}

    def offline_done(job: FinetuneJob, result: FinetuneResult) -> None:
        if not result.failed:
            cost = {"wall": result.wall, "cpu": result.cpu, "folder": str(job.folder), "log": str(job.log)}
            (job.folder / "offline.json").write_text(json.dumps(cost, indent=1))
        with lock:
            offline_costs[job.folder] = {
                "ran": True, "returncode": result.returncode, "last_output": result.last_output, "wall": result.wall,
                "cpu": result.cpu, "folder": str(job.folder),
            }  # fmt: skip

    def record(job: FinetuneJob, result: FinetuneResult) -> None:
        run = by_online[job]
        offline = offline_costs[run.offline.folder]
        row: dict[str, Any] = {
            "scenario": run.scenario,
            "algo": job.algo,
            "seed": job.seed,
            "offline_steps": job.offline_steps,
            "online_steps": job.online_steps,
            "config": str(settings.config) if settings.config else None,
            "compile": settings.compile,
            "eval_every": {"offline": config.offline_eval_interval, "online": config.eval_interval},
            "where": f"ray {settings.ray_address or 'local'}" if settings.ray else "local",
            "folder": str(job.folder),
            "log": str(job.log),
            "wall": result.wall,
            "cpu": result.cpu,
            "offline": {key: offline[key] for key in ("ran", "wall", "cpu", "folder")},
            **{key: getattr(result, key) for key in ("started", "finished", "returncode", "last_output", "evals")},
        }
        with lock:
            results.runs[Results.key(row["scenario"], job.algo, job.seed)] = row
            results.save()
            finished.append(result)

    by_online = {run.online: run for run in runs}
    to_run = []
    for run in runs:
        if run.offline_record.exists():
            cached = json.loads(run.offline_record.read_text())
            offline_costs[run.offline.folder] = {"ran": False, "returncode": 0, **cached}
        elif run.offline not in to_run:
            to_run.append(run.offline)
    where = f"Ray ({settings.ray_address or f'local, {settings.jobs} CPUs'})" if settings.ray else "this machine"
    print(
        f"{len(runs)} runs on {where}, {settings.jobs} at a time; config {settings.config or 'defaults'}"
        f"{' compiled' if settings.compile else ''}: {len(to_run)} offline phases to run, "
        f"{len(runs) - len(to_run)} cached; results {settings.results}",
        flush=True,
    )
    try:
        run_jobs(to_run, settings, offline_done)
        ready = [run.online for run in runs if offline_costs[run.offline.folder]["returncode"] == 0]
        for run in runs:
            offline = offline_costs[run.offline.folder]
            if offline["returncode"]:  # no checkpoint to fork: the run failed with its offline phase
                failed = FinetuneResult(
                    returncode=offline["returncode"], last_output=f"offline phase: {offline['last_output']}"
                )
                record(run.online, failed)
        run_jobs(ready, settings, record)
    except Stopped as stop:  # one line, no stack: the finished runs are in the results file already
        print(
            f"suite: stopped by {stop}: {len(finished)} of {len(runs)} runs finished, kept in {results.path}",
            file=sys.stderr,
        )
        raise SystemExit(128 + stop.signum) from None
    return finished


def report(results: Results, names: list[str], algos: tuple[str, ...], baseline: Results | None) -> str:
    """The curves table and issue 9's targets, then the statistics (bench/suite_stats.py) and, with a baseline, the
    judgment: its decision is the last line printed."""
    lines = ["", table(results, names, list(algos)), "", "targets (issue 9; AWAC, mean over seeds):"]
    for name in names:
        lines += targets(results, name)
    passed = sum(line.startswith("  PASS") for line in lines)
    failed = sum(line.startswith("  FAIL") for line in lines)
    lines.append(f"targets: {passed} PASS, {failed} FAIL")
    lines += ["", "AWAC per scenario: seed mean [95% t interval over seeds], percentage points; handover and "
              "final on the report seeds, worst dip = handover - lowest online curve point"]  # fmt: skip
    lines += [*scenario_table(results, names), *aggregate_lines(results, names), cost_line(results)]
    if baseline is not None:
        try:
            judgment = judge(baseline, results, names)
        except StatsError as exc:
            lines += ["", f"no judgment: {exc}"]
        else:
            lines += ["", *judgment_lines(judgment, baseline.path.stem, results.path.stem)]
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


def compiler_present() -> bool:
    try:
        require_cpp_compiler()
    except ConfigError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="A,B", help=f"scenarios to run (default all: {', '.join(SCENARIOS)})")
    parser.add_argument("--algo", choices=ALGOS, nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: K .. K+seeds-1 (add seeds to a run)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each takes one core: threads 1)")
    parser.add_argument("--offline-steps", type=int, help="offline updates of every run (default: the scenario's)")
    parser.add_argument("--online-steps", type=int, help="online env steps of every run (default: the scenario's)")
    parser.add_argument("--config", type=Path, help="training config YAML passed to every run")
    parser.add_argument("--name", help="the candidate's name: WORK/results/NAME.json (default: the config's stem)")
    parser.add_argument("--compare", type=Path, metavar="BASELINE", help="a baseline's results file to judge against")
    parser.add_argument("--no-compile", action="store_true", help="do not torch.compile the update (default: compile "
                        "where a C++ compiler and the Python headers are)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs", help="stores, runs and results")
    parser.add_argument("--ray", action="store_true", help="run the grid as Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--ray-address", help="Ray cluster to join (e.g. HEAD:6379); default a local Ray")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own start-up notices")
    parser.add_argument("--report-only", action="store_true", help="print the report from the results file only")
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
    if args.compare is not None and not args.compare.is_file():
        fail(f"--compare: no results file {args.compare}: pass a suite's WORK/results/NAME.json")
    scenarios = select(args.only)
    algos = tuple(dict.fromkeys(args.algo))
    name = args.name or (args.config.stem if args.config else "defaults")
    settings = GridSettings(
        args.work, algos, args.seeds, args.first_seed, args.jobs, args.offline_steps, args.online_steps,
        args.config, name, not args.no_compile and not args.report_only and compiler_present(), args.ray,
        args.ray_address, args.verbose,
    )  # fmt: skip
    baseline = Results(args.compare) if args.compare else None
    if args.report_only:
        results = Results(settings.results)
        if not results.runs:
            fail(f"no runs in {results.path}: run the suite first (without --report-only)")
        known = [s.name for s in scenarios if s.name in results.stores]
        print(stores_table(results, known))
        print(report(results, known, algos, baseline))
        return
    try:
        settings.train_config()
    except (ConfigError, FileNotFoundError) as exc:
        fail(f"--config: {exc}")
    scenarios = with_reference_data(scenarios, explicit=args.only is not None)
    args.work.mkdir(parents=True, exist_ok=True)
    with sole_suite_in(args.work):
        settings.results.parent.mkdir(exist_ok=True)
        results = Results(settings.results)  # read under the lock: the last suite's rows are all in it
        print(f"suite: {' '.join(sys.argv[1:]) or '(defaults)'}")
        try:
            finished = run_grid(scenarios, settings, results)
        except StoreError as exc:  # e.g. a store cached by an older awac-robot: its message says what to do
            fail(str(exc))
        names = [s.name for s in scenarios]
        print("\n" + stores_table(results, names))
        print(report(results, names, algos, baseline))
    if any(result.failed for result in finished):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
