"""Networks and learner from a config and a task spec -- shared by training, resuming and loading a policy."""

from __future__ import annotations

import torch

from awac_robot.spec import TaskSpec
from awac_robot.train.awac import AWACLearner
from awac_robot.train.config import TrainConfig
from awac_robot.train.networks import CriticEnsemble, GaussianActor


def build_actor(config: TrainConfig, spec: TaskSpec) -> GaussianActor:
    return GaussianActor(
        spec.obs_dim,
        spec.act_dim,
        config.actor_hidden,
        config.log_std_init,
        config.log_std_min,
        config.log_std_max,
    )


def build_learner(config: TrainConfig, spec: TaskSpec, offline_obs: torch.Tensor | None = None) -> AWACLearner:
    """Fresh networks; `offline_obs` (when given) sets the observation normalisation of actor and critics."""
    actor = build_actor(config, spec)
    critic = CriticEnsemble(
        spec.obs_dim, spec.act_dim, config.critic_hidden, config.critic_members, config.critic_layer_norm
    )
    if offline_obs is not None and offline_obs.shape[0] > 1:
        actor.normalizer.fit(offline_obs)
        critic.normalizer.fit(offline_obs)
    return AWACLearner(actor, critic, config.update_config(), seed=config.seed + 1, compile=config.compile)
