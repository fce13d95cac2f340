"""The suite's statistics: seed means with intervals, aggregates over scenarios, and a paired judgment.

A run is scored by its two report evaluations (the handed-over and the final policy, each on
the trainer's report seeds, which nothing was selected on: train/evaluation.py) and its online
curve. Per scenario: the seed mean of handover, final, online gain (final - handover) and
worst dip (handover - lowest online curve point), each with a 95% interval over seeds. Across
scenarios: the mean (of the scenarios' seed means, each scenario weighing the same) and the IQM
(of every run pooled) of final success and online gain, as rliable recommends (Agarwal et al.
2021).

Which intervals, and why not rliable's percentile bootstrap for the means: with 3 seeds a
percentile bootstrap is far too narrow (it resamples 3 values, whose spread underestimates the
seeds' own by a factor (n-1)/n in variance, and it has no small-sample quantile). Simulated on
paired differences with no true effect, 5 scenarios x 3 seeds, the stratified percentile
bootstrap's 95% interval excluded 0 in 16% of A/A comparisons (25% on one scenario), so it
would declare differences that do not exist. Means therefore get Student t intervals: one
scenario's seed mean t with n - 1 degrees of freedom; a mean over scenarios the sum of the
scenarios' variances with Welch-Satterthwaite degrees of freedom, which is exact for normal
seed-to-seed noise and excluded 0 in 5% of the same A/A comparisons. The IQM and the
probability of improvement have no such formula: they get rliable's stratified bootstrap
(each resample redraws the seeds within every scenario), printed as descriptions, never used
to decide. All of it is numpy and a few lines, written here rather than depending on rliable
1.2.0 (which pins an old `arch` and brings scipy, pandas and seaborn along) or scipy.

The judgment of a candidate against a baseline (`judge`): per scenario the difference of the
seed means of final success, candidate - baseline; paired by seed when both ran the same seeds
(the same stores and the same offline checkpoints, so a seed's difference cancels what the seed
did offline), else the two sides' variances added (an A/A check on disjoint seeds). Across
scenarios the mean of those differences with its interval, and the probability of improvement
(the chance that a candidate run beats a baseline run of the same scenario, ties half, averaged
over scenarios). The decision:

- ADOPT: the aggregate difference's 95% interval lies above 0 and no scenario's seed-mean final
  is more than 10 points below the baseline's;
- REJECT: the interval lies below 0;
- UNDECIDED otherwise (always with fewer than 3 seeds a side), with the seeds per scenario at
  which an interval of the observed spread would exclude 0 at the observed difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from suite_report import Results

CONFIDENCE = 0.95
RESAMPLES = 10_000  # of the stratified bootstrap (IQM, probability of improvement); a fixed generator seed
HARM = 0.10  # ADOPT never harms one scenario's seed-mean final by more than this
MIN_SEEDS = 3  # fewer seeds say too little of the spread: no decision
MAX_SEEDS = 1000  # the largest number of seeds UNDECIDED names


class StatsError(ValueError):
    """Results the statistics cannot use (nothing scored in common); the message says why."""


@dataclass(frozen=True)
class RunScore:
    """One finished run as the judgment sees it (success rates in [0, 1])."""

    seed: int
    handover: float
    final: float
    lowest_online: float

    @property
    def gain(self) -> float:
        return self.final - self.handover

    @property
    def dip(self) -> float:
        return self.handover - self.lowest_online

    def metric(self, name: str) -> float:
        return float(getattr(self, name))


METRICS = ("handover", "final", "gain", "dip")


def run_score(row: dict[str, Any]) -> RunScore | None:
    """A results row's scores; None for a failed run or one without both reports (made before they existed)."""
    if row["returncode"]:
        return None
    reports = {e["report"]: e["report_success"] for e in row["evals"] if "report_success" in e}
    online = [e["eval_success"] for e in row["evals"] if "eval_success" in e and e["phase"] == "online"]
    if "handover" not in reports or "final" not in reports or not online:
        return None
    return RunScore(row["seed"], reports["handover"], reports["final"], min(online))


