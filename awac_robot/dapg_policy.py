"""DAPG expert weights -> a verified awac-robot ONNX policy: `awac-robot import-policy dapg`.

The DAPG project (Rajeswaran et al. 2018) published its Adroit experts as small tanh MLPs
saved as an .npz of arrays. As an awac-robot ONNX policy such an expert becomes a
demonstrator like any other (`collect --demonstrator policy:FILE.onnx`), which is how a
task without a scripted expert (pen) gets a store of successful demonstrations.

The file holds `in_shift`, `in_scale` (obs_dim,), `w0` (h1, obs_dim), `b0`, `w1` (h2, h1),
`b1`, `w2` (act_dim, h2), `b2`, `out_shift`, `out_scale` (act_dim,) and `log_std`. The
policy is the deterministic one, the clipped mean action:

    x = (obs - in_shift) / (in_scale + 1e-8)
    x = tanh(w0 @ x + b0); x = tanh(w1 @ x + b1)
    action = clip((w2 @ x + b2) * out_scale + out_shift, -1, 1)

`log_std` is the expert's own exploration noise and is left out: `collect --noise` is the
one documented way to perturb any demonstrator. The ONNX file is only written once
onnxruntime agrees with this float64 numpy forward pass on observations the expert itself
reaches in the task (export's verification, against the numpy reference instead of torch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from awac_robot.envs import get_spec, make_env
from awac_robot.export import ActorToExport, ExportReport, check_export_paths, export_actor, rollout_observations
from awac_robot.spec import SpecMismatch, TaskSpec
from awac_robot.train.evaluation import evaluate

WEIGHT_KEYS = ("in_shift", "in_scale", "w0", "b0", "w1", "b1", "w2", "b2", "out_shift", "out_scale", "log_std")


class PolicyImportError(ValueError):
    """A weight file that cannot be imported as asked; the message names the file and the problem."""


@dataclass(frozen=True)
class DapgWeights:
    """The arrays of one DAPG expert, checked against the task it is imported for."""

    path: Path
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: str | Path, spec: TaskSpec) -> DapgWeights:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such weight file: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key], dtype=np.float64) for key in data.files}
        except Exception:  # numpy raises several types for a file that is not an .npz of plain arrays
            raise PolicyImportError(
                f"{path} is not an .npz of numeric arrays, as DAPG weight files are (pickled objects are never loaded)"
            ) from None
        missing = [key for key in WEIGHT_KEYS if key not in arrays]
        if missing:
            raise PolicyImportError(f"{path} lacks the DAPG policy arrays {', '.join(missing)}")
        weights = cls(path, arrays)
        weights._check_shapes(spec)
        return weights

    def _check_shapes(self, spec: TaskSpec) -> None:
        a = self.arrays
        not_matrices = [key for key in ("w0", "w1", "w2") if a[key].ndim != 2]
        if not_matrices:
            raise PolicyImportError(f"{self.path} is not a DAPG policy: {', '.join(not_matrices)} must be matrices")
        hidden1, hidden2 = a["w0"].shape[0], a["w1"].shape[0]
        expected = {
            "in_shift": (spec.obs_dim,),
            "in_scale": (spec.obs_dim,),
            "w0": (hidden1, spec.obs_dim),
            "b0": (hidden1,),
            "w1": (hidden2, hidden1),
            "b1": (hidden2,),
            "w2": (spec.act_dim, hidden2),
            "b2": (spec.act_dim,),
            "out_shift": (spec.act_dim,),
            "out_scale": (spec.act_dim,),
            "log_std": (spec.act_dim,),
        }
        sizes = (a["w0"].shape[-1], a["w2"].shape[0])
        if sizes != (spec.obs_dim, spec.act_dim):
            raise SpecMismatch(
                f"{self.path} maps {sizes[0]} observation numbers to {sizes[1]} actions, task {spec.name!r} needs "
                f"{spec.obs_dim} -> {spec.act_dim}: is it the expert of another task?"
            )
        wrong = [f"{key} is {a[key].shape}, not {shape}" for key, shape in expected.items() if a[key].shape != shape]
        if wrong:
            raise PolicyImportError(f"{self.path} is not a consistent DAPG policy: {'; '.join(wrong)}")
        if not all(np.all(np.isfinite(value)) for value in a.values()):
            raise PolicyImportError(f"{self.path} holds non-finite weights")

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic actions for a batch (N, obs_dim), in float64: the reference the ONNX must match."""
        a = self.arrays
        x = (np.asarray(obs, dtype=np.float64) - a["in_shift"]) / (a["in_scale"] + 1e-8)
        x = np.tanh(x @ a["w0"].T + a["b0"])
        x = np.tanh(x @ a["w1"].T + a["b1"])
        return np.clip((x @ a["w2"].T + a["b2"]) * a["out_scale"] + a["out_shift"], -1.0, 1.0)

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class DapgActor(torch.nn.Module):
    """The same forward pass as a torch module, in float32: what is traced into the ONNX graph."""

    # the buffers `forward` reads (registered from WEIGHT_KEYS below; nn.Module types them as Tensor | Module)
    in_shift: torch.Tensor
    in_scale: torch.Tensor
    w0: torch.Tensor
    b0: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    out_shift: torch.Tensor
    out_scale: torch.Tensor

    def __init__(self, weights: DapgWeights) -> None:
        super().__init__()
        for key in WEIGHT_KEYS:
            self.register_buffer(key, torch.as_tensor(weights.arrays[key], dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs - self.in_shift) / (self.in_scale + 1e-8)
        x = torch.tanh(x @ self.w0.T + self.b0)
        x = torch.tanh(x @ self.w1.T + self.b1)
        return torch.clamp((x @ self.w2.T + self.b2) * self.out_scale + self.out_shift, -1.0, 1.0)


@dataclass(frozen=True)
class PolicyImportReport:
    export: ExportReport
    success_rate: float | None
    eval_episodes: int


def dapg_actor(weights: str | Path, task: str) -> tuple[DapgWeights, ActorToExport]:
    """The expert in `weights` as an actor ready for export (shapes checked against `task`)."""
    spec = get_spec(task)
    loaded = DapgWeights.load(weights, spec)
    origin = {"format": "dapg", "weights": loaded.path.name, "sha256": loaded.sha256()}
    actor = ActorToExport(DapgActor(loaded).eval(), spec, f"dapg:{loaded.path.stem}", 0, origin=origin)
    return loaded, actor


def import_dapg_policy(
    weights: str | Path, task: str, out: str | Path, verify: int = 2000, eval_episodes: int = 20
) -> PolicyImportReport:
    """Write the DAPG expert in `weights` as a verified ONNX policy for `task` at `out`, with its card.

    `eval_episodes` deterministic episodes (evaluation seeds) measure its success for the card
    first; 0 skips that.
    """
    check_export_paths(Path(out))  # before the evaluation and rollouts: a refused path is said first
    loaded, actor = dapg_actor(weights, task)
    success = None
    if eval_episodes > 0:
        env = make_env(actor.spec.name)
        result = evaluate(actor.policy, env, eval_episodes)
        env.close()
        success = result["success_rate"]
        actor.eval.update(success_rate=success, episodes=eval_episodes)
    observations = rollout_observations(actor, verify)
    report = export_actor(
        actor, Path(out), observations, "the expert's rollouts", reference=loaded.actions, reference_name="numpy"
    )
    return PolicyImportReport(report, success, eval_episodes)
