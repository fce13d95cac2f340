"""The per-episode choice of exploration noise: in turn, or by a bandit on episode success."""

from __future__ import annotations

import numpy as np
import pytest

from awac_robot.train.noise_choice import NoiseChooser


def play(chooser: NoiseChooser, success_rate: dict[int, float], episodes: int, seed: int = 0) -> list[int]:
    """Run `episodes` episodes whose success depends only on the arm; returns the arms chosen."""
    rng = np.random.default_rng(seed)
    arms = []
    for _ in range(episodes):
        arm = chooser.next_arm()
        arms.append(arm)
        chooser.record(bool(rng.random() < success_rate[arm]))
    return arms


def test_cycle_takes_the_multiples_in_turn_whatever_the_outcomes() -> None:
    chooser = NoiseChooser((0.0, 0.5, 1.0), "cycle", memory=50, seed=0)
    assert play(chooser, {0: 1.0, 1: 0.0, 2: 0.0}, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_the_bandit_starts_with_the_smallest_multiple_and_climbs_only_past_successes() -> None:
    chooser = NoiseChooser((0.1, 0.3, 1.0), "bandit", memory=50, seed=4)
    assert play(chooser, {0: 0.0, 1: 1.0, 2: 1.0}, 30) == [0] * 30  # nothing solved at 0.1: never more noise
    chooser = NoiseChooser((0.1, 0.3, 1.0), "bandit", memory=50, seed=4)
    arms = play(chooser, {0: 1.0, 1: 0.0, 2: 1.0}, 60)  # 0.3 always fails: 1.0 is never reached
    assert arms[0] == 0 and 1 in arms and 2 not in arms


def test_the_bandit_explores_mostly_with_the_noise_that_succeeds() -> None:
    """Door-like: the small multiple keeps the policy's 45%, 0.3x keeps 13%, full noise always fails."""
    chooser = NoiseChooser((0.1, 0.3, 1.0), "bandit", memory=50, seed=4)
    counts = np.bincount(play(chooser, {0: 0.45, 1: 0.13, 2: 0.0}, 150), minlength=3)
    assert counts[0] > 100 and counts[2] < 10, counts


def test_the_bandit_reaches_full_noise_where_the_task_tolerates_it() -> None:
    """Pick-and-place-like: noise does not lower success, so the climb goes to the top and stays in use."""
    chooser = NoiseChooser((0.1, 0.3, 1.0), "bandit", memory=50, seed=4)
    arms = play(chooser, {0: 0.25, 1: 0.3, 2: 0.35}, 150)
    counts = np.bincount(arms[50:], minlength=3)
    assert counts[2] > counts[0] and counts[2] > 25, counts


def test_the_bandit_tries_a_failed_multiple_again_once_its_evidence_has_faded() -> None:
    chooser = NoiseChooser((0.1, 1.0), "bandit", memory=10, seed=1)
    play(chooser, {0: 1.0, 1: 0.0}, 20)  # full noise fails whenever it is tried
    tried = [arm for arm in play(chooser, {0: 1.0, 1: 0.0}, 100) if arm == 1]
    assert 3 <= len(tried) < 40, tried  # tried again and again as its failures fade, but never most of the time


def test_fallback_keeps_full_noise_where_the_task_tolerates_it() -> None:
    """Pick-and-place-like: noise costs no successes, so nearly every episode explores with full noise."""
    for seed in range(3):
        chooser = NoiseChooser((0.1, 0.3, 1.0), "fallback", memory=50, seed=seed)
        counts = np.bincount(play(chooser, {0: 0.25, 1: 0.3, 2: 0.35}, 150, seed)[30:], minlength=3)
        assert counts[2] > 80 and counts[0] < 15, counts


def test_fallback_gives_up_the_noise_that_costs_most_successes() -> None:
    """Door-like: full noise never solves, so it is given up for the smaller multiples, which do."""
    for seed in range(3):
        chooser = NoiseChooser((0.1, 0.3, 1.0), "fallback", memory=50, seed=seed)
        arms = play(chooser, {0: 0.45, 1: 0.13, 2: 0.0}, 150, seed)
        counts = np.bincount(arms[30:], minlength=3)
        assert counts[0] + counts[1] > 95 and counts[0] > 2 * counts[2], counts
        assert 2 in arms[:5]  # with no evidence yet, the largest multiple comes first
        assert counts[2] >= 3, counts  # and a multiple that failed is still tried now and then


def test_fallback_keeps_a_larger_multiple_that_keeps_half_the_successes() -> None:
    """Pen-like: full noise solves half as often as a tenth of it, which is enough to keep it in use."""
    chooser = NoiseChooser((0.1, 1.0), "fallback", memory=50, seed=2)
    counts = np.bincount(play(chooser, {0: 0.9, 1: 0.6}, 150, 2)[30:], minlength=2)
    assert counts[1] > counts[0], counts


@pytest.mark.parametrize("rule", ["bandit", "fallback"])
def test_the_choice_depends_only_on_the_seed_and_the_outcomes_so_far(rule: str) -> None:
    history = [True, False, False, True, False, False, False, True]
    first, second = (NoiseChooser((0.0, 0.3, 1.0), rule, memory=20, seed=7) for _ in range(2))
    for solved in history:
        first.record(solved)
        second.record(solved)
    assert first.arms == second.arms and first.next_arm() == second.next_arm()
    assert first.evidence()[0].sum() > 0 and first.recent(4) == second.recent(4)
