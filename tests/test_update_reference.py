"""The optimised update computes what the AWAC maths says: checked against a plain re-implementation.

The reference below is written for reading, not speed: one MLP per critic member with
F.linear, torch.distributions for the log-likelihood, torch's for-loop Adam, Polyak averages
as explicit lerps. Both run on the same batches of a real door episode and the same noise
draws; the losses, the logged statistics and every weight after a few updates must agree to
float tolerance.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from train_helpers import one_thread  # noqa: F401 -- the fixture, used by pytestmark

from awac_robot.envs import get_spec, make_env
from awac_robot.rollout import FunctionActor, rollout
from awac_robot.train.awac import AWACLearner
from awac_robot.train.build import build_learner
from awac_robot.train.config import TrainConfig
from awac_robot.train.replay import Replay

CONFIG = TrainConfig(
    actor_hidden=(32, 32),
    critic_hidden=(32, 24),
    critic_members=2,
    batch_size=64,
    threads=1,
    lr=1e-3,
    actor_weight_decay=1e-2,
    awr_lambda=0.3,
    reward_scale=2.0,
    reward_offset=0.5,
    policy_average=0.25,
    target_tau=0.1,
)
UPDATES = 3
RTOL, ATOL = 1e-5, 1e-6
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def door_replay() -> Replay:
    """Transitions of one real door episode (noisy zero actions), terminal set on a few rows to test the mask."""
    env = make_env("door")
    act_dim = env.config.act_dim
    episode = rollout(env, FunctionActor(lambda obs: np.zeros(act_dim, dtype=np.float32)), 5, noise=0.5)
    terminal = np.zeros(episode.length)
    terminal[::7] = 1.0
    data = SimpleNamespace(
        obs=episode.obs[:-1], action=episode.action, reward=episode.reward, next_obs=episode.obs[1:], terminal=terminal
    )
    spec = get_spec("door")
    return Replay.from_offline(spec.obs_dim, spec.act_dim, data, capacity=episode.length, seed=0)


def actor_mean(actor: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
    x = (obs - actor.normalizer.mean) * actor.normalizer.inv_std
    layers = list(actor.layers)
    for layer in layers[:-1]:
        x = torch.relu(F.linear(x, layer.weight, layer.bias))
    return torch.tanh(F.linear(x, layers[-1].weight, layers[-1].bias))


def critic_member(critic: torch.nn.Module, m: int, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Q_m(s, a) of member m as an ordinary MLP on the concatenated input."""
    x = torch.cat([(obs - critic.normalizer.mean) * critic.normalizer.inv_std, action], 1)
    x = x @ torch.cat([critic.w_obs[m], critic.w_act[m]]) + critic.b0[m, 0]
    for w, b in zip(critic.weights, critic.biases, strict=True):
        if critic.layer_norm:
            x = F.layer_norm(x, x.shape[-1:])
        x = torch.relu(x) @ w[m] + b[m, 0]
    return x[:, 0]


