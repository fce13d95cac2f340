"""The shared episode loop: one seed gives one episode, the hook sees every step and can end it."""

from __future__ import annotations

import numpy as np

from awac_robot.envs import make_env
from awac_robot.rollout import FunctionActor, Step, rollout


def zero_actor(act_dim: int) -> FunctionActor:
    return FunctionActor(lambda obs: np.zeros(act_dim, dtype=np.float32))


def test_the_seed_alone_fixes_reset_and_noise() -> None:
    env = make_env("reach")
    actor = zero_actor(env.config.act_dim)
    first = rollout(env, actor, 7, noise=0.3, perturb=1.0)
    rollout(env, actor, 8, noise=0.3)  # whatever ran in between does not matter
    again = rollout(env, actor, 7, noise=0.3, perturb=1.0)
    other = rollout(env, actor, 8, noise=0.3, perturb=1.0)
    np.testing.assert_array_equal(first.obs, again.obs)
    np.testing.assert_array_equal(first.action, again.action)
    assert first.seed == 7 and first.length == env.config.episode_steps and first.truncated[-1]
    assert np.abs(first.action).max() <= 1.0 and np.abs(first.action).min() > 0  # noise, clipped
    assert not np.array_equal(first.action, other.action)


def test_hook_sees_each_step_and_can_end_the_episode_as_truncation() -> None:
    env = make_env("reach")
    seen: list[Step] = []

    def stop_after_five(step: Step) -> bool:
        seen.append(step)
        return step.index == 4

    episode = rollout(env, zero_actor(env.config.act_dim), 3, source="online", on_step=stop_after_five)
    assert [s.index for s in seen] == [0, 1, 2, 3, 4]
    assert episode.length == 5 and episode.source == "online"
    assert episode.truncated.tolist() == [False] * 4 + [True] and not episode.terminated.any()
    np.testing.assert_array_equal(np.stack([s.obs for s in seen]), episode.obs[:-1])
    np.testing.assert_array_equal(np.stack([s.next_obs for s in seen]), episode.obs[1:])
    np.testing.assert_array_equal(np.stack([s.action for s in seen]), episode.action)