def scenario_scores(results: Results, scenario: str, algo: str = "awac") -> list[RunScore]:
    """The scored runs of one scenario, by seed."""
    scored = (run_score(row) for row in results.runs_of(scenario, algo))
    return [score for score in scored if score is not None]


def unscored(results: Results, scenario: str, algo: str = "awac") -> list[int]:
    """Seeds of runs the statistics cannot use (failed, or without report evaluations)."""
    return [row["seed"] for row in results.runs_of(scenario, algo) if run_score(row) is None]


def metric_values(scores: list[RunScore], name: str) -> np.ndarray:
    return np.array([score.metric(name) for score in sorted(scores, key=lambda s: s.seed)])


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% interval (NaN bounds: too few seeds for one)."""

    value: float
    low: float
    high: float

    def points(self, sign: bool = False) -> str:
        """In percentage points: `43.3 [36.0, 50.7]`."""
        form = "+.1f" if sign else ".1f"
        if math.isnan(self.low):
            return f"{100 * self.value:{form}} [-]"
        return f"{100 * self.value:{form}} [{100 * self.low:{form}}, {100 * self.high:{form}}]"


# -- Student t intervals of means ----------------------------------------------------------------


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` (> 0, not necessarily whole) degrees of freedom.

    Bisection on the CDF, integrated from the density on a grid: accurate to ~1e-6, all this needs.
    """
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20_001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid * grid / df))
        return 0.5 + float(np.trapezoid(density, grid))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Part:
    """A variance term of a mean's estimator and its degrees of freedom: s^2 / n with n - 1."""

    variance: float
    df: int

    @classmethod
    def of(cls, values: np.ndarray) -> Part:
        n = len(values)
        return cls(float(values.var(ddof=1)) / n if n > 1 else math.nan, n - 1)


def t_estimate(value: float, parts: Sequence[Part], scale: float = 1.0) -> Estimate:
    """`value` with the t interval of scale * (a sum of independent means), Welch-Satterthwaite degrees of freedom."""
    if any(part.df < 1 for part in parts):
        return Estimate(value, math.nan, math.nan)
    variance = sum(part.variance for part in parts)
    if variance == 0:
        return Estimate(value, value, value)
    df = variance**2 / sum(part.variance**2 / part.df for part in parts)
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * scale * math.sqrt(variance)
    return Estimate(value, value - half, value + half)


def seed_mean(values: np.ndarray) -> Estimate:
    """One scenario's seed mean with its t interval over seeds."""
    return t_estimate(float(values.mean()), [Part.of(values)])


def mean_over_scenarios(groups: Sequence[np.ndarray]) -> Estimate:
    """The mean of the scenarios' seed means (each scenario weighs the same) with its t interval."""
    value = float(np.mean([g.mean() for g in groups]))
    return t_estimate(value, [Part.of(g) for g in groups], scale=1 / len(groups))


# -- stratified bootstrap (descriptive: IQM, probability of improvement) -------------------------

Stat = Callable[[list[np.ndarray]], np.ndarray]  # groups of shape (..., n_g) -> a value per leading index


def stratified_bootstrap(groups: Sequence[np.ndarray], stat: Stat) -> Estimate:
    """`stat` of the groups with its percentile interval over resamples that redraw seeds within every group."""
    rng = np.random.default_rng(0)
    resampled = [g[rng.integers(0, len(g), size=(RESAMPLES, len(g)))] for g in groups]
    samples = stat(resampled)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Estimate(float(stat([g[None, :] for g in groups])[0]), float(low), float(high))


def iqm(groups: list[np.ndarray]) -> np.ndarray:
    """Interquartile mean of every run pooled: the mean of the middle half, the lowest and highest quarter cut."""
    values = np.sort(np.concatenate(groups, axis=-1), axis=-1)
    cut = int(0.25 * values.shape[-1])
    return np.asarray(values[..., cut : values.shape[-1] - cut].mean(axis=-1))


