"""How often the suite's judgment declares a difference that is not there: A/A comparisons, simulated.

    .venv/bin/python bench/aa_check.py [--trials 1000] [--spread 0.1]

Each trial draws a baseline and a candidate with the same true final success, scenario by
scenario (3 or 5 seeds, paired: the candidate's seed differs from the baseline's by normal
noise of `--spread`), and asks whether a 95% interval of the aggregate mean difference excludes 0,
which `bench/suite_stats.py` would print as ADOPT or REJECT. It prints that rate for the suite's
rule (Student t, Welch-Satterthwaite) beside rliable's stratified percentile bootstrap of the same
mean, the reason the suite does not use the latter for means (the module docstring). A sound 95%
rule says ~5%.
"""

from __future__ import annotations

import argparse

import numpy as np
from suite_stats import ScenarioComparison, aggregate_difference, stratified_bootstrap


def mean_of_means(groups: list[np.ndarray]) -> np.ndarray:
    return np.asarray(np.mean([g.mean(axis=-1) for g in groups], axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.1, help="sd of a seed's paired difference")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"A/A, paired differences N(0, {args.spread}), {args.trials} trials: share of 95% intervals excluding 0")
    print("| scenarios x seeds | t (the suite) | stratified percentile bootstrap |")
    print("|---|---|---|")
    for scenarios, seeds in ((1, 3), (2, 3), (6, 3), (6, 5)):
        t_wrong = boot_wrong = 0
        for _ in range(args.trials):
            base = rng.uniform(0.2, 0.8, size=(scenarios, 1)) + np.zeros((scenarios, seeds))
            cand = base + rng.normal(0, args.spread, size=(scenarios, seeds))
            comparisons = [ScenarioComparison(str(i), base[i], cand[i], True) for i in range(scenarios)]
            t = aggregate_difference(comparisons)
            t_wrong += t.low > 0 or t.high < 0
            boot = stratified_bootstrap([c.candidate - c.baseline for c in comparisons], mean_of_means)
            boot_wrong += boot.low > 0 or boot.high < 0
        print(f"| {scenarios} x {seeds} | {t_wrong / args.trials:.3f} | {boot_wrong / args.trials:.3f} |", flush=True)


if __name__ == "__main__":
    main()
