"""Export: a tiny real checkpoint -> ONNX round-trips, carries its metadata, and a foreign policy is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx_helpers import small_actor, write_policy

from awac_robot.cli import main
from awac_robot.demonstrators.policy import OnnxPolicyDemonstrator
from awac_robot.envs import get_spec, make_env
from awac_robot.export import ActorToExport, ExportError, card_path, export_actor, load_checkpoint, rollout_observations
from awac_robot.onnx_policy import OnnxPolicy
from awac_robot.spec import SpecMismatch
from awac_robot.store import DemoStore, Episode
from awac_robot.train.config import TrainConfig
from awac_robot.train.finetune import Trainer

DOOR = get_spec("door")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real door store (random-action episodes from the simulator) and a real 20-update checkpoint on it."""
    root = tmp_path_factory.mktemp("export")
    store_path, run_dir = root / "door.zarr", root / "run"
    env = make_env("door", seed=0)
    rng = np.random.default_rng(0)
    with DemoStore.create(store_path, DOOR) as store:
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            rows, acts, rews, terms, truncs, succ = [obs], [], [], [], [], []
            for _ in range(DOOR.episode_steps):
                action = rng.uniform(-1, 1, DOOR.act_dim).astype(np.float32)
                obs, reward, terminated, truncated, info = env.step(action)
                rows.append(obs), acts.append(action), rews.append(reward)
                terms.append(terminated), truncs.append(truncated), succ.append(info["success"])
                if terminated or truncated:
                    break
            store.append(Episode(np.stack(rows), np.stack(acts), rews, terms, truncs, succ, "scripted", seed))
    config = TrainConfig(
        task="door",
        threads=1,
        actor_hidden=(32,),
        critic_hidden=(32,),
        offline_steps=20,
        online_steps=0,
        batch_size=16,
        checkpoint_interval=20,
        log_interval=10,
    )
    Trainer(run_dir, store_path, config, resume=False, online=False, progress=False).train()
    return store_path, run_dir


def test_checkpoint_exports_with_metadata_and_round_trips(tiny_run, tmp_path: Path, capsys) -> None:
    store_path, run_dir = tiny_run
    out = tmp_path / "policies" / "door.onnx"
    assert main(["export", "--checkpoint", str(run_dir), "--out", str(out), "--store", str(store_path)]) == 0
    assert "max abs diff" in capsys.readouterr().out

    actor = load_checkpoint(run_dir)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["awac_robot.task"] == "door" and props["awac_robot.step"] == str(actor.step)
    assert props["awac_robot.run_id"] == actor.run_id and props["awac_robot.opset"] == "17"
    policy = OnnxPolicy(out)
    policy.check_spec(DOOR)
    assert policy.metadata.spec == DOOR and policy.metadata.control_period == DOOR.control_period
    assert policy.session.get_session_options().intra_op_num_threads == 1

    obs = DemoStore.open(store_path).load_transitions().obs
    with torch.no_grad():
        expected = actor.policy(torch.as_tensor(obs)).numpy()
    assert np.max(np.abs(policy.batch(obs) - expected)) <= 1e-5
    assert np.max(np.abs(policy(obs[7]) - expected[7])) <= 1e-5
    assert np.all(np.abs(expected) <= 1.0)

    card = yaml.safe_load(card_path(out).read_text())
    assert card["run_id"] == actor.run_id and card["verification"]["observations"] == len(obs) >= 1000
    assert card["verification"]["max_abs_diff"] <= 1e-5 and card["task"] == "door"


