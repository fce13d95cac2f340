"""The store a run trained from, recorded so `--resume` can refuse any other store.

A run's counters and replay only make sense together with the episodes it started from and
the online episodes it appended. The record keeps the store's id (a random uuid given at
creation; a copied directory keeps it, a merged or filtered store gets a new one), its task,
creation time, and a digest of the per-episode metadata (ends, sources, seeds, returns) of
the episodes present when the run began. Episodes appended later by anyone do not change
it; editing or replacing those first episodes does. A copy taken before the run has the
same record but not the run's episodes, which the trainer checks separately.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.store import DemoStore, StoreError


@dataclass(frozen=True)
class StoreRecord:
    path: str  # absolute, where the run found it
    store_id: str
    task: str
    created_utc: str
    episodes: int  # published when the run began
    steps: int
    digest: str  # sha256 of the metadata of those episodes

    @classmethod
    def of(cls, store: DemoStore, meta: dict[str, np.ndarray]) -> StoreRecord:
        count = store.num_episodes
        return cls(
            path=str(Path(store.path).resolve()),
            store_id=store.store_id,
            task=store.spec.name,
            created_utc=str(store.attrs.get("created_utc", "")),
            episodes=count,
            steps=store.num_steps,
            digest=_digest(store.episode_ends, meta, count),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreRecord:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.path} (store id {self.store_id}, {self.task}, created {self.created_utc}, "
            f"{self.episodes} episodes at the start)"
        )

    def check(self, store: DemoStore, meta: dict[str, np.ndarray], run: str) -> None:
        """Raise StoreError (one line) unless `store` is this store, grown or not since the run began."""
        if store.store_id != self.store_id:
            differs = f"store id {store.store_id}, created {store.attrs.get('created_utc')}"
        elif store.num_episodes < self.episodes:
            differs = f"it holds only {store.num_episodes} episodes"
        elif _digest(store.episode_ends, meta, self.episodes) != self.digest:
            differs = f"its first {self.episodes} episodes differ"
        else:
            return
        raise StoreError(
            f"run {run} was trained on store {self.describe()}; {store.path} is another store ({differs}): "
            f"resume with --store {self.path}"
        )


def _digest(ends: np.ndarray, meta: dict[str, np.ndarray], count: int) -> str:
    sha = hashlib.sha256()
    sha.update(np.ascontiguousarray(ends[:count], dtype=np.int64).tobytes())
    sha.update("\n".join(meta["source"][:count].tolist()).encode())
    sha.update(np.ascontiguousarray(meta["seed"][:count], dtype=np.int64).tobytes())
    sha.update(np.ascontiguousarray(meta["return"][:count], dtype=np.float64).tobytes())
    return sha.hexdigest()
