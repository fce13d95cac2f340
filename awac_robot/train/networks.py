"""The actor and the critic ensemble AWAC trains, shaped for speed on a small CPU.

The critics are one module holding every member's weights stacked along a leading
"member" axis, so a forward pass for the whole ensemble is one batched matmul per layer
(torch.baddbmm) instead of one small matmul per network: on two cores the per-call
overhead of many small matmuls costs more than the arithmetic. The one-column output
layer is the exception (see `CriticEnsemble.from_projection`).

Both networks see observations normalised by statistics of the offline data, held as
buffers so they travel with the weights into checkpoints and the exported policy.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2.0 * math.pi)


class ObsNormalizer(nn.Module):
    """Fixed affine map of observations; identity until `fit` is called on the offline data."""

    mean: torch.Tensor  # buffers, registered below (nn.Module types attribute lookups as Tensor | Module)
    inv_std: torch.Tensor

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("inv_std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit(self, obs: torch.Tensor, min_std: float = 1e-2) -> None:
        # A floor on the std keeps constant entries (a flag that never flips in the demos)
        # from blowing up when they finally change online.
        self.mean.copy_(obs.mean(0))
        self.inv_std.copy_(1.0 / obs.std(0).clamp_min(min_std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) * self.inv_std


class GaussianActor(nn.Module):
    """Gaussian policy: tanh-bounded mean from an MLP, one learned log-std per action dimension.

    The log-std does not depend on the state (as in the AWAC paper's hand-task code), which
    keeps the weighted likelihood from shrinking the variance only where advantages are high.
    `forward` is the deterministic policy that gets exported.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        log_std_init: float,
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        self.normalizer = ObsNormalizer(obs_dim)
        sizes = (obs_dim, *hidden, act_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.normalizer(obs)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return torch.tanh(self.layers[-1](x))

    def clamped_log_std(self) -> torch.Tensor:
        return self.log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-density of `action` under N(mean, exp(log_std)^2), summed over action dimensions."""
        log_std = self.clamped_log_std()
        z = (action - mean) * torch.exp(-log_std)
        return -0.5 * (z * z).sum(-1) - log_std.sum() - 0.5 * LOG_2PI * mean.shape[-1]

    def sample(
        self, mean: torch.Tensor, generator: torch.Generator | None = None, noise_scale: float = 1.0
    ) -> torch.Tensor:
        """An action around `mean` with the learned std times `noise_scale`, clipped to the action bounds."""
        return self.perturb(mean, torch.randn(mean.shape, generator=generator, dtype=mean.dtype), noise_scale)

    def perturb(self, mean: torch.Tensor, noise: torch.Tensor, noise_scale: float = 1.0) -> torch.Tensor:
        """`sample` with its standard normal noise given."""
        return (mean + noise * (self.clamped_log_std().exp() * noise_scale)).clamp(-1.0, 1.0)


class CriticEnsemble(nn.Module):
    """`members` Q(s, a) MLPs evaluated together; forward returns Q values of shape (members, batch).

    The first layer is split into an observation part and an action part so the
    observation projection can be computed once and shared by several action sets.
    Every weight has a leading member axis: `w_obs` is (members, obs_dim, hidden0).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], members: int, layer_norm: bool) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the critic needs at least one hidden layer")
        self.members = members
        self.layer_norm = layer_norm
        self.normalizer = ObsNormalizer(obs_dim)
        h0 = hidden[0]
        self.w_obs = nn.Parameter(torch.empty(members, obs_dim, h0))
        self.w_act = nn.Parameter(torch.empty(members, act_dim, h0))
        self.b0 = nn.Parameter(torch.empty(members, 1, h0))
        sizes = (*hidden, 1)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(members, a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(members, 1, b)) for b in sizes[1:])
        self.reset_parameters(obs_dim + act_dim)

    @torch.no_grad()
    def reset_parameters(self, in_dim: int) -> None:
        # The same uniform(+-1/sqrt(fan_in)) init nn.Linear uses, member by member.
        bound = 1.0 / math.sqrt(in_dim)
        for p in (self.w_obs, self.w_act, self.b0):
            p.uniform_(-bound, bound)
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])
            w.uniform_(-bound, bound)
            b.uniform_(-bound, bound)

    def project_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """First-layer contribution of the observations (bias included), shape (members, batch, hidden0)."""
        x = self.normalizer(obs)
        return torch.baddbmm(self.b0, x.expand(self.members, *x.shape), self.w_obs)

    def from_projection(self, obs_proj: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        # Activations stay contiguous (members, batch, hidden): no transposes, so no hidden copies.
        x = torch.baddbmm(obs_proj, action.expand(self.members, *action.shape), self.w_act)
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = torch.baddbmm(b, self._activation(x), w)
        # The output layer has one column: as a product and row sum it is the same dot product, but a
        # batched matmul with a single output column runs several times slower here (docs/benchmarks.md).
        w_out: torch.Tensor = self.weights[-1]  # a ParameterList item types as Any
        b_out: torch.Tensor = self.biases[-1]
        return (self._activation(x) * w_out.transpose(1, 2)).sum(-1) + b_out.squeeze(-1)

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.layer_norm(x, x.shape[-1:]) if self.layer_norm else x)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.from_projection(self.project_obs(obs), action)