def test_export_refuses_a_graph_that_disagrees_with_torch(tmp_path: Path) -> None:
    class DriftsInExport(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.actor = small_actor(DOOR)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            out = self.actor(obs)
            return torch.clamp(out + 1e-3, -1.0, 1.0) if torch.onnx.is_in_onnx_export() else out  # still bounded

    actor = ActorToExport(DriftsInExport(), DOOR, "drift", 1)
    obs = rollout_observations(ActorToExport(small_actor(DOOR), DOOR, "r", 0), 1000)
    out = tmp_path / "door.onnx"
    with pytest.raises(ExportError, match="disagree by 0.001"):
        export_actor(actor, out, obs, "rollouts")
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary file is left behind
    with pytest.raises(ExportError, match="at least 1000"):
        export_actor(ActorToExport(small_actor(DOOR), DOOR, "r", 0), out, obs[:999], "rollouts")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's notice about the TorchScript exporter
def test_metadata_mismatch_refuses_to_deploy_in_one_line(tmp_path: Path, capsys) -> None:
    push = get_spec("push")
    path = write_policy(small_actor(push), push, tmp_path / "push.onnx")
    assert main(["deploy", "--policy", str(path), "--task", "door", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different task" in err and "'door'" in err
    assert not (tmp_path / "deploy").exists()

    foreign = tmp_path / "plain.onnx"
    torch.onnx.export(small_actor(DOOR), (torch.zeros(1, DOOR.obs_dim),), str(foreign), dynamo=False)
    with pytest.raises(SpecMismatch, match="lacks awac-robot metadata"):
        OnnxPolicy(foreign)


def test_policy_demonstrator_checks_sizes_and_acts(tmp_path: Path) -> None:
    path = write_policy(small_actor(DOOR), DOOR, tmp_path / "door.onnx")
    with pytest.raises(SpecMismatch, match="different task"):
        OnnxPolicyDemonstrator(path, get_spec("pen"))
    demo = OnnxPolicyDemonstrator(path, DOOR)
    env = make_env("door", seed=1)
    obs, _ = env.reset()
    demo.reset(env, obs)
    action = demo.act(obs)
    assert demo.source == "policy" and demo.keep_episode()
    assert action.dtype == np.float32 and action.shape == (DOOR.act_dim,) and np.all(np.abs(action) <= 1)
    with pytest.raises(SpecMismatch, match="observation"):
        demo.act(obs[:-1])


def _graph_with_outputs(path: Path, outputs: dict[str, tuple[int, int]], action_type: int = onnx.TensorProto.FLOAT):
    """An ONNX file with awac-robot door metadata whose outputs are obs @ W of the given (rows, width)."""
    from onnx import TensorProto, helper, numpy_helper

    from awac_robot.export import policy_metadata

    nodes, inits, outs = [], [], []
    for name, (_, width) in outputs.items():
        kind = action_type if name == "action" else TensorProto.FLOAT
        weights = np.full((DOOR.obs_dim, width), 0.01, dtype=np.float32 if kind == TensorProto.FLOAT else np.float64)
        obs = "obs" if kind == TensorProto.FLOAT else "obs64"
        inits.append(numpy_helper.from_array(weights, f"w_{name}"))
        nodes.append(helper.make_node("MatMul", [obs, f"w_{name}"], [name]))
        outs.append(helper.make_tensor_value_info(name, kind, ["batch", width]))
    nodes.insert(0, helper.make_node("Cast", ["obs"], ["obs64"], to=TensorProto.DOUBLE))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", DOOR.obs_dim])], outs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in policy_metadata(ActorToExport(small_actor(DOOR), DOOR, "hand-made", 1)).to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_the_output_that_is_run_is_checked_by_name_shape_and_dtype(tmp_path: Path, capsys) -> None:
    # the first output is 28 wide, the 'action' output (the one the controller runs) 1 wide: refused
    path = _graph_with_outputs(tmp_path / "narrow.onnx", {"first": (1, 28), "action": (1, 1)})
    with pytest.raises(SpecMismatch, match=r"output 'action' has shape \['batch', 1\].*\[batch, 28\]"):
        OnnxPolicy(path)
    assert main(["deploy", "--policy", str(path), "--duration", "1", "--log", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "output 'action'" in err and "\n" not in err and not (tmp_path / "run").exists()
    wrong_type = _graph_with_outputs(tmp_path / "double.onnx", {"action": (1, 28)}, onnx.TensorProto.DOUBLE)
    with pytest.raises(SpecMismatch, match=r"output 'action' is tensor\(double\)"):
        OnnxPolicy(wrong_type)
    right = OnnxPolicy(_graph_with_outputs(tmp_path / "ok.onnx", {"first": (1, 5), "action": (1, 28)}))
    assert right(np.ones(DOOR.obs_dim, np.float32)).shape == (DOOR.act_dim,)


class Unbounded(torch.nn.Module):
    """A linear actor, or one clamped to `limit`: its outputs can leave [-1, 1] unless limit <= 1."""

    def __init__(self, limit: float | None) -> None:
        super().__init__()
        self.layer, self.limit = torch.nn.Linear(DOOR.obs_dim, DOOR.act_dim), limit

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.layer(obs) * 0.001  # small on the verification observations: only the structure can tell
        return out if self.limit is None else torch.clamp(out, -self.limit, self.limit)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_refuses_a_policy_whose_graph_does_not_bound_its_output(tmp_path: Path) -> None:
    obs = rollout_observations(ActorToExport(small_actor(DOOR), DOOR, "r", 0), 1000)
    out = tmp_path / "door.onnx"
    with pytest.raises(ExportError, match="comes from a Mul node, which does not bound it"):
        export_actor(ActorToExport(Unbounded(None), DOOR, "linear", 1), out, obs, "rollouts")
    with pytest.raises(ExportError, match=r"bounds its output to \[-2, 2\], outside the action bounds \[-1, 1\]"):
        export_actor(ActorToExport(Unbounded(2.0), DOOR, "clamp2", 1), out, obs, "rollouts")
    assert list(tmp_path.iterdir()) == []
    export_actor(ActorToExport(Unbounded(1.0), DOOR, "clamp1", 1), out, obs, "rollouts")  # a clamp to the bounds
    assert out.exists()