def min_over_members(critic: torch.nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    qs = [critic_member(critic, m, obs, action) for m in range(critic.members)]
    return torch.stack(qs).min(0).values


class Reference:
    """The AWAC update written plainly, on its own copies of the learner's starting networks."""

    def __init__(self, learner: AWACLearner, config: TrainConfig) -> None:
        self.cfg = config
        self.actor = copy.deepcopy(learner.actor)
        self.critic = copy.deepcopy(learner.critic)
        self.target = copy.deepcopy(learner.target_critic)
        self.policy = self.actor if config.policy_average is None else copy.deepcopy(learner.policy)
        self.generator = torch.Generator()
        self.generator.set_state(learner.generator.get_state())
        groups = [{"params": list(self.actor.parameters()), "weight_decay": config.actor_weight_decay}]
        if config.algo == "awac":
            groups.append({"params": list(self.critic.parameters()), "weight_decay": 0.0})
        self.optimizer = torch.optim.Adam(groups, lr=config.lr, foreach=False, fused=False)

    def std(self) -> torch.Tensor:
        return self.actor.log_std.clamp(self.cfg.log_std_min, self.cfg.log_std_max).exp()

    def policy_sample(self, mean: torch.Tensor) -> torch.Tensor:
        return (mean + torch.randn(mean.shape, generator=self.generator) * self.std()).clamp(-1.0, 1.0)

    def update(self, batch) -> dict[str, float]:  # noqa: ANN001 -- a replay Batch
        cfg = self.cfg
        mean = actor_mean(self.actor, batch.obs)
        log_prob = torch.distributions.Normal(mean, self.std()).log_prob(batch.action).sum(-1)
        # imitate_online: solved -- the rows left out of imitation count for nothing in the actor's loss
        imitate = batch.imitate.float() if cfg.imitate_online == "solved" else torch.ones_like(log_prob)
        if cfg.algo == "bc":
            actor_loss = -(log_prob * imitate).sum() / imitate.sum()
            loss, stats = actor_loss, {}
        else:
            with torch.no_grad():
                next_action = self.policy_sample(actor_mean(self.actor, batch.next_obs))
                next_q = min_over_members(self.target, batch.next_obs, next_action)
                reward = batch.reward * cfg.reward_scale + cfg.reward_offset
                target = reward + cfg.discount * (1.0 - batch.terminal) * next_q
            members = range(cfg.critic_members)
            qs = torch.stack([critic_member(self.critic, m, batch.obs, batch.action) for m in members])
            critic_loss = sum(((q - target) ** 2).mean() for q in qs)
            td_error = ((qs.detach() - target) ** 2).mean().sqrt()  # every member's every row alike
            with torch.no_grad():
                sampled = self.policy_sample(mean)  # drawn either way: the learner's generator advances alike
                value = min_over_members(self.critic, batch.obs, sampled if cfg.value_action == "sample" else mean)
                advantage = qs.min(0).values - value
                if cfg.advantage_scale == "ess":
                    scaled = advantage / (advantage.std() * ess_temperature(advantage, cfg.target_ess, imitate > 0))
                elif cfg.advantage_scale == "td_error":
                    scaled = advantage / max(cfg.awr_lambda, td_error.item())
                else:
                    spread = advantage.std().clamp_min(1e-6) if cfg.advantage_scale == "batch_std" else 1.0
                    scaled = advantage / spread / cfg.awr_lambda
                exp = torch.exp(scaled - scaled[imitate > 0].max()) * imitate  # exp(A / lambda) up to a constant
                weights = len(advantage) * exp / exp.sum()
            actor_loss = -(log_prob * weights).mean()
            loss = actor_loss + critic_loss
            stats = {
                "critic_loss": critic_loss.item(),
                "q_mean": qs.mean().item(),
                "q_min": qs.min().item(),
                "q_max": qs.max().item(),
                "target_mean": target.mean().item(),
                "td_error": td_error.item(),
                "adv_mean": advantage.mean().item(),
                "adv_std": advantage.std().item(),
                "weight_max": weights.max().item(),
                "weight_ess": (weights.sum() ** 2 / (weights**2).sum()).item(),
            }
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for t, c in zip(self.target.parameters(), self.critic.parameters(), strict=True):
                t.add_(cfg.target_tau * (c - t))
            if cfg.policy_average is not None:
                for p, a in zip(self.policy.parameters(), self.actor.parameters(), strict=True):
                    p.add_(cfg.policy_average * (a - p))
        stats["actor_loss"] = actor_loss.item()
        stats["log_prob"] = log_prob.mean().item()
        stats["log_std"] = self.actor.log_std.clamp(cfg.log_std_min, cfg.log_std_max).mean().item()
        if cfg.imitate_online == "solved":
            stats["imitated"] = imitate.mean().item()
        return stats


def ess_temperature(advantage: torch.Tensor, target: float, imitate: torch.Tensor) -> float:
    """The smallest temperature (in units of std(A)) of the grid 10^(-2 + k / 16) whose weights hold the ESS.

    std(A) is over the whole batch; the softmax and the ESS are over the imitated rows.
    """
    z = advantage[imitate] / advantage.std()
    for k in range(65):
        temperature = 10.0 ** (-2 + k / 16)
        p = torch.softmax(z / temperature, 0)
        if 1.0 / p.square().sum().item() >= target * len(z):
            return temperature
    return 100.0


def assert_same_networks(learner: AWACLearner, reference: Reference) -> None:
    pairs = [
        (learner.actor, reference.actor),
        (learner.critic, reference.critic),
        (learner.target_critic, reference.target),
        (learner.policy, reference.policy),
    ]
    for ours, theirs in pairs:
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        CONFIG.replace(critic_layer_norm=False, policy_average=None, critic_members=3),
        CONFIG.replace(advantage_scale="batch_std"),
        CONFIG.replace(advantage_scale="ess"),
        CONFIG.replace(advantage_scale="td_error", awr_lambda=1e-3),  # the critics' error sets the temperature
        CONFIG.replace(algo="bc"),
        CONFIG.replace(compile=True),
        CONFIG.replace(imitate_online="all"),
        CONFIG.replace(algo="bc", imitate_online="all"),
        CONFIG.replace(value_action="mean"),
    ],
    ids=[
        "awac",
        "awac-plain-critics",
        "awac-batch-std",
        "awac-ess",
        "awac-td-error",
        "bc",
        "awac-compiled",
        "awac-all",
        "bc-all",
        "awac-value-at-mean",
    ],
)
def test_update_matches_the_plain_reference(door_replay: Replay, config: TrainConfig) -> None:
    torch.manual_seed(0)
    learner = build_learner(config, get_spec("door"), door_replay.offline_obs())
    reference = Reference(learner, config)
    for _ in range(UPDATES):
        batch = door_replay.sample(config.batch_size)
        # The episode's rows are offline, all imitated: leave a third out (imitate_online: all must ignore it).
        batch.imitate = torch.arange(config.batch_size) % 3 != 0
        got = {k: v.item() for k, v in learner.update(batch).items()}
        want = reference.update(batch)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    assert_same_networks(learner, reference)
    assert learner.updates == UPDATES
