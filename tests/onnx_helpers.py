"""Policies for the export and controller tests: small honest actors and adversarial ones, as real ONNX files."""

from __future__ import annotations

from pathlib import Path

import torch

from awac_robot.export import ActorToExport, policy_metadata, write_onnx
from awac_robot.spec import TaskSpec


def small_actor(spec: TaskSpec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(spec.obs_dim, 32), torch.nn.ReLU(), torch.nn.Linear(32, spec.act_dim), torch.nn.Tanh()
    ).eval()


class AdversarialPolicy(torch.nn.Module):
    """Per step and dimension, pseudo-randomly from the observation: NaN, +-inf, +-1e6 or a +-1 jump.

    Every fourth dimension's output is NaN/inf on some steps, so whole steps are non-finite;
    the others jump between +-1e6 and +-1 so bounds and the rate limit are hit constantly.
    """

    def __init__(self, spec: TaskSpec, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Parameter(torch.randn(spec.obs_dim, spec.act_dim, generator=generator) * 1e3)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        phase = torch.sin(obs @ self.mix)
        jump = torch.sign(phase)
        huge = torch.where(phase > 0.6, jump * 1e6, jump)
        bad = torch.where(phase > 0.0, torch.full_like(phase, float("nan")), torch.full_like(phase, float("inf")))
        columns = torch.arange(phase.shape[-1]) % 4 == 0
        return torch.where(columns & (phase.abs() > 0.98), bad, huge)


def write_policy(module: torch.nn.Module, spec: TaskSpec, path: Path, run_id: str = "test") -> Path:
    """An ONNX policy with awac-robot metadata, skipping export's verification (adversarial policies fail it)."""
    write_onnx(module, spec, path, policy_metadata(ActorToExport(module, spec, run_id, 1)))
    return path
