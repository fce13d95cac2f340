"""Whole-store operations behind `awac-robot demos`: describe a store, merge stores of one task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from awac_robot.spec import SpecMismatch
from awac_robot.store import DemoStore


@dataclass(frozen=True)
class SourceStats:
    episodes: int
    steps: int
    successes: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass
class StoreInfo:
    """What `demos info` prints: enough to tell two stores apart and to judge their data."""

    path: Path
    task: str
    obs_dim: int
    act_dim: int
    reward_mode: str
    format_version: int
    created_utc: str
    written_by: str
    episodes: int
    steps: int
    disk_bytes: int
    raw_bytes: int
    by_source: dict[str, SourceStats] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.disk_bytes if self.disk_bytes else 0.0


def describe(path: str | Path) -> StoreInfo:
    store = DemoStore.open(path)
    meta = store.episode_meta()
    by_source = {}
    for source in sorted(set(meta["source"].tolist())):
        mine = meta["source"] == source
        by_source[source] = SourceStats(
            episodes=int(mine.sum()),
            steps=int(meta["length"][mine].sum()),
            successes=int(meta["success"][mine].sum()),
        )
    return StoreInfo(
        path=store.path,
        task=store.spec.name,
        obs_dim=store.spec.obs_dim,
        act_dim=store.spec.act_dim,
        reward_mode=store.reward_mode,
        format_version=store.attrs["format_version"],
        created_utc=str(store.attrs.get("created_utc", "?")),
        written_by=str(store.attrs.get("awac_robot_version", "?")),
        episodes=store.num_episodes,
        steps=store.num_steps,
        disk_bytes=store.size_on_disk(),
        raw_bytes=store.raw_bytes(),
        by_source=by_source,
    )


def merge_stores(inputs: Sequence[str | Path], out: str | Path) -> int:
    """Copy every episode of `inputs` (all of one task and reward mode) into a new store `out`; returns the count.

    Everything is checked before `out` is created, so a refused merge leaves nothing behind.
    """
    stores = [DemoStore.open(path) for path in inputs]
    first = stores[0]
    for other in stores[1:]:
        first.spec.check_matches(other.spec, f"store {other.path}")
        if other.reward_mode != first.reward_mode:
            raise SpecMismatch(
                f"store {other.path} records {other.reward_mode} rewards and {first.path} {first.reward_mode}: "
                "only stores with the same reward mode can be merged"
            )
    with DemoStore.create(out, first.spec, first.reward_mode) as merged:
        for store in stores:
            for episode in store.episodes():
                merged.append(episode)
        return merged.num_episodes
