"""The suite's statistics on synthetic results files: what they must detect, and what they must not.

Each result is written to disk and read back as `bench/suite.py --compare` reads it. The runs
are made up (success rates drawn around known means), so the decision each file must produce
is known: a real difference is found, identical results never decide, a harmed scenario
blocks ADOPT, and too few seeds never decide.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the suite is a script, not a package
from suite_report import Results  # noqa: E402
from suite_stats import (  # noqa: E402
    Estimate,
    iqm,
    judge,
    mean_over_scenarios,
    run_score,
    scenario_table,
    seed_mean,
    stratified_bootstrap,
    t_quantile,
)

SCENARIOS = ("a", "b", "c", "d", "e")


def row(scenario: str, seed: int, handover: float, final: float, online: list[float], returncode: int = 0) -> dict:
    evals = [
        {"phase": "offline", "eval_success": handover, "updates": 100, "env_steps": 0},
        {"phase": "offline", "report": "handover", "report_success": handover, "updates": 100, "env_steps": 0},
        *({"phase": "online", "eval_success": x, "updates": 100 + i, "env_steps": i} for i, x in enumerate(online)),
        {"phase": "online", "report": "final", "report_success": final, "updates": 200, "env_steps": 100},
    ]
    return {
        "scenario": scenario, "algo": "awac", "seed": seed, "returncode": returncode, "evals": evals, "wall": 1.0,
        "last_output": "", "log": "run.log", "eval_every": {"offline": 100, "online": 100},
    }  # fmt: skip


def results_file(path: Path, finals: dict[str, list[float]], handover: float = 0.4, first_seed: int = 0) -> Results:
    """A results file with one run per scenario x seed: its final success as given, its handover the same for all."""
    results = Results(path)
    for scenario, values in finals.items():
        results.stores[scenario] = {"task": "t", "recipe": "r", "episodes": 9, "success": 0.3, "build_seconds": 1.0}
        for i, final in enumerate(values):
            seed = first_seed + i
            dip = min(final, handover) - 0.05
            results.runs[Results.key(scenario, "awac", seed)] = row(scenario, seed, handover, final, [dip, final])
    results.save()
    return Results(path)  # read back, as --compare does


def noisy(rng: np.random.Generator, mean: float, seeds: int = 3, spread: float = 0.05) -> list[float]:
    return [float(np.clip(x, 0, 1)) for x in mean + rng.normal(0, spread, seeds)]


def test_a_run_is_scored_by_its_reports_and_its_lowest_online_point() -> None:
    score = run_score(row("a", 0, 0.5, 0.7, [0.3, 0.6, 0.7]))
    assert score is not None
    assert (score.handover, score.final, score.lowest_online) == (0.5, 0.7, 0.3)
    assert score.gain == pytest.approx(0.2) and score.dip == pytest.approx(0.2)
    assert run_score(row("a", 0, 0.5, 0.7, [0.3], returncode=1)) is None  # failed
    old = row("a", 0, 0.5, 0.7, [0.3])
    old["evals"] = [e for e in old["evals"] if "report" not in e]  # made before report evaluations existed
    assert run_score(old) is None


def test_intervals_and_estimators_on_known_values() -> None:
    assert iqm([np.arange(8) / 10]) == pytest.approx(np.mean([0.2, 0.3, 0.4, 0.5]))  # the middle half
    assert iqm([np.array([0.0, 1.0]), np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])]) == pytest.approx(0.5)
    assert mean_over_scenarios([np.array([0.0, 0.0, 0.0]), np.array([1.0])]).value == 0.5  # scenarios weigh the same
    for p, df, textbook in ((0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 10, 2.2281), (0.975, 1e6, 1.9600)):
        assert t_quantile(p, df) == pytest.approx(textbook, abs=2e-4)
    constant = seed_mean(np.array([0.4, 0.4, 0.4]))
    assert (constant.value, constant.low, constant.high) == pytest.approx((0.4, 0.4, 0.4))
    spread = seed_mean(np.array([0.2, 0.4, 0.9]))  # sd 0.3606: 0.5 +- 4.3027 * 0.3606 / sqrt(3)
    assert (spread.value, spread.low, spread.high) == pytest.approx((0.5, 0.5 - 0.8958, 0.5 + 0.8958), abs=1e-3)
    assert math.isnan(seed_mean(np.array([0.7])).low) and seed_mean(np.array([0.7])).points() == "70.0 [-]"
    # a scenario whose seeds agree adds no variance: over two scenarios the half-width halves, the df unchanged
    both = mean_over_scenarios([np.array([0.5, 0.5, 0.5]), np.array([0.1, 0.3, 0.5])])
    alone = seed_mean(np.array([0.1, 0.3, 0.5]))
    assert both.high - both.low == pytest.approx((alone.high - alone.low) / 2)
    middle = stratified_bootstrap([np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5])], iqm)
    assert (middle.value, middle.low, middle.high) == pytest.approx((0.5, 0.5, 0.5))
    assert Estimate(0.123, -0.05, 0.3).points(sign=True) == "+12.3 [-5.0, +30.0]"


def test_a_known_difference_is_detected_both_ways(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base_means = dict(zip(SCENARIOS, (0.2, 0.35, 0.5, 0.65, 0.8), strict=True))
    baseline = results_file(tmp_path / "base.json", {s: noisy(rng, m) for s, m in base_means.items()})
    better = results_file(tmp_path / "better.json", {s: noisy(rng, m + 0.15) for s, m in base_means.items()})
    worse = results_file(tmp_path / "worse.json", {s: noisy(rng, m - 0.15) for s, m in base_means.items()})

    adopted = judge(baseline, better, list(SCENARIOS))
    assert adopted.decision == "ADOPT" and adopted.difference.low > 0
    assert adopted.difference.value == pytest.approx(0.15, abs=0.05) and adopted.improvement.value > 0.9
    assert all(c.paired for c, _ in adopted.scenarios)  # same seeds: compared seed by seed

    rejected = judge(baseline, worse, list(SCENARIOS))
    assert rejected.decision == "REJECT" and rejected.difference.high < 0 and rejected.improvement.value < 0.1


def test_identical_results_never_decide(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    finals = {s: noisy(rng, 0.5, spread=0.2) for s in SCENARIOS}
    same = judge(results_file(tmp_path / "a.json", finals), results_file(tmp_path / "b.json", finals), list(SCENARIOS))
    assert same.decision == "UNDECIDED" and same.difference.value == 0 and same.improvement.value == 0.5
    assert "no number of seeds" in same.reason


def test_a_small_difference_in_noise_is_undecided_with_the_seeds_that_would_decide_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = {s: noisy(rng, 0.5, spread=0.2) for s in SCENARIOS}
    cand = {s: [x + 0.03 + float(rng.normal(0, 0.2)) for x in values] for s, values in base.items()}
    judgment = judge(results_file(tmp_path / "a.json", base), results_file(tmp_path / "b.json", cand), list(SCENARIOS))
    assert judgment.decision == "UNDECIDED" and judgment.difference.low < 0 < judgment.difference.high
    assert judgment.seeds_needed is not None and judgment.seeds_needed > 3
    assert f"about {judgment.seeds_needed} seeds per scenario" in judgment.reason


def test_adopt_needs_every_scenario_within_ten_points_of_the_baseline(tmp_path: Path) -> None:
    base = {s: [0.40, 0.42, 0.44] for s in SCENARIOS}
    cand = {s: [0.70, 0.72, 0.74] for s in SCENARIOS}
    cand["e"] = [0.28, 0.30, 0.32]  # 12 points below the baseline on one scenario
    judgment = judge(results_file(tmp_path / "a.json", base), results_file(tmp_path / "b.json", cand), list(SCENARIOS))
    assert judgment.difference.low > 0 and judgment.decision == "UNDECIDED" and "e -12.0" in judgment.reason


def test_too_few_seeds_never_decide(tmp_path: Path) -> None:
    base = {s: [0.2, 0.25] for s in SCENARIOS}
    cand = {s: [0.8, 0.85] for s in SCENARIOS}
    judgment = judge(results_file(tmp_path / "a.json", base), results_file(tmp_path / "b.json", cand), list(SCENARIOS))
    assert judgment.decision == "UNDECIDED" and "needs >= 3 scored seeds" in judgment.reason


def test_an_aa_check_on_disjoint_seeds_is_compared_unpaired(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    first = results_file(tmp_path / "a.json", {s: noisy(rng, 0.5, spread=0.15) for s in SCENARIOS})
    second = results_file(tmp_path / "b.json", {s: noisy(rng, 0.5, spread=0.15) for s in SCENARIOS}, first_seed=3)
    judgment = judge(first, second, list(SCENARIOS))
    assert not any(c.paired for c, _ in judgment.scenarios)
    assert judgment.decision == "UNDECIDED"


def test_the_suite_prints_the_tables_and_the_decision_from_results_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    rng = np.random.default_rng(5)
    names = ("door-human", "pen-expert", "push-scripted")
    baseline = results_file(work / "results" / "defaults.json", {s: noisy(rng, 0.5) for s in names})
    results_file(work / "results" / "worse.json", {s: noisy(rng, 0.2) for s in names})
    table = "\n".join(scenario_table(baseline, list(names)))
    assert "| door-human | 3 | 30% | 40.0 [40.0, 40.0] |" in table  # every handover the same
    printed = subprocess.run(
        [sys.executable, str(BENCH / "suite.py"), "--work", str(work), "--report-only", "--name", "worse",
         "--compare", str(work / "results" / "defaults.json"), "--only", ",".join(names)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "aggregate over 3 scenario(s)" in printed and "IQM" in printed
    assert "candidate worse against baseline defaults" in printed
    assert printed.rstrip().splitlines()[-1].startswith("REJECT: ")
