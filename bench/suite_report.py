"""The suite's results file and what is printed from it: the table and the learning issue's targets.

Everything printed comes from the results file (`WORK/suite-results.json`), so `--report-only`
prints the same table and targets without rerunning anything. Runs are kept by scenario, algo
and seed: a later run of the same key replaces the earlier one, other keys stay.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARGIN = 0.10  # the targets' "10 points"
EPSILON = 1e-9  # success rates are k/n fractions: compare them without float noise


class Results:
    """The stores and runs of a suite work dir, saved atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.stores: dict[str, dict[str, Any]] = data.get("stores", {})
        self.runs: dict[str, dict[str, Any]] = data.get("runs", {})

    @staticmethod
    def key(scenario: str, algo: str, seed: int) -> str:
        return f"{scenario}/{algo}/s{seed}"

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"stores": self.stores, "runs": self.runs}, indent=1))
        os.replace(tmp, self.path)

    def runs_of(self, scenario: str, algo: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.runs.values() if r["scenario"] == scenario and r["algo"] == algo), key=lambda r: r["seed"]
        )


@dataclass(frozen=True)
class Curve:
    """The mean over seeds of one scenario x algo: offline evals in update order, online evals in step order."""

    offline: list[float]
    #: the offline policy the online phase started from, when the run handed over an earlier one (`handover: best`)
    handover: list[float]
    online: list[float]
    wall: float
    seeds: int
    failed: list[str]  # one line per failed run

    @property
    def start(self) -> float | None:
        """The offline policy handed to the online phase: the hand-over, else the last offline evaluation."""
        if self.handover:
            return self.handover[-1]
        return self.offline[-1] if self.offline else None

    @property
    def final(self) -> float | None:
        return self.online[-1] if self.online else None


def mean_curve(runs: list[dict[str, Any]]) -> Curve | None:
    if not runs:
        return None
    good = [r for r in runs if not r["returncode"]]
    failed = [
        f"seed {r['seed']} exit {r['returncode']}: {r['last_output']} ({r['log']})" for r in runs if r["returncode"]
    ]

    def mean_by_position(phase: str, handover: bool = False) -> list[float]:
        def wanted(row: dict[str, Any]) -> bool:
            return "eval_success" in row and row["phase"] == phase and ("handover_from" in row) == handover

        curves = [[e["eval_success"] for e in r["evals"] if wanted(e)] for r in good]
        return [sum(column) / len(column) for column in zip(*curves, strict=False)] if curves else []

    wall = sum(r["wall"] for r in good) / len(good) if good else float("nan")
    offline, handover = mean_by_position("offline"), mean_by_position("offline", handover=True)
    return Curve(offline, handover, mean_by_position("online"), wall, len(good), failed)


def percents(values: list[float]) -> str:
    return " ".join(f"{100 * v:.0f}" for v in values) or "-"


def handed_over(curve: Curve) -> str:
    return f" (hand-over {100 * curve.handover[-1]:.0f})" if curve.handover else ""


def interval_label(results: Results, key: str, unit: str) -> str:
    values = {r["eval_every"][key] for r in results.runs.values()}
    if len(values) != 1:
        return f"% per eval ({unit})"
    (every,) = values
    return f"% every {every / 1000:g}k {unit} and at the end"


def table(results: Results, scenarios: list[str], algos: list[str]) -> str:
    """One markdown row per scenario x algo (the mean over its seeds)."""
    header = [
        "scenario", "data success", "algo", "seeds", f"offline eval ({interval_label(results, 'offline', 'updates')})",
        f"online eval ({interval_label(results, 'online', 'env steps')})", "AWAC vs BC (final)", "wall per run",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in scenarios:
        store = results.stores.get(name)
        data = f"{store['success']:.0%}" if store else "?"
        curves = {algo: mean_curve(results.runs_of(name, algo)) for algo in algos}
        awac, bc = curves.get("awac"), curves.get("bc")
        versus = "-"
        if awac and bc and awac.final is not None and bc.final is not None:
            versus = f"{100 * awac.final:.0f} vs {100 * bc.final:.0f} ({100 * (awac.final - bc.final):+.0f})"
        for algo, curve in curves.items():
            if curve is None:
                continue
            failed = f" ({len(curve.failed)} failed)" if curve.failed else ""
            cells = [
                name, data, algo, f"{curve.seeds}{failed}", percents(curve.offline) + handed_over(curve),
                percents(curve.online), versus if algo == "awac" else "", f"{curve.wall:.0f} s",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(passed: bool, text: str) -> str:
    return f"  {'PASS' if passed else 'FAIL'} {text}"


def targets(results: Results, scenario: str) -> list[str]:
    """The learning issue's targets for one scenario, on the mean AWAC curve (BC only as its rival)."""
    awac = mean_curve(results.runs_of(scenario, "awac"))
    bc = mean_curve(results.runs_of(scenario, "bc"))
    lines = [f"{scenario}:"]
    if awac is None or awac.start is None or awac.final is None:
        return [*lines, check(False, "no finished AWAC run to judge (run it with --algo awac)")]
    lines += [f"  FAIL run failed: {failure}" for failure in awac.failed]
    start, final, lowest, best = awac.start, awac.final, min(awac.online), max(awac.offline)
    store = results.stores.get(scenario)
    lines.append(
        check(
            lowest >= start - MARGIN - EPSILON,
            f"online never more than 10 points below the offline start (lowest {lowest:.0%}, start {start:.0%})",
        )
    )
    lines.append(check(final >= start - EPSILON, f"final >= offline start ({final:.0%} vs {start:.0%})"))
    if store is None:
        lines.append(check(False, "final >= data success (no store record)"))
    else:
        data = store["success"]
        lines.append(check(final >= data - EPSILON, f"final >= data success ({final:.0%} vs {data:.0%})"))
    if bc is None or bc.final is None:
        lines.append(check(False, "AWAC >= BC at the end (no finished BC run: add --algo bc)"))
    else:
        lines.append(check(final >= bc.final - EPSILON, f"AWAC >= BC at the end ({final:.0%} vs {bc.final:.0%})"))
    lines.append(
        check(
            start >= best - MARGIN - EPSILON,
            f"handed-over offline policy within 10 points of the best offline eval ({start:.0%} vs best {best:.0%})",
        )
    )
    return lines


def cost_line(results: Results) -> str:
    """What the results' runs cost: each online fork, and the offline phases, once each, whoever ran them.

    One judgment of a candidate that forks cached offline phases costs its forks alone; a
    candidate (or baseline) that has to run its offline phases too costs both.
    """
    runs = [r for r in results.runs.values() if "offline" in r and not r["returncode"]]
    if not runs:
        return "cost: no finished run records its cost"
    offline = {r["offline"]["folder"]: r["offline"] for r in runs}.values()
    wall, cpu = sum(r["wall"] for r in runs), sum(r["cpu"] for r in runs)
    off_wall, off_cpu = sum(o["wall"] for o in offline), sum(o["cpu"] for o in offline)
    ran = sum(o["ran"] for o in offline)
    return (
        f"cost: {len(runs)} online phases, wall {wall / 60:.0f} min, CPU {cpu / 60:.0f} min "
        f"({wall / len(runs) / 60:.1f} and {cpu / len(runs) / 60:.1f} min each); their {len(offline)} offline phases "
        f"({ran} run by this candidate, the rest cached), wall {off_wall / 60:.0f} min, CPU {off_cpu / 60:.0f} min"
    )
