"""One AWAC gradient update (Nair et al. 2020), readable top to bottom.

Critic: ordinary off-policy Bellman backup, y = r + gamma * (1 - terminal) * min_i Q'_i(s', a'),
a' ~ pi(.|s'), with soft-updated target critics. Actor: advantage-weighted maximum
likelihood of the *replay* actions, loss = -E[log pi(a|s) * w], with A = min_i Q_i(s, a) -
min_i Q_i(s, a_pi) and w = batch_size * softmax(A / lambda) over the batch -- a softmax
cannot overflow however large A / lambda gets, unlike a raw exp(A / lambda). Beyond the paper,
the softmax leaves out the online rows of episodes that were not solved (`imitate_online:
solved`): with sparse rewards their advantages barely differ from a demonstration's, so
imitating them copies the actor's failed exploration; the critic still learns from them. With
`target_floor: return` each target is floored at its row's discounted return to the end of its
episode (train/returns.py), once that episode has ended. With `n_step` > 1 a row's reward sums the
next k <= n rewards of its episode and the target bootstraps at gamma^k (train/replay.py). With
`target_clip: reward_range` each target is clipped to the discounted values the replay's rewards can
add up to, [min(r, 0), max(r, 0)] / (1 - gamma): no return of those rewards lies outside it.
With `value_action: mean` the baseline V(s) is the critics at the policy's mean action instead of at one
sample of it: a single sample's noise moves every row's advantage by as much as the advantages
differ under sparse rewards, and the softmax then picks rows by that noise.

The actor loss only touches actor weights (the weights w are constants) and the critic
loss only critic weights (targets are computed without gradients), so both losses are
summed and stepped by a single fused Adam: one backward, one optimizer call.
`algo="bc"` is the baseline on the same networks: w = 1 and no critic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from awac_robot.train.networks import CriticEnsemble, GaussianActor

ALGOS = ("awac", "bc")


@dataclass(frozen=True)
class UpdateConfig:
    """The hyperparameters of one update; see `awac_robot.train.config.TrainConfig` for their meaning."""

    algo: str
    discount: float
    target_tau: float
    awr_lambda: float
    lr: float
    actor_weight_decay: float
    reward_scale: float
    reward_offset: float
    #: Polyak rate of the averaged actor that is evaluated and exported, or None to use the actor itself
    policy_average: float | None = None
    #: "none": A / lambda as in the paper; "batch_std": A / (lambda * std(A) over the batch); "ess": lambda per
    #: batch, the sharpest that keeps the weights' effective sample size at `target_ess` of the batch;
    #: "ess_floor": lambda, or the "ess" temperature in a batch where lambda's ESS is below `target_ess`;
    #: "td_error": A / max(lambda, RMS Bellman error of the batch's critics)
    advantage_scale: str = "none"
    target_ess: float = 0.25
    #: "solved": the actor imitates offline rows and the rows of solved online episodes only (`Batch.imitate`);
    #: "all": every replay row (the paper). The critic learns from every row either way
    imitate_online: str = "solved"
    #: "return": each Bellman target is at least its row's discounted episode return (`Batch.floor`); "none": not
    target_floor: str = "none"
    #: the most env steps a Bellman target sums before it bootstraps (`Batch.steps` per row); 1: the paper's
    n_step: int = 1
    #: "reward_range": each Bellman target is clipped to the values `Batch.reward_range` can reach; "none": not
    target_clip: str = "none"
    #: "sample": V(s) = min_i Q_i(s, a_pi) at one policy sample (the paper's); "mean": at the policy's mean action
    value_action: str = "sample"


@dataclass
class Batch:
    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    #: per row, whether the actor may imitate it (offline, or from a solved online episode); None: every row
    imitate: torch.Tensor | None = None
    #: per row, the discounted return of the rest of its episode (-inf while the episode runs); None: no floors
    floor: torch.Tensor | None = None
    #: per row, how many env steps `reward` sums before `next_obs` (`n_step`); None: one each
    steps: torch.Tensor | None = None
    #: the lowest and highest one-step reward (as stored) of the replay the batch came from, shape (2,); None: unknown
    reward_range: torch.Tensor | None = None


ADVANTAGE_SCALES = ("none", "batch_std", "ess", "ess_floor", "td_error")
IMITATE_ONLINE = ("all", "solved")
TARGET_FLOORS = ("none", "return")
TARGET_CLIPS = ("none", "reward_range")
VALUE_ACTIONS = ("sample", "mean")
#: The temperatures "ess" chooses from, in units of std(A): log-spaced, each 15% above the one before.
ESS_TEMPERATURES = torch.logspace(-2, 2, 65)


def advantage_weights(
    advantage: torch.Tensor,
    awr_lambda: float,
    scale: str = "none",
    target_ess: float = 0.25,
    imitate: torch.Tensor | None = None,
    td_error: torch.Tensor | None = None,
) -> torch.Tensor:
    """batch_size * softmax(A / lambda): exp(A / lambda) normalised over the batch, mean 1, never overflowing.

    With `scale="batch_std"` the advantages are first divided by their standard deviation over
    the batch, so lambda no longer depends on the scale of Q (reward scale, horizon, how far Q
    has propagated): the same lambda gives the same spread of weights on any task. A batch of
    equal advantages gets equal weights either way.

    With `scale="ess"` lambda is chosen per batch: the sharpest of `ESS_TEMPERATURES` (times
    std(A)) whose weights keep an effective sample size of at least `target_ess` of the batch.
    A fixed lambda gives near-uniform weights where advantages are small (door from 25 human
    demos: ESS 150-240 of 256, nearly BC, which copies failed exploration online) and weights on
    a handful of rows where they are heavy-tailed (door-paper under "batch_std": ESS 3-5);
    holding the ESS fixes how many rows each update imitates, whatever the scale or shape of A.

    With `scale="td_error"` the temperature is max(lambda, `td_error`), the root mean square
    Bellman error of the critics on this batch: advantages that differ by less than the critics'
    own error say nothing about which action is better, so they should not pick the rows the actor
    copies. Where the critics fit their targets (error below lambda) this is the paper's A / lambda;
    where they do not (targets floored at lucky episodes' returns, a critic that has not caught up
    with new data) the weights flatten towards BC by as much as the critics are off.

    `imitate` (a boolean per row) leaves rows out of the softmax: they weigh 0 and the others
    still sum to batch_size, so the loss stays a weighted mean of the rows that are imitated.
    With no row imitated every weight is 0. std(A) is taken over the whole batch either way.
    """
    n = advantage.shape[0]
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"advantage scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if scale == "none":
        return _softmax(advantage / awr_lambda, imitate) * n
    if scale == "td_error":
        if td_error is None:
            raise ValueError('advantage scale "td_error" needs the batch\'s td_error')
        return _softmax(advantage / td_error.clamp_min(awr_lambda), imitate) * n
    z = advantage / advantage.std().clamp_min(1e-6)
    if scale == "batch_std":
        return _softmax(z / awr_lambda, imitate) * n
    rows = n if imitate is None else imitate.sum()
    p = _softmax(z[None, :] / ESS_TEMPERATURES.to(z)[:, None], imitate)  # one row per temperature
    enough = _ess(p) >= target_ess * rows  # ESS grows with the temperature
    enough[-1] = True  # the flattest (std(A) * 100): an ESS close to n, taken when no sharper one holds
    held = p[torch.argmax(enough.int())]  # argmax: the first (sharpest) temperature that holds it
    if scale == "ess":
        return held * n
    plain = _softmax(advantage / awr_lambda, imitate)  # "ess_floor": lambda, unless it imitates too few rows
    return torch.where(_ess(plain) >= target_ess * rows, plain, held) * n


def _ess(p: torch.Tensor) -> torch.Tensor:
    """The effective sample size of weights summing to 1 along the last axis: 1 / sum(p^2)."""
    return 1.0 / p.square().sum(-1).clamp_min(torch.finfo(p.dtype).tiny)


def _softmax(logits: torch.Tensor, imitate: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis, over the `imitate` rows only when given (zeros where none is)."""
    if imitate is None:
        return torch.softmax(logits, -1)
    # Shift by the largest imitated logit (by any logit when none is: every weight is then 0 anyway).
    shift = torch.where(imitate, logits, logits.amin(-1, keepdim=True)).amax(-1, keepdim=True)
    e = torch.where(imitate, torch.exp(logits - shift), 0.0)
    return e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


