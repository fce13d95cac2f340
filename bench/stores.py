"""Benchmark demo stores, each built by the product's own commands from a recipe, cached and atomic.

A store is built once per recipe into `STORES/NAME-DIGEST/` (the digest covers the task and every
field of the recipe, so retuning a recipe builds a new store instead of reusing a stale one). The
build runs in a staging folder that is renamed into place only when every command succeeded, so
an interrupted build never leaves a store that looks finished. Beside the store the folder keeps
the build's record (`build.json`: recipe, episodes, success by source, build seconds) and what
the build made on the way (demonstrator policies from `import-policy` or `export`, the
behaviour-cloning run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runner import ROOT, awac_robot

from awac_robot.store import DemoStore

#: ../shared/data beside the checkout, or the folder AWAC_ROBOT_REFERENCE_DATA names (as the tests read it)
REFERENCE = Path(os.environ.get("AWAC_ROBOT_REFERENCE_DATA") or ROOT.parent / "shared" / "data") / "adroit"
HUMAN_DEMOS = {"door": REFERENCE / "door-v0_demos.pickle"}
DAPG_EXPERTS = {"door": REFERENCE / "door_expert.npz", "pen": REFERENCE / "pen_expert.npz"}
DEMONSTRATORS = ("scripted", "dapg-expert", "bc-on-human", "none")


@dataclass(frozen=True)
class StoreRecipe:
    """How a store is made: episodes from one demonstrator, then optionally the 25 DAPG human demos.

    Demonstrators: `scripted` (the task's hand-written expert), `dapg-expert` (the reference DAPG
    weights as an ONNX policy, by `import-policy dapg`), `bc-on-human` (a policy behaviour-cloned
    on the human demos for `bc_updates` updates, exported, then collected from: the AWAC paper's
    recipe for its hand tasks) or `none`. Noise and perturbation are `collect`'s --noise and --perturb.
    """

    demonstrator: str
    episodes: int = 50
    noise: float = 0.0
    perturb: float = 0.0
    human_demos: bool = False
    bc_updates: int = 10_000

    def __post_init__(self) -> None:
        if self.demonstrator not in DEMONSTRATORS:
            raise ValueError(f"demonstrator {self.demonstrator!r} is not one of {', '.join(DEMONSTRATORS)}")

    def needs(self, task: str) -> list[Path]:
        """The reference files this recipe reads (from ../shared/data; never part of the repo)."""
        paths = []
        if self.demonstrator == "dapg-expert":
            paths.append(DAPG_EXPERTS[task])
        if self.human_demos or self.demonstrator == "bc-on-human":
            paths.append(HUMAN_DEMOS[task])
        return paths

    def describe(self) -> str:
        parts = []
        if self.demonstrator != "none":
            how = [f"noise {self.noise:g}"] if self.noise else []
            how += [f"{self.perturb:.0%} perturbed"] if self.perturb else []
            trained = f" ({self.bc_updates // 1000}k BC updates)" if self.demonstrator == "bc-on-human" else ""
            parts.append(f"{self.episodes} {self.demonstrator}{trained}{' ' + ', '.join(how) if how else ''}")
        if self.human_demos:
            parts.append("25 human")
        return " + ".join(parts)


@dataclass(frozen=True)
class BuiltStore:
    """A finished store and its build record."""

    path: Path
    episodes: int
    steps: int
    success: float  # share of the store's episodes that reach the goal
    success_by_source: dict[str, float]
    episodes_by_source: dict[str, int]
    build_seconds: float
    cached: bool = False

    def summary(self) -> str:
        sources = ", ".join(
            f"{name} {self.episodes_by_source[name]} at {rate:.0%}" for name, rate in self.success_by_source.items()
        )
        built = "cached" if self.cached else "built"
        return (
            f"{self.episodes} episodes, {self.steps} steps, success {self.success:.0%} ({sources}); "
            f"{built}, build took {self.build_seconds:.0f} s"
        )


def build_atomically(final: Path, build: Callable[[Path], None]) -> None:
    """Run `build(staging)` and rename the staging folder to `final` only if it succeeded."""
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recipe_folder(stores: Path, name: str, task: str, recipe: StoreRecipe) -> Path:
    digest = hashlib.sha1(json.dumps({"task": task, **asdict(recipe)}, sort_keys=True).encode()).hexdigest()[:8]
    return stores / f"{name}-{digest}"


def cached_store(stores: Path, name: str, task: str, recipe: StoreRecipe) -> BuiltStore:
    """The store of `recipe` for `task`, built now unless a finished build of the same recipe exists."""
    folder = recipe_folder(stores, name, task, recipe)
    if not folder.exists():
        stores.mkdir(parents=True, exist_ok=True)
        build_atomically(folder, lambda staging: _build(staging, task, recipe))
        return _read_build(folder, cached=False)
    return _read_build(folder, cached=True)


def _build(staging: Path, task: str, recipe: StoreRecipe) -> None:
    started = time.time()
    store = staging / "store.zarr"
    missing = [str(path) for path in recipe.needs(task) if not path.exists()]
    if missing:
        raise FileNotFoundError(f"the {task} store needs reference data that is missing: {', '.join(missing)}")
    human = HUMAN_DEMOS.get(task)
    demonstrator = "scripted"
    if recipe.demonstrator == "dapg-expert":
        expert = staging / "expert.onnx"
        awac_robot(
            "import-policy", "dapg", str(DAPG_EXPERTS[task]), "--task", task, "--out", str(expert),
            "--verify", "1000", "--eval-episodes", "0",
        )  # fmt: skip
        demonstrator = f"policy:{expert}"
    elif recipe.demonstrator == "bc-on-human":
        demos = staging / "human.zarr"
        awac_robot("demos", "import", "dapg", str(human), "--task", task, "--store", str(demos))
        bc_run = staging / "bc-run"
        awac_robot(
            "train", "--task", task, "--store", str(demos), "--algo", "bc", "--offline-steps", str(recipe.bc_updates),
            "--out", str(bc_run), "--no-progress",
        )  # fmt: skip
        awac_robot("export", "--checkpoint", str(bc_run), "--out", str(staging / "bc.onnx"), "--store", str(demos))
        demonstrator = f"policy:{staging / 'bc.onnx'}"
    if recipe.demonstrator != "none":
        awac_robot(
            "collect", "--task", task, "--episodes", str(recipe.episodes), "--store", str(store),
            "--demonstrator", demonstrator, "--noise", str(recipe.noise), "--perturb", str(recipe.perturb),
            "--no-progress",
        )  # fmt: skip
    if recipe.human_demos:
        awac_robot("demos", "import", "dapg", str(human), "--task", task, "--store", str(store))
    record: dict[str, Any] = {"task": task, "recipe": asdict(recipe), "build_seconds": time.time() - started}
    (staging / "build.json").write_text(json.dumps(record, indent=1))


def _read_build(folder: Path, cached: bool) -> BuiltStore:
    record = json.loads((folder / "build.json").read_text())
    with DemoStore.open(folder / "store.zarr") as store:
        meta = store.episode_meta()
        steps = store.num_steps
    sources = sorted(set(meta["source"].tolist()))
    mine = {source: meta["source"] == source for source in sources}
    return BuiltStore(
        path=folder / "store.zarr",
        episodes=len(meta["source"]),
        steps=steps,
        success=float(meta["success"].mean()),
        success_by_source={source: float(meta["success"][m].mean()) for source, m in mine.items()},
        episodes_by_source={source: int(m.sum()) for source, m in mine.items()},
        build_seconds=float(record["build_seconds"]),
        cached=cached,
    )
