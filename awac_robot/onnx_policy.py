"""An exported policy on the robot side: an onnxruntime session set up for one observation at a time.

The ONNX contract (docs/deploy.md): input "obs" float32 [batch, obs_dim], output "action"
float32 [batch, act_dim] in the action bounds, observation normalisation inside the graph,
and awac-robot metadata (METADATA_KEYS) so a controller can refuse a policy made for
another task before it sends a single command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from awac_robot.spec import SpecMismatch, TaskSpec

INPUT_NAME = "obs"
OUTPUT_NAME = "action"
META_PREFIX = "awac_robot."
METADATA_KEYS = ("task", "task_spec", "control_period", "run_id", "step", "package_version", "opset")


@dataclass(frozen=True)
class PolicyMetadata:
    task: str
    spec: TaskSpec
    control_period: float
    run_id: str
    step: int
    package_version: str
    opset: int

    def to_props(self) -> dict[str, str]:
        """The metadata_props entries written into the ONNX file."""
        values = {
            "task": self.task,
            "task_spec": self.spec.to_json(),
            "control_period": repr(self.control_period),
            "run_id": self.run_id,
            "step": str(self.step),
            "package_version": self.package_version,
            "opset": str(self.opset),
        }
        return {META_PREFIX + key: value for key, value in values.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> PolicyMetadata:
        missing = [key for key in METADATA_KEYS if META_PREFIX + key not in props]
        if missing:
            raise SpecMismatch(
                f"{where} lacks awac-robot metadata ({', '.join(missing)}): export it with 'awac-robot export'"
            )
        value = {key: props[META_PREFIX + key] for key in METADATA_KEYS}
        try:
            spec = TaskSpec.from_json(value["task_spec"])
            return cls(
                task=value["task"],
                spec=spec,
                control_period=float(value["control_period"]),
                run_id=value["run_id"],
                step=int(value["step"]),
                package_version=value["package_version"],
                opset=int(value["opset"]),
            )
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise SpecMismatch(f"{where}: unreadable awac-robot metadata ({exc})") from None


def session_options() -> ort.SessionOptions:
    """One intra-op thread, sequential, full graph optimisation: the default thread pool has
    multi-millisecond tails on a single small input, which a fixed-rate loop cannot afford."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxPolicy:
    """A loaded policy: `policy(obs)` for one observation, `policy.batch(obs)` for many."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such policy file (make one with 'awac-robot export')")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise SpecMismatch(f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = PolicyMetadata.from_props(props, str(self.path))
        self.spec = self.metadata.spec
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise SpecMismatch(
                f"{self.path}: expected one input '{INPUT_NAME}' and an output '{OUTPUT_NAME}', "
                f"the graph has inputs {[i.name for i in inputs]} and outputs {list(outputs)}"
            )
        # the output that is run, by name: another output's shape says nothing about it
        _check_tensor(inputs[0], self.spec.obs_dim, f"{self.path}: input '{INPUT_NAME}'")
        _check_tensor(outputs[OUTPUT_NAME], self.spec.act_dim, f"{self.path}: output '{OUTPUT_NAME}'")
        self._one = np.zeros((1, self.spec.obs_dim), dtype=np.float32)
        self._outputs = [OUTPUT_NAME]
        self._shape = (1, self.spec.act_dim)
        for batch in (1, 3):  # declared shapes can be symbolic or wrong: run it once and look
            out = self.session.run(self._outputs, {INPUT_NAME: np.zeros((batch, self.spec.obs_dim), np.float32)})[0]
            if out.shape != (batch, self.spec.act_dim) or out.dtype != np.float32:
                raise SpecMismatch(
                    f"{self.path}: output '{OUTPUT_NAME}' gives {out.dtype} {list(out.shape)} for {batch} "
                    f"observation(s), the task needs float32 [{batch}, {self.spec.act_dim}]"
                )

    def check_spec(self, expected: TaskSpec) -> None:
        """Raise SpecMismatch (one line) unless the policy was made for `expected`."""
        expected.check_matches(self.spec, f"policy {self.path}")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The action (float32, shape (act_dim,)) for one observation; SpecMismatch if the graph gave another shape."""
        self._one[0] = obs
        out: np.ndarray = self.session.run(self._outputs, {INPUT_NAME: self._one})[0]
        if out.shape != self._shape:  # a data-dependent shape would otherwise be broadcast over the joints
            raise SpecMismatch(f"{self.path}: output '{OUTPUT_NAME}' gave shape {list(out.shape)}, not {self._shape}")
        return out[0]

    def batch(self, obs: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(self._outputs, {INPUT_NAME: np.ascontiguousarray(obs, dtype=np.float32)})[0]
        return out


def _check_tensor(info: ort.NodeArg, size: int, what: str) -> None:
    """float32 [batch, size]: the batch axis may be named, the last must be exactly `size`."""
    shape = list(info.shape)
    if info.type != "tensor(float)":
        raise SpecMismatch(f"{what} is {info.type}, the contract is tensor(float) (float32) [batch, {size}]")
    if len(shape) != 2 or shape[1] != size:
        raise SpecMismatch(f"{what} has shape {shape}, the contract (from its metadata) is [batch, {size}]")
