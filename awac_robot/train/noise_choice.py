"""Which multiple of the actor's std each online episode explores with.

How much noise a task tolerates is not known before it is tried: on the Adroit door the learned
std turns a 50% policy into a 0% one, while on Fetch pick-and-place the same rule succeeds as
often as the deterministic policy (docs/benchmarks.md). Every exploring episode ends with a
success flag, so the choice can be learned online: `bandit` treats the multiples in
`explore_noise` as arms of a Bernoulli bandit and draws each episode's arm by Thompson sampling
from Beta posteriors of their success, with evidence fading over `explore_memory` episodes so
that an arm ruled out early is tried again as the policy changes. `cycle` takes them in turn
(Ape-X's fixed spread, Horgan et al. 2018).

The bandit climbs: `explore_noise` is read as a ladder from small to large, the first episodes
take the smallest multiple, and a multiple becomes eligible only once the one below it has
recently solved an episode. A few early episodes with more noise than the task tolerates are
enough to wreck a fragile offline policy (door-human: 45% to 0% within 2000 env steps when an
unconstrained bandit tried every multiple first), so larger noise has to earn its turn.

`fallback` goes the other way, for a trainer that imitates solved episodes only (`imitate_online:
solved`), where a failed noisy episode no longer teaches the actor anything wrong: explore with
the largest multiple unless it solves less than half as often as a smaller one does. Noise is
what finds new successes, so it is given up only where it costs most of them (the Adroit doors,
where full noise solves nothing), and kept where the task tolerates it (pick-and-place), which
the climbing bandit did not do. Each episode draws one success rate per multiple from its Beta
posterior and takes the largest multiple whose draw is at least `FALLBACK_SHARE` of the best
draw, so a multiple that has failed is still tried now and then, less often the more it failed.

The choice is a function of the run's seed and the success flags of its earlier online episodes
only, so a resumed run rebuilds it from the episodes in the store and chooses as the
uninterrupted run did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RULES = ("cycle", "bandit", "fallback")
#: faded successes a multiple must show before the next larger one may be tried (about one recent success)
CLIMB_EVIDENCE = 0.5
#: under `fallback`, the share of the best multiple's (sampled) success a larger multiple must keep to be used
FALLBACK_SHARE = 0.5


class NoiseChooser:
    """The arm (index into `scales`) of each online episode, and the outcomes it has seen."""

    def __init__(self, scales: Sequence[float], rule: str, memory: int, seed: int) -> None:
        self.scales = tuple(float(scale) for scale in scales)
        self.rule = rule
        self.decay = 1.0 - 1.0 / memory
        self.seed = seed
        self.arms: list[int] = []
        self.solved: list[bool] = []

    def next_arm(self) -> int:
        """The arm of the episode after the ones recorded so far."""
        episode = len(self.arms)
        if self.rule == "cycle" or len(self.scales) == 1:
            return episode % len(self.scales)
        successes, failures = self.evidence()
        draws = np.random.default_rng((self.seed, episode)).beta(1.0 + successes, 1.0 + failures)
        if self.rule == "fallback":
            return int(np.flatnonzero(draws >= FALLBACK_SHARE * draws.max())[-1])
        solved_at = np.flatnonzero(successes >= CLIMB_EVIDENCE)
        eligible = min(len(self.scales), (int(solved_at[-1]) + 2) if len(solved_at) else 1)
        return int(np.argmax(draws[:eligible]))

    def next_scale(self) -> float:
        return self.scales[self.next_arm()]

    def record(self, solved: bool) -> None:
        """The episode chosen by `next_arm` has ended, solved or not."""
        self.arms.append(self.next_arm())
        self.solved.append(bool(solved))

    def evidence(self) -> tuple[np.ndarray, np.ndarray]:
        """Faded counts of solved and failed episodes per arm (the newest episode weighs 1)."""
        successes, failures = np.zeros(len(self.scales)), np.zeros(len(self.scales))
        weight = 1.0
        for arm, solved in zip(reversed(self.arms), reversed(self.solved), strict=True):
            (successes if solved else failures)[arm] += weight
            weight *= self.decay
        return successes, failures

    def recent(self, episodes: int) -> tuple[float, float] | None:
        """Success rate and mean noise multiple of the last `episodes` episodes (None before the first)."""
        if not self.arms:
            return None
        arms, solved = self.arms[-episodes:], self.solved[-episodes:]
        return float(np.mean(solved)), float(np.mean([self.scales[arm] for arm in arms]))
