"""Import demonstrations recorded by other projects; today the DAPG pickle format (Rajeswaran et al. 2018).

A DAPG file is a pickle: a list of dicts with `observations` (T, obs_dim), `actions`
(T, act_dim), dense `rewards` and an `init_state_dict`. Three things need care:

- A pickle can run any code on load, and these files come from the internet. They are read
  with an unpickler that resolves only numpy's array-rebuilding functions and plain
  builtin types; anything else (e.g. `os.system`) is refused before it can be called.
- The file records no observation after the last action, so that action's next
  observation is unknown. Rather than invent one, the importer drops the last action: an
  episode of T recorded steps becomes T - 1 exact transitions, whose final observation is
  the last recorded one. The shortened episode is marked truncated on its last step (the
  person stopped; the task did not terminate).
- The recorded dense rewards come from an older simulator; the store's sparse reward is
  recomputed from the observations with the task's own success rule (`success_rules.py`).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray

from awac_robot.envs import get_spec
from awac_robot.provenance import Batch
from awac_robot.spec import SpecMismatch, TaskSpec
from awac_robot.store import Episode, StoreError, add_episodes
from awac_robot.success_rules import ADROIT_TASKS, SUCCESS_FROM_OBS

#: Builtin types a data pickle may rebuild; no functions, no `eval`, no `getattr`.
SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes"})
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    (module, name): value
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name, value in (("_reconstruct", multiarray._reconstruct), ("scalar", multiarray.scalar))
} | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class DapgImportError(StoreError):
    """A file that cannot be imported as asked; the message names the file and the problem."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a function or class outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        raise RefusedGlobal(f"refused to load {module}.{name}: only numpy arrays and builtins are allowed")


def load_restricted_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as exc:
        raise DapgImportError(f"{path}: {exc}") from None
    except Exception as exc:
        raise DapgImportError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None


@dataclass
class ImportSummary:
    episodes: int = 0
    steps: int = 0
    successes: int = 0
    dropped_last_steps: int = 0
    clipped_actions: int = 0
    total_actions: int = 0


def dapg_episodes(path: Path, spec: TaskSpec) -> tuple[list[Episode], int]:
    """The episodes of a DAPG pickle for `spec`'s task, converted as the module docstring says.

    Also returns how many action entries were outside [-1, 1] and clipped (the old simulator's
    actions slightly exceed the range).
    """
    if spec.name not in SUCCESS_FROM_OBS:
        raise DapgImportError(
            f"task {spec.name!r} has no success rule that can be recomputed from its observations alone, so "
            "imported demonstrations could not be given sparse rewards; "
            f"rules exist for {', '.join(sorted(SUCCESS_FROM_OBS))}"
        )
    if spec.name not in ADROIT_TASKS:
        raise DapgImportError(
            f"DAPG files hold Adroit hand demonstrations ({', '.join(ADROIT_TASKS)}); task {spec.name!r} is not one"
        )
    demos = load_restricted_pickle(path)
    if not isinstance(demos, list) or not demos:
        kind = type(demos).__name__
        raise DapgImportError(f"{path}: a DAPG file holds a non-empty list of episode dicts, got {kind}")
    episodes, clipped = [], 0
    for index, demo in enumerate(demos):
        where = f"{path}: episode {index}"
        if not isinstance(demo, dict) or not {"observations", "actions"} <= set(demo):
            raise DapgImportError(f"{where} is not a dict with 'observations' and 'actions'")
        obs = np.asarray(demo["observations"], dtype=np.float64)
        actions = np.asarray(demo["actions"], dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != spec.obs_dim or actions.ndim != 2 or actions.shape[1] != spec.act_dim:
            raise SpecMismatch(
                f"{where} has observations {obs.shape} and actions {actions.shape}; task {spec.name!r} needs "
                f"(T, {spec.obs_dim}) and (T, {spec.act_dim})"
            )
        if len(obs) != len(actions) or len(obs) < 2:
            counts = f"{len(obs)} observations and {len(actions)} actions"
            raise DapgImportError(f"{where} has {counts} (need T >= 2 of each, equally many)")
        for name, values in (("observations", obs), ("actions", actions)):
            if not np.isfinite(values).all():
                step = int(np.argwhere(~np.isfinite(values))[0][0])
                raise DapgImportError(
                    f"{where} has NaN or inf {name} at step {step}: fix or remove that episode (nothing was imported)"
                )
        steps = len(actions) - 1  # the last action has no recorded next observation: dropped, never faked
        clipped += int((np.abs(actions[:steps]) > 1.0).sum())
        success = SUCCESS_FROM_OBS[spec.name](obs[1:], spec)
        truncated = np.zeros(steps, dtype=bool)
        truncated[-1] = True
        episodes.append(
            Episode(
                obs=obs,
                action=np.clip(actions[:steps], -1.0, 1.0),
                reward=np.where(success, 0.0, -1.0),
                terminated=np.zeros(steps, dtype=bool),
                truncated=truncated,
                success=success,
                source="human",
            )
        )
    return episodes, clipped


def import_dapg(path: str | Path, task: str, store_path: str | Path) -> ImportSummary:
    """Append the DAPG demos in `path` to the sparse-reward store at `store_path` (created if missing).

    All or nothing: every episode is converted and checked first, then all are published at once.
    """
    path = Path(path)
    spec = get_spec(task)
    episodes, clipped = dapg_episodes(path, spec)
    batch = Batch.now(
        "import",
        demonstrator="dapg",
        arguments={"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
    )
    add_episodes(store_path, spec, "sparse", episodes, batch)
    return ImportSummary(
        episodes=len(episodes),
        steps=sum(episode.length for episode in episodes),
        successes=sum(episode.solved for episode in episodes),
        dropped_last_steps=len(episodes),
        clipped_actions=clipped,
        total_actions=sum(episode.action.size for episode in episodes),
    )
