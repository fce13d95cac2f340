"""Deterministic synthetic door episodes and store comparisons shared by the store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from awac_robot.envs import get_spec
from awac_robot.store import DemoStore, Episode

SPEC = get_spec("door")


def make_episode(seed: int, source: str = "scripted") -> Episode:
    """A deterministic episode whose every number depends on `seed`, so any torn or mixed write shows."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(20, 260))
    success = np.zeros(steps, dtype=bool)
    success[rng.integers(steps) :] = seed % 3 == 0
    terminated = np.zeros(steps, dtype=bool)
    truncated = np.zeros(steps, dtype=bool)
    (terminated if seed % 4 == 0 else truncated)[-1] = True
    return Episode(
        obs=rng.normal(size=(steps + 1, SPEC.obs_dim)),
        action=rng.uniform(-1, 1, size=(steps, SPEC.act_dim)),
        reward=np.where(success, 0.0, -1.0),
        terminated=terminated,
        truncated=truncated,
        success=success,
        source=source,
        seed=seed,
    )


def assert_same_episode(got: Episode, want: Episode) -> None:
    for name in ("obs", "action", "reward", "terminated", "truncated", "success"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (got.source, got.seed) == (want.source, want.seed)


def assert_same_episodes(got: list[Episode], want: list[Episode]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert_same_episode(a, b)


def store_files(path: Path) -> dict[Path, bytes]:
    """Every file of a store but its lock file (which each writer rewrites): equal means nothing changed."""
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name != "writer.lock"}


def read_episodes(path: Path) -> list[Episode]:
    return list(DemoStore.open(path).episodes())
