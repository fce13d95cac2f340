"""Success rate of each scripted demonstrator (or any other) over seeded episodes, with and without action noise.

    .venv/bin/python bench/scripted_success.py [--tasks door push] [--episodes 50] [--noise 0 0.1 0.3 0.5]
        [--demonstrator scripted|policy:PATH.onnx] [--first-seed 0]

`--demonstrator policy:policies/pen-dapg.onnx --tasks pen` measures an imported expert
(`awac-robot import-policy`) the same way.

Success is reported two ways: on the episode's last step ("final") and on any step
("any"); the sparse reward AWAC learns from counts every successful step, so both matter.
Speed is wall time per episode (expert + simulator), steps per second, and how many times
faster than the task's real control rate that is. Episodes run through
`collect.run_episode`, the loop `collect` records with, so a row is what
`collect --noise sigma` records.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from awac_robot.collect import resolve_demonstrator, run_episode
from awac_robot.demonstrators.scripted import scripted_tasks
from awac_robot.envs import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=scripted_tasks())
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.3, 0.5])
    parser.add_argument("--demonstrator", default="scripted", help="scripted (default) or policy:PATH.onnx")
    parser.add_argument("--first-seed", type=int, default=0, help="episodes use seeds FIRST .. FIRST+EPISODES-1")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    print(f"{args.demonstrator} demonstrator, seeds {seeds.start}-{seeds.stop - 1}")
    print(f"{'task':<12} {'noise':>5} {'final':>7} {'any':>7} {'ms/ep':>7} {'steps/s':>8} {'x real-time':>11}")
    for task in args.tasks:
        env = make_env(task)
        demo = resolve_demonstrator(args.demonstrator, env)
        for noise in args.noise:
            start = time.perf_counter()
            results = [run_episode(env, demo, seed, noise) for seed in seeds]
            elapsed = time.perf_counter() - start
            final = np.mean([r.success[-1] for r in results])
            any_ = np.mean([r.solved for r in results])
            steps = sum(r.length for r in results)
            rate = steps / elapsed
            print(
                f"{task:<12} {noise:>5.2f} {final:>7.0%} {any_:>7.0%} {1000 * elapsed / len(results):>7.1f} "
                f"{rate:>8.0f} {rate * env.config.control_period:>11.1f}",
                flush=True,
            )
        env.close()


if __name__ == "__main__":
    main()
