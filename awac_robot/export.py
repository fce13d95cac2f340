"""Checkpoint -> ONNX policy + policy card, verified against torch before it is allowed to exist.

The exported graph is the trainer's deterministic policy (the averaged actor by default) with
its observation normalisation, so the robot side needs nothing but onnxruntime. Export writes
to a temporary file and only renames it to the requested path once onnxruntime agrees with torch on at least
`min_verify` observations (max abs difference <= `tolerance`) and the graph itself bounds its
output inside the task's action bounds (`check_output_bounded`): a policy file on disk has
always passed both checks.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml

from awac_robot import __version__
from awac_robot.envs import make_env
from awac_robot.onnx_policy import INPUT_NAME, META_PREFIX, OUTPUT_NAME, OnnxPolicy, PolicyMetadata
from awac_robot.outputs import check_output_file
from awac_robot.rollout import Step, rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import DemoStore
from awac_robot.train.checkpoint import load_actor
from awac_robot.train.evaluation import deterministic_actor

OPSET = 17
TOLERANCE = 1e-5
MIN_VERIFY = 1000


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch actor, or can leave the action bounds; nothing was written."""


@dataclass
class ActorToExport:
    """What export needs from a checkpoint (the trainer's LoadedActor has these fields)."""

    policy: torch.nn.Module
    spec: TaskSpec
    run_id: str
    step: int
    eval: dict[str, Any] = field(default_factory=dict)
    #: where a policy that was not trained here came from (e.g. an imported expert's weight file); on the card
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportReport:
    onnx_path: Path
    card_path: Path
    verified_on: int
    max_abs_diff: float
    obs_source: str


def load_checkpoint(path: Path) -> ActorToExport:
    loaded = load_actor(Path(path))
    return ActorToExport(loaded.policy, loaded.spec, loaded.run_id, loaded.step, dict(loaded.eval))


def store_observations(store: Path, spec: TaskSpec, limit: int = 20_000) -> np.ndarray:
    with DemoStore.open(store) as demo:
        spec.check_matches(demo.spec, f"store {store}")
        obs = demo.load_transitions().obs
    if len(obs) > limit:
        obs = obs[np.random.default_rng(0).choice(len(obs), limit, replace=False)]
    return obs