def improvement(groups: list[np.ndarray]) -> np.ndarray:
    """P(candidate run > baseline run of the same scenario), ties half; groups alternate candidate, baseline."""
    chances = []
    for cand, base in zip(groups[::2], groups[1::2], strict=True):
        wins = cand[..., :, None] > base[..., None, :]
        ties = cand[..., :, None] == base[..., None, :]
        chances.append(wins.mean(axis=(-2, -1)) + 0.5 * ties.mean(axis=(-2, -1)))
    return np.asarray(np.mean(chances, axis=0))


# -- reports -------------------------------------------------------------------------------------


def scenario_table(results: Results, names: list[str], algo: str = "awac") -> list[str]:
    """Per scenario the seed means of handover, final, gain and dip (percentage points, 95% t interval over seeds)."""
    lines = [
        "| scenario | seeds | data success | handover | final | online gain | worst dip |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        scores = scenario_scores(results, name, algo)
        missing = unscored(results, name, algo)
        note = f" ({len(missing)} unscored: seeds {', '.join(map(str, missing))})" if missing else ""
        store = results.stores.get(name)
        data = f"{store['success']:.0%}" if store else "?"
        if not scores:
            lines.append(f"| {name} | 0{note} | {data} | - | - | - | - |")
            continue
        cells = [seed_mean(metric_values(scores, m)).points(sign=m == "gain") for m in METRICS]
        lines.append(f"| {name} | {len(scores)}{note} | {data} | " + " | ".join(cells) + " |")
    return lines


def aggregate_lines(results: Results, names: list[str], algo: str = "awac") -> list[str]:
    """Across the scenarios with scored runs: mean (t interval) and IQM (stratified bootstrap) of final and gain."""
    scored = {name: scenario_scores(results, name, algo) for name in names}
    scored = {name: scores for name, scores in scored.items() if scores}
    if not scored:
        return ["aggregate: no scenario has a scored run"]
    lines = [f"aggregate over {len(scored)} scenario(s) ({', '.join(scored)}), 95% intervals:"]
    for metric, label in (("final", "final success"), ("gain", "online gain  ")):
        groups = [metric_values(scores, metric) for scores in scored.values()]
        mean = mean_over_scenarios(groups).points(sign=metric == "gain")
        middle = stratified_bootstrap(groups, iqm).points(sign=metric == "gain")
        lines.append(f"  {label}: mean {mean} (t), IQM {middle} (stratified bootstrap)")
    return lines


@dataclass(frozen=True)
class ScenarioComparison:
    name: str
    baseline: np.ndarray  # final success by seed
    candidate: np.ndarray
    paired: bool  # both ran the same seeds: compared seed by seed

    @property
    def difference(self) -> float:
        return float(self.candidate.mean() - self.baseline.mean())

    def parts(self) -> list[Part]:
        if self.paired:
            return [Part.of(self.candidate - self.baseline)]
        return [Part.of(self.candidate), Part.of(self.baseline)]

    @property
    def seeds(self) -> int:
        return min(len(self.candidate), len(self.baseline))


@dataclass(frozen=True)
class Judgment:
    decision: str  # ADOPT, REJECT or UNDECIDED
    reason: str
    difference: Estimate
    improvement: Estimate
    scenarios: list[tuple[ScenarioComparison, Estimate]]
    seeds_needed: int | None = None


def aggregate_difference(comparisons: list[ScenarioComparison]) -> Estimate:
    value = float(np.mean([c.difference for c in comparisons]))
    return t_estimate(value, [part for c in comparisons for part in c.parts()], scale=1 / len(comparisons))


def seeds_to_decide(comparisons: list[ScenarioComparison], estimate: Estimate) -> int | None:
    """The seeds per scenario at which the interval, its spread and difference as observed, would exclude 0."""
    if estimate.value == 0 or math.isnan(estimate.low):
        return None

    def decides(seeds: int) -> bool:
        more = [
            Part(part.variance * c.seeds / seeds, (part.df + 1) * seeds // c.seeds - 1)
            for c in comparisons
            for part in c.parts()
        ]
        interval = t_estimate(estimate.value, more, scale=1 / len(comparisons))
        return interval.low > 0 or interval.high < 0

    low, high = min(c.seeds for c in comparisons), MAX_SEEDS  # the interval narrows as seeds grow: bisect
    if not decides(high):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle + 1, high)
    return low


def judge(baseline: Results, candidate: Results, names: list[str], algo: str = "awac") -> Judgment:
    """Candidate against baseline on the scenarios both have scored runs of (see the module docstring)."""
    comparisons = []
    for name in names:
        base, cand = scenario_scores(baseline, name, algo), scenario_scores(candidate, name, algo)
        if base and cand:
            paired = sorted(s.seed for s in base) == sorted(s.seed for s in cand)
            comparisons.append(
                ScenarioComparison(name, metric_values(base, "final"), metric_values(cand, "final"), paired)
            )
    if not comparisons:
        raise StatsError(f"no scenario has scored runs in both the baseline and the candidate ({', '.join(names)})")
    difference = aggregate_difference(comparisons)
    chance = stratified_bootstrap([g for c in comparisons for g in (c.candidate, c.baseline)], improvement)
    rows = [(c, aggregate_difference([c])) for c in comparisons]
    harmed = [c for c in comparisons if c.difference < -HARM - 1e-9]
    seeds = min(c.seeds for c in comparisons)

    def decided(decision: str, reason: str, needed: int | None = None) -> Judgment:
        return Judgment(decision, reason, difference, chance, rows, needed)

    if seeds < MIN_SEEDS:
        return decided("UNDECIDED", f"a decision needs >= {MIN_SEEDS} scored seeds a side on every scenario ({seeds})")
    if difference.low > 0 and not harmed:
        return decided("ADOPT", "the aggregate difference's 95% interval lies above 0, no scenario 10 points below")
    if difference.high < 0:
        return decided("REJECT", "the aggregate difference's 95% interval lies below 0")
    if difference.low > 0:
        worst = ", ".join(f"{c.name} {100 * c.difference:+.1f}" for c in harmed)
        return decided("UNDECIDED", f"the aggregate is above 0, but a scenario's final falls > 10 points ({worst})")
    if difference.value == 0:
        return decided("UNDECIDED", "the interval straddles 0 and the difference is 0: no number of seeds decides")
    needed = seeds_to_decide(comparisons, difference)
    if needed is None:
        return decided("UNDECIDED", f"the interval straddles 0; even {MAX_SEEDS} seeds would not decide it")
    reason = f"the interval straddles 0; at the observed spread and difference about {needed} seeds per scenario "
    return decided("UNDECIDED", reason + f"(now {seeds}) would decide it", needed)


def judgment_lines(judgment: Judgment, baseline: str, candidate: str) -> list[str]:
    lines = [
        f"candidate {candidate} against baseline {baseline}: final success, candidate - baseline "
        "(percentage points, 95% t interval)",
        "| scenario | seeds (paired?) | baseline final | candidate final | difference |",
        "|---|---|---|---|---|",
    ]
    for c, diff in judgment.scenarios:
        seeds = f"{len(c.baseline)} / {len(c.candidate)} ({'paired' if c.paired else 'unpaired'})"
        base, cand = 100 * c.baseline.mean(), 100 * c.candidate.mean()
        lines.append(f"| {c.name} | {seeds} | {base:.1f} | {cand:.1f} | {diff.points(sign=True)} |")
    chance = judgment.improvement
    lines += [
        f"aggregate: mean difference {judgment.difference.points(sign=True)} (t); probability of improvement "
        f"{chance.value:.2f} [{chance.low:.2f}, {chance.high:.2f}] (stratified bootstrap)",
        f"{judgment.decision}: {judgment.reason}",
    ]
    return lines
