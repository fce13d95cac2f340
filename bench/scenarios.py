"""The scenario suite: named learning problems, each a task, how its store is built, and its step budget.

The scenarios are data the trainer was not tuned on, beside the one it was (`door-expert`):
human demos alone, the AWAC paper's own recipe for its hand tasks, and noisy experts and
scripts on other tasks. Noise levels were tuned by measurement so that 30-50% of the
demonstrator's episodes succeed; the measurements are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from stores import StoreRecipe


@dataclass(frozen=True)
class Scenario:
    name: str
    task: str
    store: StoreRecipe
    summary: str
    offline_steps: int = 25_000
    online_steps: int = 50_000


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "door-expert",
            "door",
            StoreRecipe("dapg-expert", episodes=50, noise=0.2, human_demos=True),
            "the store the trainer was tuned on (bench/learning.py): DAPG door expert + human demos",
            online_steps=100_000,
        ),
        Scenario(
            "door-human",
            "door",
            StoreRecipe("none", episodes=0, human_demos=True),
            "the 25 human door demos alone (`demos import dapg`)",
            online_steps=100_000,
        ),
        Scenario(
            "door-paper",
            "door",
            StoreRecipe("bc-on-human", episodes=500, noise=0.02, human_demos=True),
            "the AWAC paper's recipe: 25 human demos + 500 episodes of a BC policy trained on them",
            online_steps=100_000,
        ),
        Scenario(
            "pen-expert",
            "pen",
            StoreRecipe("dapg-expert", episodes=50, noise=0.7),
            "the DAPG pen expert with action noise",
        ),
        Scenario(
            "push-scripted",
            "push",
            StoreRecipe("scripted", episodes=50, noise=0.4),
            "the scripted push demonstrator with action noise",
        ),
        Scenario(
            "pick_place-scripted",
            "pick_place",
            StoreRecipe("scripted", episodes=50, noise=0.45),
            "the scripted pick-and-place demonstrator with action noise",
        ),
        Scenario(
            "relocate-scripted",
            "relocate",
            StoreRecipe("scripted", episodes=50, perturb=0.7),
            "the scripted relocate demonstrator, 70% of episodes hit by bursts of random actions",
        ),
    )
}