def rollout_observations(actor: ActorToExport, count: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Observations the policy itself reaches in the real env (with action noise, to cover more states).

    Episode i of the rollouts uses seed `seed + i` (the shared rollout rule).
    """
    env = make_env(actor.spec.name)
    policy = deterministic_actor(actor.policy)
    rows: list[np.ndarray] = []

    def enough(step: Step) -> bool:
        return len(rows) + step.index + 1 >= count

    try:
        episode = 0
        while len(rows) < count:
            rows.extend(rollout(env, policy, seed + episode, noise=noise, on_step=enough).obs[:-1])
            episode += 1
    finally:
        env.close()
    return np.stack(rows).astype(np.float32)


def export_actor(
    actor: ActorToExport,
    out: Path,
    verify_obs: np.ndarray,
    obs_source: str,
    tolerance: float = TOLERANCE,
    min_verify: int = MIN_VERIFY,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    reference_name: str = "torch",
    force: bool = False,
) -> ExportReport:
    """Write `actor` as ONNX to `out` once onnxruntime agrees with `reference` (default: the torch actor itself).

    An existing policy or card at those paths is replaced only if awac-robot wrote it, or with `force`.
    """
    spec = actor.spec
    out = Path(out)
    check_export_paths(out, force)
    if verify_obs.ndim != 2 or verify_obs.shape[1] != spec.obs_dim:
        raise ExportError(f"verification observations have shape {verify_obs.shape}, task needs (N, {spec.obs_dim})")
    if len(verify_obs) < min_verify:
        raise ExportError(f"only {len(verify_obs)} observations to verify on, export needs at least {min_verify}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    policy = actor.policy.eval()
    try:
        write_onnx(policy, spec, tmp, policy_metadata(actor))
        check_output_bounded(onnx.load(str(tmp)), spec)
        max_diff = _verify(reference or _torch_actions(policy), tmp, spec, verify_obs)
        if not max_diff <= tolerance:
            raise ExportError(
                f"onnxruntime and {reference_name} disagree by {max_diff:.3g} (> {tolerance:g}) on {len(verify_obs)} "
                f"observations from {obs_source}; {out} was not written"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    card = _write_card(actor, out, len(verify_obs), max_diff, obs_source)
    return ExportReport(out, card, len(verify_obs), max_diff, obs_source)


#: what a policy card's name ends in: never a name a limits file (deploy/TASK.yaml) or a task file could have
CARD_SUFFIX = ".card.yaml"


def card_path(onnx_path: Path) -> Path:
    """`policies/door.onnx` -> `policies/door.card.yaml`."""
    return onnx_path.with_name(onnx_path.stem + CARD_SUFFIX)


def check_export_paths(out: Path, force: bool = False) -> None:
    """Refuse, before any work, an --out whose policy or card would replace what export did not write."""
    check_output_file(out, "--out", "policy", (".onnx",), is_policy_file, force)
    check_output_file(card_path(out), "--out", "policy card", (".yaml",), is_card_file, force)


def is_policy_file(path: Path) -> bool:
    """An ONNX file carrying awac-robot's metadata: one that export (or import-policy) wrote."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises DecodeError and others for a file that is not ONNX
        return False
    return any(prop.key.startswith(META_PREFIX) for prop in model.metadata_props)


def is_card_file(path: Path) -> bool:
    """A policy card: a YAML mapping with the fields `_write_card` always writes."""
    try:
        card = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(card, dict) and {"policy", "sha256", "verification", "exported_by"} <= set(card)


def policy_metadata(actor: ActorToExport) -> PolicyMetadata:
    return PolicyMetadata(
        task=actor.spec.name,
        spec=actor.spec,
        control_period=actor.spec.control_period,
        run_id=actor.run_id,
        step=int(actor.step),
        package_version=__version__,
        opset=OPSET,
    )


def write_onnx(policy: torch.nn.Module, spec: TaskSpec, path: Path, meta: PolicyMetadata) -> None:
    example = torch.zeros(2, spec.obs_dim, dtype=torch.float32)
    with warnings.catch_warnings():
        # dynamo=False: the TorchScript exporter handles an MLP exactly and needs no onnxscript;
        # torch 2.13 marks it deprecated, which is not news for the user of `awac-robot export`
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            policy,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(path))
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"awac-robot policy for task {spec.name}, run {meta.run_id} step {meta.step}"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_output_bounded(model: onnx.ModelProto, spec: TaskSpec) -> None:
    """Raise ExportError unless the graph's last operation bounds OUTPUT_NAME inside the action bounds.

    A structural guarantee, not a sample: whatever observation comes in, the output of a Tanh is
    in [-1, 1] and the output of a Clip with constant limits is inside them (Identity nodes are
    looked through). NaN passes through both; the controller's safety layer holds on it. Checking
    outputs on sampled observations could only show that those samples stayed inside.
    """
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    node = producers.get(OUTPUT_NAME)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    low, high = max(spec.act_low), min(spec.act_high)
    bounds = f"[{low:g}, {high:g}]"
    if node is None:
        raise ExportError(f"the graph's output '{OUTPUT_NAME}' is not computed by any node; nothing was written")
    if node.op_type == "Tanh":
        lo, hi = -1.0, 1.0
    elif node.op_type == "Clip":
        limits = [node.input[i] if len(node.input) > i else "" for i in (1, 2)]
        if not all(name in constants and constants[name].size == 1 for name in limits):
            raise ExportError(f"the policy ends in a Clip without constant limits: it may leave {bounds}")
        lo, hi = (float(constants[name].reshape(())) for name in limits)
    else:
        raise ExportError(
            f"the policy's output comes from a {node.op_type} node, which does not bound it to the action bounds "
            f"{bounds}: end the actor in tanh, or clamp to the bounds; nothing was written"
        )
    if not (low <= lo and hi <= high):
        raise ExportError(
            f"the policy's {node.op_type} bounds its output to [{lo:g}, {hi:g}], outside the action bounds "
            f"{bounds} of task {spec.name}; nothing was written"
        )


def _torch_actions(policy: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def actions(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return policy(torch.as_tensor(obs)).numpy()

    return actions


def _verify(reference: Callable[[np.ndarray], np.ndarray], path: Path, spec: TaskSpec, obs: np.ndarray) -> float:
    """Max abs difference over all observations, run as one batch and again one by one (the controller's way)."""
    expected = reference(obs)
    session = OnnxPolicy(path)
    session.check_spec(spec)
    batched = session.batch(obs)
    single = np.stack([session(row) for row in obs[:200]])
    if batched.shape != expected.shape:
        raise ExportError(f"onnx output shape {batched.shape}, the reference gives {expected.shape}")
    return float(max(np.max(np.abs(batched - expected)), np.max(np.abs(single - expected[:200]))))


def _write_card(actor: ActorToExport, onnx_path: Path, verified_on: int, max_diff: float, source: str) -> Path:
    """policies/<name>.card.yaml: what a person deploying the file wants to know before they do."""
    card = {
        "policy": onnx_path.name,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "task": actor.spec.name,
        "obs_dim": actor.spec.obs_dim,
        "act_dim": actor.spec.act_dim,
        "control_rate_hz": actor.spec.control_rate,
        "run_id": actor.run_id,
        "step": int(actor.step),
        "eval": {k: (float(v) if isinstance(v, (int, float, np.number)) else str(v)) for k, v in actor.eval.items()},
        **({"origin": actor.origin} if actor.origin else {}),
        "verification": {"observations": verified_on, "from": source, "max_abs_diff": max_diff},
        "opset": OPSET,
        "exported_by": f"awac-robot {__version__}, torch {torch.__version__}, onnx {onnx.__version__}",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "deploy": f"awac-robot deploy --policy {onnx_path}",
    }
    path = card_path(onnx_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(card, sort_keys=False))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
