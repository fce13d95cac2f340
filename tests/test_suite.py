"""The benchmark suite's machinery (bench/): store builds that are all-or-nothing, and the grid on Ray.

The Ray test runs a tiny grid on a real local Ray with 2 CPUs: real `awac-robot finetune`
subprocesses in scratch folders, their run folders shipped back, and the rows the tasks
returned compared with the metrics.jsonl files that landed on disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from awac_robot.store import DemoStore

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the suite is a script, not a package
from runner import eval_rows  # noqa: E402
from scenarios import Scenario  # noqa: E402
from stores import BuiltStore, StoreRecipe, build_atomically, cached_store  # noqa: E402
from suite import GridSettings, grid_runs, run_grid, sole_suite_in  # noqa: E402
from suite_report import Results, mean_curve, table, targets  # noqa: E402

TINY_SUITE = {
    "eval_episodes": 2, "report_episodes": 2, "log_interval": 100, "offline_eval_interval": 100, "eval_interval": 50,
    "actor_hidden": [32, 32], "critic_hidden": [32, 32], "batch_size": 32,
}  # fmt: skip


def test_a_failed_store_build_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "stores" / "broken"
    final.parent.mkdir()

    def build(staging: Path) -> None:
        (staging / "half-written").write_text("x")
        raise RuntimeError("collect failed")

    with pytest.raises(RuntimeError, match="collect failed"):
        build_atomically(final, build)
    assert list(final.parent.iterdir()) == []


def run_row(algo: str, offline: list[float], online: list[float], returncode: int = 0) -> dict:
    evals = [{"phase": "offline", "eval_success": x} for x in offline] + [
        {"phase": "online", "eval_success": x} for x in online
    ]
    return {
        "scenario": "s", "algo": algo, "seed": 0, "returncode": returncode, "evals": evals, "wall": 1.0,
        "last_output": "boom", "log": "s.log", "eval_every": {"offline": 5000, "online": 5000},
    }  # fmt: skip


def test_targets_follow_the_issue_definitions_to_the_point(tmp_path: Path) -> None:
    results = Results(tmp_path / "results.json")
    results.stores["s"] = {"success": 0.4}
    # Start 0.8 (the last offline eval), best offline 0.9; online dips to exactly 10 points below the start.
    results.runs["s/awac/s0"] = run_row("awac", [0.9, 0.8], [0.7, 0.9])
    results.runs["s/bc/s0"] = run_row("bc", [0.9, 0.9], [0.95])
    lines = targets(results, "s")[1:]
    assert [line.split()[0] for line in lines] == ["PASS", "PASS", "PASS", "FAIL", "PASS"]
    assert "(lowest 70%, start 80%)" in lines[0] and "(90% vs 95%)" in lines[3] and "best 90%" in lines[4]
    results.runs["s/awac/s0"] = run_row("awac", [0.9, 0.7], [0.59, 0.8])  # 11 points down; handed over 20 below best
    lines = targets(results, "s")
    assert [line.split()[0] for line in lines[1:]] == ["FAIL", "PASS", "PASS", "FAIL", "FAIL"]
    results.runs["s/awac/s1"] = {**run_row("awac", [], [], returncode=2), "seed": 1}
    assert any(line.startswith("  FAIL run failed: seed 1 exit 2: boom") for line in targets(results, "s"))
    results.save()
    assert "| s | 40% | awac | 1 (1 failed) | 90 70 | 59 80 | 80 vs 95 (-15) |" in table(
        Results(results.path), ["s"], ["awac", "bc"]
    )


TINY_SCENARIO = Scenario("reach-tiny", "reach", StoreRecipe("scripted", episodes=5, noise=0.1), "tiny", 200, 100)


def grid_folders(tmp_path: Path, config: Path | None, name: str, **settings: object) -> list[tuple[Path, Path]]:
    """(offline folder, online folder) of each run of a grid, without running it."""
    store = BuiltStore(tmp_path / "stores" / "reach-x" / "store.zarr", 5, 250, 0.4, {}, {}, build_seconds=1.0)
    grid = GridSettings(tmp_path / "work", algos=("awac",), config=config, name=name, **settings)
    runs = grid_runs([TINY_SCENARIO], grid, {"reach-tiny": store}, tmp_path / "config.yaml")
    return sorted((run.offline.folder, run.online.folder) for run in runs)


def test_first_seed_adds_seeds_beside_an_earlier_runs_folders(tmp_path: Path) -> None:
    folders = grid_folders(tmp_path, None, "defaults", seeds=2, first_seed=3)
    assert [online.name for _, online in folders] == ["reach-tiny-awac-s3", "reach-tiny-awac-s4"]
    assert [online.parent.name for _, online in folders] == ["defaults", "defaults"]
    assert folders[0][0] != folders[1][0]  # each seed its own offline phase


def test_candidates_that_differ_only_online_share_their_offline_phases(tmp_path: Path) -> None:
    online_only, offline_too = tmp_path / "online.yaml", tmp_path / "offline.yaml"
    online_only.write_text("imitate_online: all\nexplore_noise: [1.0]\n")
    offline_too.write_text("imitate_online: all\nawr_lambda: 0.3\n")
    defaults = grid_folders(tmp_path, None, "defaults", seeds=3)
    forks = grid_folders(tmp_path, online_only, "online", seeds=3)
    others = grid_folders(tmp_path, offline_too, "offline", seeds=3)
    assert [offline for offline, _ in forks] == [offline for offline, _ in defaults]
    assert not {offline for offline, _ in others} & {offline for offline, _ in defaults}
    assert {online.parent.name for _, online in forks} == {"online"}  # the online phases apart


def test_a_grid_runs_each_offline_phase_once_and_forks_every_candidate_from_it(tmp_path: Path) -> None:
    config, worse = tmp_path / "tiny.yaml", tmp_path / "worse.yaml"
    config.write_text(yaml.safe_dump(TINY_SUITE))
    worse.write_text(yaml.safe_dump({**TINY_SUITE, "imitate_online": "all"}))
    work = tmp_path / "work"
    work.mkdir()
    rows = {}
    for name, path in (("tiny", config), ("worse", worse)):
        settings = GridSettings(work, algos=("awac",), seeds=1, config=path, name=name)
        results = Results(settings.results)
        settings.results.parent.mkdir(exist_ok=True)
        assert [r.returncode for r in run_grid([TINY_SCENARIO], settings, results)] == [0]
        rows[name] = Results(settings.results).runs["reach-tiny/awac/s0"]
    first, second = rows["tiny"], rows["worse"]
    assert first["offline"]["ran"] and not second["offline"]["ran"]  # the second candidate found it cached
    assert first["offline"]["folder"] == second["offline"]["folder"] and first["offline"]["cpu"] > 0
    assert first["cpu"] > 0 and first["wall"] > 0
    reports = [
        [(e["report"], e["updates"], e["report_success"]) for e in r["evals"] if "report" in e] for r in (first, second)
    ]
    assert [kind for kind, *_ in reports[0]] == [kind for kind, *_ in reports[1]] == ["handover", "final"]
    assert reports[0][0] == reports[1][0]  # the handover was scored once, by the offline phase both forked
    assert (Path(second["folder"]) / "run" / "config.yaml").read_text().count("imitate_online: all") == 1
    assert [p.name for p in (work / "offline").iterdir()] == [Path(first["offline"]["folder"]).name]


def test_a_second_suite_in_a_held_work_folder_stops_before_touching_it(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    results = work / "results" / "defaults.json"
    results.parent.mkdir()
    results.write_text('{"stores": {}, "runs": {"kept/awac/s0": {}}}')
    holder = subprocess.Popen(  # a real suite process holding the folder: the lock, then a wait
        [sys.executable, "-c", "import time; from suite import sole_suite_in\n"
         f"with sole_suite_in(__import__('pathlib').Path({str(work)!r})):\n print('held', flush=True); time.sleep(60)"],
        cwd=BENCH, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        second = subprocess.run(
            [sys.executable, str(BENCH / "suite.py"), "--only", "push-scripted", "--algo", "bc", "--work", str(work)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        holder_text = f"pid {holder.pid} on {socket.gethostname()}"
        assert f"suite: error: another suite ({holder_text}) is running in {work}" in second.stderr
        assert sorted(p.name for p in work.iterdir()) == ["results", "writer.lock"]  # no store, no run
        assert [p.name for p in results.parent.iterdir()] == ["defaults.json"]
        assert results.read_text() == '{"stores": {}, "runs": {"kept/awac/s0": {}}}'
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with sole_suite_in(work):  # a holder killed outright leaves no stale lock to clear by hand
        assert (work / "writer.lock").read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"


@pytest.mark.slow
def test_ray_grid_gathers_the_rows_its_run_folders_hold(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("eval_episodes: 3\nreport_episodes: 2\nlog_interval: 100\n")
    tiny = Scenario(
        "reach-tiny", "reach", StoreRecipe("scripted", episodes=5, noise=0.1), "5 noisy scripted reach episodes",
        offline_steps=200, online_steps=200,
    )  # fmt: skip
    settings = GridSettings(tmp_path / "work", algos=("awac", "bc"), seeds=1, jobs=2, config=config, ray=True)
    settings.work.mkdir()
    results = Results(settings.work / "suite-results.json")

    finished = run_grid([tiny], settings, results)

    assert [r.returncode for r in finished] == [0, 0]
    saved = Results(results.path)  # what --report-only reads back
    assert sorted(saved.runs) == ["reach-tiny/awac/s0", "reach-tiny/bc/s0"]
    base = Path(saved.stores["reach-tiny"]["path"])
    for run in saved.runs.values():
        folder = Path(run["folder"])
        assert run["evals"] == eval_rows(folder / "run")
        assert [(e["phase"], e.get("report"), e["updates"], e["env_steps"]) for e in run["evals"]] == [
            ("offline", None, 200, 0),
            ("offline", "handover", 200, 0),
            ("online", None, 400, 200),
            ("online", "final", 400, 200),
        ]
        with DemoStore.open(folder / "run" / "store.zarr") as copy:  # the run's own store copy took its online episodes
            assert copy.num_steps == 5 * 50 + 200
    with DemoStore.open(base) as store:  # the base store was only read
        assert store.num_episodes == 5
    assert cached_store(settings.work / "stores", "reach-tiny", "reach", tiny.store).cached

    awac = mean_curve(saved.runs_of("reach-tiny", "awac"))
    lines = targets(saved, "reach-tiny")
    start_line = next(line for line in lines if "final >= offline start" in line)
    assert start_line.startswith("  PASS" if awac.final >= awac.start else "  FAIL")
    assert len(lines) == 6 and all(line.startswith(("  PASS", "  FAIL")) for line in lines[1:])
    assert "| reach-tiny | " in table(saved, ["reach-tiny"], ["awac", "bc"])
