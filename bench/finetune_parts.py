"""Where a finetune's wall time goes: the update, env stepping, evaluation, the store, and the worker hand-offs.

Usage: .venv/bin/python bench/finetune_parts.py [--task door] [--threads 1] [--steps 2000]

Each part is timed on its own in this process, then scaled to a run of the default schedule
(25k offline updates, 100k online env steps with one update each, 30-episode evaluations every
5k updates offline and every 5k env steps online: 25 evaluations), so the figures say what the
exploration and evaluation workers can take off the learner's core, and what handing a step
over to the exploration worker costs the learner instead. Synthetic replay data (the update's
arithmetic does not depend on the values); random-init policies (an unsolved door runs its
full 200 steps, as most evaluation episodes of a finetune do). The update is bench/updates.py's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from updates import measure

from awac_robot.envs import get_spec, make_env
from awac_robot.rollout import FunctionActor, rollout
from awac_robot.store import DemoStore, Episode
from awac_robot.train.build import build_learner
from awac_robot.train.config import TrainConfig, setup_torch
from awac_robot.train.evaluation import evaluate
from awac_robot.train.explorer import ExplorerWorker, explore_action, exploring_networks


def explore_step_seconds(config: TrainConfig, steps: int) -> tuple[float, list[Episode]]:
    """Seconds per online step in-process (sample + env step), and the episodes it made (for the store timing)."""
    actor = build_learner(config, get_spec(config.task)).actor
    env, rng = make_env(config.task), torch.Generator().manual_seed(0)
    explorer = FunctionActor(lambda obs: explore_action(actor, actor, obs, rng, 1.0))
    episodes: list[Episode] = []
    done, start = 0, time.perf_counter()
    while done < steps:
        episodes.append(rollout(env, explorer, len(episodes), source="online"))
        done += episodes[-1].length
    return (time.perf_counter() - start) / done, episodes


def handoff_seconds(config: TrainConfig, steps: int, update_seconds: float) -> float:
    """The learner's own seconds per step with the exploration worker: publish weights, take the step."""
    spec = get_spec(config.task)
    learner = build_learner(config, spec)
    explorer = ExplorerWorker(config, spec, "sparse", exploring_networks(learner.actor, learner.policy, config))
    rng = torch.Generator().manual_seed(0)
    try:
        for _ in explorer.steps(0, 50, rng, 1.0, "online"):  # warm-up: the worker has started and stepped
            pass
        explorer.finish()
        done, own, episode = 0, 0.0, 1
        while done < steps:
            handed = explorer.steps(episode, steps - done, rng, 1.0, "online")
            while True:
                start = time.perf_counter()
                step = next(handed, None)
                own += time.perf_counter() - start
                if step is None:
                    break
                done += 1
                time.sleep(update_seconds)  # the update, during which the worker takes the next step
            explorer.finish()
            episode += 1
    finally:
        explorer.close()
    return own / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="door")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the learner (0 = every core)")
    parser.add_argument("--steps", type=int, default=2000, help="online steps timed")
    parser.add_argument("--seconds", type=float, default=8.0, help="update timing window")
    args = parser.parse_args()
    config = TrainConfig(task=args.task, threads=args.threads)
    threads = setup_torch(config)
    print(f"torch {torch.__version__}, {threads} learner threads, load average before: {os.getloadavg()[0]:.2f}")

    rate, _, _ = measure(config, config.batch_size, args.seconds)
    step, episodes = explore_step_seconds(config, args.steps)
    env = make_env(config.task)
    start = time.perf_counter()
    scored = evaluate(build_learner(config, get_spec(config.task)).policy, env, config.eval_episodes, config.seed)
    one_eval = time.perf_counter() - start
    folder = Path(tempfile.mkdtemp())
    try:
        with DemoStore.open_or_create(folder / "s.zarr", get_spec(config.task), "sparse") as store:
            start = time.perf_counter()
            for episode in episodes:
                store.append(episode, spec=get_spec(config.task))
            append = (time.perf_counter() - start) / len(episodes)
    finally:
        shutil.rmtree(folder)
    handoff = handoff_seconds(config, args.steps, 1.0 / rate)

    offline, online = config.offline_steps, config.online_steps
    evals = (offline - 1) // config.offline_eval_interval + 1 + online // config.eval_interval
    length = sum(e.length for e in episodes) / len(episodes)
    parts = {
        f"updates ({offline + online}, {rate:.1f}/s)": (offline + online) / rate,
        f"online env steps in-process ({step * 1e3:.2f} ms each)": online * step,
        f"evaluations ({evals} x {config.eval_episodes} episodes, {one_eval:.1f} s each)": evals * one_eval,
        f"store appends ({online / length:.0f} episodes, {append * 1e3:.0f} ms each)": online / length * append,
        f"hand-offs to the exploration worker ({handoff * 1e3:.2f} ms a step)": online * handoff,
    }
    print(f"per {offline // 1000}k offline updates + {online // 1000}k online env steps on {config.task}:")
    for name, seconds in parts.items():
        print(f"  {name}: {seconds:7.0f} s")
    print(f"(evaluation env steps per evaluation: {scored['eval_env_steps']})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
