"""Exploration in a worker process, one update behind the learner, so env step and update overlap.

Online, every env step is followed by one update (the paper's ratio, `updates_per_step`).
Done in turn on one core, the env and the exploration sample wait for the update and the
update waits for them. Here a worker process owns the exploration env and samples the
actions; the trainer only learns. They overlap by a fixed rule, so a seeded run is still
reproducible:

- an episode's first action comes from the weights after every update so far;
- the action of step i + 1 comes from the weights the learner holds when step i reaches it,
  before step i's own updates: the worker steps the env for i + 1 while the learner updates
  on i, one update behind.

The action is the actor's noise (its learned std times the episode's `explore_noise`
multiple) around the mean of `explore_mean`'s network: the actor, or the evaluated policy.
Their weights travel through shared-memory tensors that the trainer writes and then
announces; the worker reads them only between that announcement and sending its next step,
and the trainer writes them only after receiving that step, so the two never touch them at
the same time. The exploration noise comes from the trainer's checkpointed generator: its
state goes out with each episode and comes back with the finished episode.

`one_update_behind` is the rule in one place: the worker follows it live, and the trainer's
redo of stored episodes after a resume (train/finetune.py) follows it in-process, so it
draws the same actions the killed run drew.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from awac_robot.envs import make_env
from awac_robot.rollout import FunctionActor, Step, rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import Episode
from awac_robot.train.build import build_actor
from awac_robot.train.config import TrainConfig, from_dict, setup_torch
from awac_robot.train.networks import GaussianActor
from awac_robot.train.worker import STOP, Worker

#: The trainer's message that fresh weights for the next action are in the shared tensors.
WEIGHTS = "weights"


@dataclass(frozen=True)
class Transition:
    """One online env step as the learner takes it; `last` ends the episode (terminal, time limit or budget)."""

    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    last: bool


@torch.no_grad()
def explore_action(
    actor: GaussianActor, mean: GaussianActor, obs: np.ndarray, rng: torch.Generator, noise_scale: float
) -> np.ndarray:
    """The online action: `actor`'s noise times `noise_scale` around `mean`'s action, from the exploration generator.

    The noise is drawn even at scale 0, so the generator moves the same way whatever the scale.
    """
    return actor.sample(mean(torch.from_numpy(obs)[None]), rng, noise_scale)[0].numpy()


def exploring_networks(actor: GaussianActor, policy: GaussianActor, config: TrainConfig) -> dict[str, GaussianActor]:
    """The networks an exploration action needs: the actor, and the mean's network when it is another one."""
    networks = {"actor": actor}
    if config.explore_mean == "policy" and policy is not actor:
        networks["mean"] = policy
    return networks


def one_update_behind(steps: Iterator[Transition], publish: Callable[[], None]) -> Iterator[Transition]:
    """The timing rule: `publish` the learner's weights for the episode's first action, then for each next one.

    Each step is handed on only after the weights for the step after it are out, so whatever
    the caller does with it (its updates) happens while the next action is taken.
    """
    publish()
    for step in steps:
        if not step.last:
            publish()
        yield step


class SharedWeights:
    """A module's parameters and buffers, packed into one float32 tensor in shared memory.

    It holds on to the module's own tensors, which training and `load_state_dict` update in
    place, so `write` is one batched copy (a fresh `state_dict()` every step cost the learner
    as much again).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        state = module.state_dict(keep_vars=True)
        if any(t.dtype != torch.float32 for t in state.values()):
            raise TypeError("SharedWeights packs float32 modules only")
        self.layout = [(name, tuple(t.shape)) for name, t in state.items()]
        self.flat = torch.zeros(sum(t.numel() for t in state.values())).share_memory_()
        self._sources = list(state.values())
        self._views = list(unpack(self.flat, self.layout).values())

    @torch.no_grad()
    def write(self) -> None:
        torch._foreach_copy_(self._views, self._sources)


def unpack(flat: torch.Tensor, layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """Views of `flat` shaped like the packed state dict."""
    views, start = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        views[name] = flat[start : start + size].view(shape)
        start += size
    return views


class ExplorerWorker:
    """The trainer's side: start an episode, take its steps as they come, collect the episode.

    `networks` are the learner's own (`exploring_networks`): their weights are the ones published.
    """

    def __init__(
        self, config: TrainConfig, spec: TaskSpec, reward_mode: str, networks: dict[str, GaussianActor]
    ) -> None:
        self.weights = {name: SharedWeights(network) for name, network in networks.items()}
        shared = {name: (weights.flat, weights.layout) for name, weights in self.weights.items()}
        self.worker = Worker(
            "exploration", serve, config.to_dict(), spec.to_dict(), reward_mode, shared, timeout=config.worker_timeout
        )

    def steps(
        self, seed: int, budget: int, rng: torch.Generator, noise_scale: float, source: str
    ) -> Iterator[Transition]:
        """One episode from `reset(seed)`, at most `budget` steps; `finish` returns it once the last step is out."""
        self.worker.send((seed, budget, rng.get_state().numpy(), noise_scale, source))
        yield from one_update_behind(self._received(), self._publish)

    def finish(self) -> tuple[Episode, torch.Tensor]:
        """The episode just stepped, as `rollout` recorded it, and the exploration generator's state after it."""
        episode, rng_state = self.worker.recv()
        return episode, torch.from_numpy(rng_state)

    def close(self, finish: bool = True) -> None:
        self.worker.close(finish)

    def _publish(self) -> None:
        for weights in self.weights.values():
            weights.write()
        self.worker.send(WEIGHTS)

    def _received(self) -> Iterator[Transition]:
        while True:
            step: Transition = self.worker.recv()
            yield step
            if step.last:
                return


class _Stopped(Exception):
    """The trainer closed the worker in the middle of an episode (it is stopping on an error)."""


def serve(
    conn: Connection,
    config_data: dict[str, Any],
    spec_data: dict[str, Any],
    reward_mode: str,
    shared: dict[str, tuple[torch.Tensor, list[tuple[str, tuple[int, ...]]]]],
) -> None:
    """The worker: the exploration env, copies of the networks refreshed from shared memory before every action."""
    config = from_dict(config_data, "the exploration worker's config")
    setup_torch(config.replace(threads=1, compile=False))  # a worker runs no update: nothing to compile
    env = make_env(config.task, reward=reward_mode)
    spec = TaskSpec.from_dict(spec_data)
    networks = {name: build_actor(config, spec).requires_grad_(False) for name in shared}
    views = {name: unpack(flat, layout) for name, (flat, layout) in shared.items()}
    actor, mean = networks["actor"], networks.get("mean", networks["actor"])
    rng, noise_scale = torch.Generator(), 1.0

    def act(obs: np.ndarray) -> np.ndarray:
        if conn.recv() is STOP:
            raise _Stopped
        for name, network in networks.items():
            network.load_state_dict(views[name])
        return explore_action(actor, mean, obs, rng, noise_scale)

    while (request := conn.recv()) is not STOP:
        seed, budget, rng_state, noise_scale, source = request
        rng.set_state(torch.from_numpy(rng_state))

        def on_step(step: Step, budget: int = budget) -> bool:
            # The run's step budget ends the episode as a time limit would: truncation, never a terminal.
            out_of_budget = step.index + 1 >= budget
            last = out_of_budget or step.terminated or step.truncated
            conn.send(Transition(step.obs, step.action, step.reward, step.next_obs, step.terminated, last))
            return out_of_budget

        try:
            episode = rollout(env, FunctionActor(act), seed, source=source, on_step=on_step)
        except _Stopped:
            return
        conn.send((episode, rng.get_state().numpy()))
