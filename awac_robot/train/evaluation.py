"""Policy evaluation: deterministic actions on freshly seeded episodes, the same seeds every time.

Fixed seeds make two evaluations comparable (the same door positions), and the seeds follow
one rule, here, for the trainer and `awac-robot evaluate` alike. There are two disjoint sets:

- *selection* seeds score the evaluations that may pick a policy: the learning curve's
  evaluations, from which `handover: best` picks the offline policy handed to the online phase
  and `best.pt` keeps the best. Episode i of run seed s starts from `1_000_000 + 1000 s + i`.
- *report* seeds score the evaluations that report a policy: the handed-over policy and the
  final one (`report_episodes` each). Episode i starts from `999_999 - i` whatever the run seed,
  so every run and every candidate config is scored on the same starts (comparisons are paired),
  and never on a start that took part in choosing the policy: the best of several evaluations
  is an optimistic score of itself, and an unbiased one only on starts it was not picked on.

All selection seeds are >= 1_000_000 and all report seeds are below, so the sets never meet.
A checkpoint, its ONNX export and the trainer's own figure are scored on the same starts. The
evaluation env is separate from the exploration env so evaluating never disturbs an episode
being collected. A success rate over n episodes is reported with its 95% Wilson interval: at
n = 30 a measured 0.5 means [0.33, 0.67], which is what two runs must beat before they differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from awac_robot.envs import TaskEnv
from awac_robot.filming import FilmedEpisode, filmed_rollout
from awac_robot.rollout import Actor, FunctionActor, rollout
from awac_robot.store import Episode

#: the first selection seed; report seeds count down from just below it
EVAL_SEED_BASE = 1_000_000
#: selection evaluations of one run seed: so the seed sets of two run seeds never overlap either
MAX_SELECT_EPISODES = 1000
#: report evaluations: their seeds stay >= 0
MAX_REPORT_EPISODES = 100_000
SELECT, REPORT = "select", "report"
#: z for a two-sided 95% interval
Z95 = 1.959963984540054


def eval_seed(run_seed: int, index: int, purpose: str = SELECT) -> int:
    """The env seed of evaluation episode `index`: selection seeds depend on the run seed, report seeds do not."""
    if purpose == REPORT:
        return EVAL_SEED_BASE - 1 - index
    return EVAL_SEED_BASE + MAX_SELECT_EPISODES * run_seed + index


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate: unlike p +- z*se it stays in [0, 1] and is honest at 0/n."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class EpisodeScore:
    seed: int
    steps: int
    total_return: float
    solved: bool
    #: the first step after which the task was solved (1-based, like the video's step count); None if never
    solved_at: int | None

    @classmethod
    def of(cls, episode: Episode) -> EpisodeScore:
        hits = np.flatnonzero(episode.success)
        solved_at = int(hits[0]) + 1 if hits.size else None
        return cls(episode.seed, episode.length, episode.total_return, episode.solved, solved_at)


@dataclass
class Evaluation:
    scores: list[EpisodeScore]

    @property
    def successes(self) -> int:
        return sum(score.solved for score in self.scores)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.scores)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, len(self.scores))

    @property
    def mean_return(self) -> float:
        return float(np.mean([score.total_return for score in self.scores]))

    def metrics(self) -> dict[str, float]:
        """The figures the trainer logs and keeps in its checkpoints."""
        return {
            "success_rate": self.success_rate,
            "return": self.mean_return,
            "episodes": len(self.scores),
            "eval_env_steps": sum(score.steps for score in self.scores),
        }

    def to_dict(self) -> dict[str, object]:
        low, high = self.interval
        return {
            "success_rate": self.success_rate,
            "successes": self.successes,
            "episodes": len(self.scores),
            "ci95": [low, high],
            "mean_return": self.mean_return,
            "per_episode": [asdict(score) for score in self.scores],
        }


def deterministic_actor(policy: torch.nn.Module) -> FunctionActor:
    """A torch policy `(B, obs_dim) -> (B, act_dim)` as a rollout actor, one observation at a time."""

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return policy(torch.from_numpy(obs)[None])[0].numpy()

    return FunctionActor(act)


def run_evaluation(
    actor: Actor,
    env: TaskEnv,
    episodes: int,
    seed: int = 0,
    on_film: Callable[[int, FilmedEpisode], None] | None = None,
    purpose: str = SELECT,
) -> Evaluation:
    """Score `actor` on `episodes` episodes; with `on_film` (the env must render) each one is filmed and handed over."""
    scores = []
    for index in range(episodes):
        start = eval_seed(seed, index, purpose)
        if on_film is None:
            episode = rollout(env, actor, start)
        else:
            film = filmed_rollout(env, actor, start, f"{env.config.name} eval episode {index}")
            on_film(index, film)
            episode = film.episode
        scores.append(EpisodeScore.of(episode))
    return Evaluation(scores)


def evaluate(
    policy: torch.nn.Module, env: TaskEnv, episodes: int, seed: int = 0, purpose: str = SELECT
) -> dict[str, float]:
    """Success rate (solved at any step, the DAPG/AWAC convention), mean return and steps taken."""
    return run_evaluation(deterministic_actor(policy), env, episodes, seed, purpose=purpose).metrics()
