"""How well the online phase's exploring policy does, beside the policy that is evaluated.

Usage: .venv/bin/python bench/explore_gap.py CHECKPOINT [--episodes 30] [--noise-scales 1.0 0.3]

The learning issue saw the exploring actor (its mean plus its learned noise) solve 0 of 600
online door episodes while the evaluated averaged actor scored 50%. This scores, on the
trainer's evaluation seeds, the four policies of one checkpoint: the actor and the averaged
actor ("policy"), each deterministic and with the actor's noise (times each of --noise-scales),
so the gap can be split into the part that comes from the noise and the part that comes from
the actor's own jitter.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from awac_robot.envs import make_env
from awac_robot.rollout import FunctionActor
from awac_robot.spec import TaskSpec
from awac_robot.train.build import build_learner
from awac_robot.train.checkpoint import read_checkpoint
from awac_robot.train.config import from_dict
from awac_robot.train.evaluation import run_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--noise-scales", type=float, nargs="+", default=[1.0], help="multiples of the actor's std")
    args = parser.parse_args()
    state = read_checkpoint(args.checkpoint)
    config = from_dict(state["config"], args.checkpoint)
    learner = build_learner(config, TaskSpec.from_dict(state["spec"]))
    learner.load_state_dict(state["learner"])
    actor, policy = learner.actor, learner.policy
    std = actor.clamped_log_std().detach().exp()
    print(f"{state['path']}: update {state['counters']['updates']}, actor noise std mean {float(std.mean()):.3f}")
    env = make_env(config.task)
    for name, net in (("actor", actor), ("policy", policy)):
        for scale in (0.0, *args.noise_scales):
            generator = torch.Generator().manual_seed(0)

            @torch.no_grad()
            def act(
                obs: np.ndarray,
                net: torch.nn.Module = net,
                scale: float = scale,
                generator: torch.Generator = generator,
            ) -> np.ndarray:
                return actor.sample(net(torch.from_numpy(obs)[None]), generator, scale)[0].numpy()

            result = run_evaluation(FunctionActor(act), env, args.episodes, config.seed)
            low, high = result.interval
            label = f"{name} + {scale:g} x noise" if scale else f"{name} deterministic"
            print(f"{label:<24} success {result.success_rate:.0%} [{low:.0%}, {high:.0%}]")


if __name__ == "__main__":
    main()