class NonFiniteError(RuntimeError):
    """A loss became NaN or infinite; the message names the update."""


class AWACLearner:
    """Owns the networks, the target critics and the optimizer; `update` does one gradient step."""

    def __init__(
        self, actor: GaussianActor, critic: CriticEnsemble, config: UpdateConfig, seed: int = 0, compile: bool = False
    ) -> None:
        if config.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {config.algo!r}")
        if config.advantage_scale not in ADVANTAGE_SCALES:
            raise ValueError(f"advantage_scale must be one of {ADVANTAGE_SCALES}, got {config.advantage_scale!r}")
        if config.imitate_online not in IMITATE_ONLINE:
            raise ValueError(f"imitate_online must be one of {IMITATE_ONLINE}, got {config.imitate_online!r}")
        if config.target_floor not in TARGET_FLOORS:
            raise ValueError(f"target_floor must be one of {TARGET_FLOORS}, got {config.target_floor!r}")
        if config.n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {config.n_step}")
        if config.target_clip not in TARGET_CLIPS:
            raise ValueError(f"target_clip must be one of {TARGET_CLIPS}, got {config.target_clip!r}")
        if config.target_clip != "none" and config.discount >= 1:
            raise ValueError(f"target_clip {config.target_clip!r} needs discount < 1, got {config.discount}")
        if config.value_action not in VALUE_ACTIONS:
            raise ValueError(f"value_action must be one of {VALUE_ACTIONS}, got {config.value_action!r}")
        self.config = config
        self.actor = actor
        self.critic = critic
        self.target_critic = copy.deepcopy(critic).requires_grad_(False)
        groups = [{"params": list(actor.parameters()), "weight_decay": config.actor_weight_decay}]
        if config.algo == "awac":
            groups.append({"params": list(critic.parameters()), "weight_decay": 0.0})
        # Plain Adam (L2 added to the gradient) as in the paper's code; fused = one kernel for every tensor of a step.
        self.optimizer = torch.optim.Adam(groups, lr=config.lr, fused=True)
        self._critic_params: list[torch.Tensor] = list(critic.parameters())
        self._target_params: list[torch.Tensor] = list(self.target_critic.parameters())
        # The policy that is evaluated and deployed: the actor itself, or a slow average of it that smooths
        # the update-to-update jitter of heavily weighted batches.
        self.policy = actor if config.policy_average is None else copy.deepcopy(actor).requires_grad_(False)
        self._actor_params: list[torch.Tensor] = list(actor.parameters())
        self._policy_params: list[torch.Tensor] = list(self.policy.parameters())
        self.generator = torch.Generator().manual_seed(seed)  # the policy samples inside the update
        self.updates = 0
        # The same losses, with torch.compile fusing their elementwise work into few kernels (TrainConfig.compile).
        self._losses = torch.compile(self.losses, fullgraph=True, dynamic=False) if compile else self.losses

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns detached scalar statistics for logging."""
        # The policy noise is drawn here, in the order the losses use it (a' at s' first, then a_pi at s).
        noise = (self._noise(batch.action), self._noise(batch.action)) if self.config.algo == "awac" else None
        loss, stats = self._losses(batch, noise)
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"non-finite loss at update {self.updates + 1} "
                f"(actor {stats['actor_loss'].item():.4g}, total {loss.item():.4g})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            if self.config.algo == "awac":
                torch._foreach_lerp_(self._target_params, self._critic_params, self.config.target_tau)
            if self.config.policy_average is not None:
                torch._foreach_lerp_(self._policy_params, self._actor_params, self.config.policy_average)
        self.updates += 1
        with torch.no_grad():
            return {**stats, "log_std": self.actor.clamped_log_std().mean()}  # after the step, as it is now

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype)

    def losses(
        self, batch: Batch, noise: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss of one update and its statistics; `noise`: the policy's standard normal draws (AWAC)."""
        cfg, actor, critic = self.config, self.actor, self.critic
        mean = actor(batch.obs)
        log_prob = actor.log_prob(mean, batch.action)
        imitate = batch.imitate if cfg.imitate_online == "solved" else None
        if noise is None:  # behaviour cloning
            if imitate is None:
                actor_loss = -log_prob.mean()
            else:
                actor_loss = -(log_prob * _softmax(torch.zeros_like(log_prob), imitate)).sum()
            return actor_loss, self._actor_stats(actor_loss, log_prob, imitate)
        next_noise, pi_noise = noise

        with torch.no_grad():
            # Bellman target from the target critics at a' ~ pi(.|s').
            next_action = actor.perturb(actor(batch.next_obs), next_noise)
            next_q = self.target_critic(batch.next_obs, next_action).amin(0)
            reward, bootstrap = self._reward_and_bootstrap(batch)
            target = reward + bootstrap * (1.0 - batch.terminal) * next_q
            floored = None
            if cfg.target_floor == "return" and batch.floor is not None:
                floored = (batch.floor > target).float().mean()  # the share of targets the floor lifted
                target = torch.maximum(target, batch.floor)
            clipped = None
            if cfg.target_clip == "reward_range" and batch.reward_range is not None:
                low, high = self._value_range(batch.reward_range)
                clipped = ((target < low) | (target > high)).float().mean()  # the share of targets the clip moved
                target = target.clamp(low, high)

        obs_proj = critic.project_obs(batch.obs)
        q = critic.from_projection(obs_proj, batch.action)  # (members, batch)
        critic_loss = ((q - target) ** 2).mean(1).sum()

        with torch.no_grad():
            # V(s) from the policy: the critics at a sampled policy action (or its mean), sharing the obs projection.
            # The noise is drawn either way, so both settings consume the generator alike.
            spread = 1.0 if cfg.value_action == "sample" else 0.0
            value_action = actor.perturb(mean.detach(), pi_noise, noise_scale=spread)
            value = critic.from_projection(obs_proj.detach(), value_action).amin(0)
            q = q.detach()
            td_error = (critic_loss.detach() / q.shape[0]).sqrt()  # RMS over members and rows
            advantage = q.amin(0) - value
            weights = advantage_weights(
                advantage, cfg.awr_lambda, cfg.advantage_scale, cfg.target_ess, imitate, td_error
            )

        actor_loss = -(log_prob * weights).mean()
        with torch.no_grad():
            q_min, q_max = torch.aminmax(q)
            adv_std, adv_mean = torch.std_mean(advantage)
            stats = dict(
                critic_loss=critic_loss.detach(),
                q_mean=q.mean(),
                q_min=q_min,
                q_max=q_max,
                target_mean=target.mean(),
                td_error=td_error,
                adv_mean=adv_mean,
                adv_std=adv_std,
                weight_max=weights.max(),
                weight_ess=weights.sum().square() / weights.dot(weights).clamp_min(torch.finfo(weights.dtype).tiny),
            )
            if floored is not None:
                stats["floored"] = floored
            if clipped is not None:
                stats["clipped"] = clipped
        return actor_loss + critic_loss, {**stats, **self._actor_stats(actor_loss, log_prob, imitate)}

    def _reward_and_bootstrap(self, batch: Batch) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The critic's reward of each row and the discount its bootstrap gets: gamma^k after k summed steps.

        The scale and offset apply per env step, so k steps summed as stored earn the offset
        k times, discounted: offset * (1 + gamma + ... + gamma^(k-1)).
        """
        cfg = self.config
        if cfg.n_step == 1 or batch.steps is None:
            return batch.reward * cfg.reward_scale + cfg.reward_offset, cfg.discount
        bootstrap = torch.pow(cfg.discount, batch.steps)
        reach = batch.steps if cfg.discount == 1 else (1.0 - bootstrap) / (1.0 - cfg.discount)
        return batch.reward * cfg.reward_scale + cfg.reward_offset * reach, bootstrap

    def _value_range(self, reward_range: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lowest and highest discounted return of per-step rewards in `reward_range`, after scale and offset.

        An episode may end (a terminal) at any step, so the sum can stop early: 0 is inside the range
        whatever the rewards' signs, e.g. [-1 / (1 - gamma), 0] for the sparse -1/0 reward.
        """
        cfg = self.config
        per_step = reward_range * cfg.reward_scale + cfg.reward_offset  # scale > 0 keeps the order
        horizon = 1.0 / (1.0 - cfg.discount)
        return per_step[0].clamp_max(0.0) * horizon, per_step[1].clamp_min(0.0) * horizon

    def _actor_stats(
        self, actor_loss: torch.Tensor, log_prob: torch.Tensor, imitate: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        stats = dict(actor_loss=actor_loss.detach(), log_prob=log_prob.detach().mean())
        if imitate is not None:
            stats["imitated"] = imitate.float().mean()  # the share of the batch the actor was fitted to
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.optimizer_params())

    def optimizer_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]
