"""Whole-store operations behind `awac-robot demos`: describe, merge, filter and split stores of one task.

Every operation that writes builds its output aside and moves it into place only when it is
complete (`DemoStore.building`): a corrupt input, a full disk or a kill halfway leaves
nothing at the output path. Episodes keep their provenance batch, seed and source.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.outputs import STORE, check_output_folder
from awac_robot.provenance import Batch, command_line
from awac_robot.rollout import check_seed
from awac_robot.spec import SpecMismatch
from awac_robot.store import ONLINE_PREFIX, DemoStore, Episode, StagedStore, StoreError, source_matches

#: Episodes handed to one `append_many` when copying: one publication per group, not per episode.
COPY_GROUP = 256


@dataclass(frozen=True)
class SourceStats:
    episodes: int
    steps: int
    successes: int
    mean_return: float
    seeds: str
    batches: tuple[int, ...]

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass(frozen=True)
class BatchStats:
    index: int
    batch: Batch
    episodes: int
    steps: int
    successes: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class EpisodeRow:
    index: int
    source: str
    batch: int
    seed: int
    length: int
    total_return: float
    success: bool


@dataclass(frozen=True)
class DimStats:
    """One observation or action entry over every stored step."""

    name: str
    min: float
    max: float
    mean: float
    std: float


@dataclass
class StoreInfo:
    """What `demos info` prints: enough to tell two stores apart, to judge their data and to know its origin."""

    path: Path
    store_id: str
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
    derived_from: dict[str, Any] | None = None
    by_source: dict[str, SourceStats] = field(default_factory=dict)
    batches: list[BatchStats] = field(default_factory=list)
    episode_rows: list[EpisodeRow] | None = None
    obs_stats: list[DimStats] | None = None
    action_stats: list[DimStats] | None = None

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.disk_bytes if self.disk_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["compression_ratio"] = self.compression_ratio
        for name, stats in self.by_source.items():
            data["by_source"][name]["success_rate"] = stats.success_rate
        for entry, batch_stats in zip(data["batches"], self.batches, strict=True):
            entry["batch"] = batch_stats.batch.to_dict()
        return data


def describe(path: str | Path, episodes: bool = False, stats: bool = False) -> StoreInfo:
    """The store's summary, per source and per batch; `episodes` adds one row per episode, `stats` reads every step."""
    store = DemoStore.open(path)
    store.verify()
    meta = store.episode_meta()
    info = StoreInfo(
        path=store.path,
        store_id=store.store_id,
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
        derived_from=store.attrs.get("derived_from"),
    )
    for source in sorted(set(meta["source"].tolist())):
        mine = meta["source"] == source
        seeds = {int(seed) for seed in meta["seed"][mine] if seed >= 0}
        info.by_source[source] = SourceStats(
            episodes=int(mine.sum()),
            steps=int(meta["length"][mine].sum()),
            successes=int(meta["success"][mine].sum()),
            mean_return=float(meta["return"][mine].mean()),
            seeds=_seed_text(seeds),
            batches=tuple(sorted({int(b) for b in meta["batch"][mine]})),
        )
    for index, batch in enumerate(store.batches):
        mine = meta["batch"] == index
        info.batches.append(
            BatchStats(
                index=index,
                batch=batch,
                episodes=int(mine.sum()),
                steps=int(meta["length"][mine].sum()),
                successes=int(meta["success"][mine].sum()),
                sources=tuple(sorted(set(meta["source"][mine].tolist()))),
            )
        )
    if episodes:
        info.episode_rows = [
            EpisodeRow(
                index=index,
                source=str(meta["source"][index]),
                batch=int(meta["batch"][index]),
                seed=int(meta["seed"][index]),
                length=int(meta["length"][index]),
                total_return=float(meta["return"][index]),
                success=bool(meta["success"][index]),
            )
            for index in range(store.num_episodes)
        ]
    if stats and store.num_steps:
        data = store.load_transitions()
        info.obs_stats = _dim_stats(data.obs, store.spec.obs_names, "obs")
        info.action_stats = _dim_stats(data.action, store.spec.act_names, "act")
    return info


def _dim_stats(values: np.ndarray, names: Sequence[str], prefix: str) -> list[DimStats]:
    values = values.astype(np.float64)
    labels = list(names) or [f"{prefix}[{i}]" for i in range(values.shape[1])]
    columns = zip(labels, values.min(0), values.max(0), values.mean(0), values.std(0), strict=True)
    return [DimStats(str(name), float(lo), float(hi), float(mean), float(std)) for name, lo, hi, mean, std in columns]


def _seed_text(seeds: set[int]) -> str:
    if not seeds:
        return "-"
    return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(min(seeds))


def merge_stores(inputs: Sequence[str | Path], out: str | Path) -> int:
    """Copy every episode of `inputs` (all of one task and reward mode) into a new store `out`; returns the count.

    A store given twice, or two copies of one store, is refused: the output would hold
    their episodes twice, doubling their weight in training with nothing to tell them apart.
    """
    check_output_folder(Path(out), "--out", STORE)
    stores = [DemoStore.open(path) for path in inputs]
    first = stores[0]
    for position, other in enumerate(stores[1:], start=1):
        for earlier in stores[:position]:
            if os.path.samefile(earlier.path, other.path):
                raise StoreError(
                    f"store {other.path} is given twice (also as {earlier.path}): merging a store with itself would "
                    "duplicate every episode; list it once"
                )
            if earlier.store_id == other.store_id:
                raise StoreError(
                    f"stores {earlier.path} and {other.path} are copies of one store (id {other.store_id}): merging "
                    "them would duplicate the episodes they share; `demos filter` one of them down to its own first"
                )
        first.spec.check_matches(other.spec, f"store {other.path}")
        if other.reward_mode != first.reward_mode:
            raise SpecMismatch(
                f"store {other.path} records {other.reward_mode} rewards and {first.path} {first.reward_mode}: "
                "only stores with the same reward mode can be merged"
            )
    derived = _derivation("merge", stores)
    with DemoStore.building(out, first.spec, first.reward_mode, derived_from=derived) as merged:
        for store in stores:
            copy_episodes(store, merged, np.ones(store.num_episodes, dtype=bool))
        return merged.num_episodes


@dataclass(frozen=True)
class EpisodeFilter:
    """Which episodes `demos filter` keeps: all criteria given must hold (or, with `exclude`, not all)."""

    #: sources by name: a family holds its members (`online`: every run; `imported`: every format)
    sources: tuple[str, ...] = ()
    #: online runs by id: source "online:<run_id>"
    runs: tuple[str, ...] = ()
    start: int | None = None
    stop: int | None = None
    success: bool | None = None
    exclude: bool = False

    def select(self, meta: dict[str, np.ndarray], path: Path) -> np.ndarray:
        """A mask over the store's episodes; names that match no episode are refused (a typo must not keep all)."""
        sources, count = meta["source"], len(meta["source"])
        keep = np.ones(count, dtype=bool)
        if self.sources or self.runs:
            wanted = np.zeros(count, dtype=bool)
            names = [
                (name, np.array([source_matches(str(s), name) for s in sources], dtype=bool)) for name in self.sources
            ]
            names += [(f"{ONLINE_PREFIX}{run}", sources == f"{ONLINE_PREFIX}{run}") for run in self.runs]
            for name, matches in names:
                if not matches.any():
                    have = ", ".join(sorted(set(sources.tolist()))) or "none"
                    raise StoreError(f"store {path} has no episodes from {name!r} (its sources: {have})")
                wanted |= matches
            keep &= wanted
        if self.start is not None or self.stop is not None:
            start, stop = self.start or 0, count if self.stop is None else self.stop
            if not 0 <= start < stop <= count:
                raise StoreError(
                    f"episode range {start}:{stop} is not inside store {path}, which has episodes 0:{count}"
                )
            index = np.arange(count)
            keep &= (index >= start) & (index < stop)
        if self.success is not None:
            keep &= meta["success"] == self.success
        return ~keep if self.exclude else keep


@dataclass(frozen=True)
class FilterSummary:
    kept: int
    total: int


def filter_store(path: str | Path, out: str | Path, selection: EpisodeFilter) -> FilterSummary:
    """Copy the episodes `selection` keeps into a new store `out` (refused if it would be empty)."""
    check_output_folder(Path(out), "--out", STORE)
    store = DemoStore.open(path)
    keep = selection.select(store.episode_meta(), store.path)
    if not keep.any():
        raise StoreError(f"no episode of store {store.path} passes the filter: nothing written")
    derived = _derivation("filter", [store], filter=asdict(selection))
    with DemoStore.building(out, store.spec, store.reward_mode, derived_from=derived) as filtered:
        copy_episodes(store, filtered, keep)
    return FilterSummary(kept=int(keep.sum()), total=len(keep))


@dataclass(frozen=True)
class SplitSummary:
    train: int
    val: int


def split_store(
    path: str | Path, val_fraction: float, seed: int, out_train: str | Path, out_val: str | Path
) -> SplitSummary:
    """Split a store by episode into new train and validation stores; both are written or neither."""
    if not 0.0 < val_fraction < 1.0:
        raise StoreError(f"--val is the fraction of episodes for validation and must be in (0, 1), got {val_fraction}")
    check_seed(seed)
    check_output_folder(Path(out_train), "--out-train", STORE)
    check_output_folder(Path(out_val), "--out-val", STORE)
    if Path(out_train).absolute() == Path(out_val).absolute():
        raise StoreError(f"--out-train and --out-val are both {out_train}: give two new paths")
    store = DemoStore.open(path)
    count = store.num_episodes
    if count < 2:
        raise StoreError(f"store {store.path} has {count} episode(s): a split needs at least 2")
    val_count = min(count - 1, max(1, round(val_fraction * count)))
    val = np.zeros(count, dtype=bool)
    val[np.random.default_rng(seed).permutation(count)[:val_count]] = True
    parts = []
    try:
        for name, out, keep in (("train", out_train, ~val), ("val", out_val, val)):
            derived = _derivation("split", [store], part=name, val_fraction=val_fraction, seed=seed)
            parts.append(StagedStore(Path(out), store.spec, store.reward_mode, derived))
            copy_episodes(store, parts[-1].store, keep)
    except BaseException:
        for part in parts:
            part.discard()
        raise
    train, validation = parts
    try:
        train.commit()
    except BaseException:
        validation.discard()
        raise
    try:
        validation.commit()
    except BaseException:
        shutil.rmtree(out_train)  # the train store this call just moved into place: all or nothing
        raise
    return SplitSummary(train=count - val_count, val=val_count)


def copy_episodes(source: DemoStore, target: DemoStore, keep: np.ndarray) -> None:
    """Append the kept episodes of `source` to `target`, each under a copy of its provenance batch."""
    meta = source.episode_meta()
    mapping: dict[int, int] = {}
    group: list[Episode] = []
    group_batch = -1
    for index, episode in enumerate(itertools.islice(source.episodes(), len(keep))):
        if not keep[index]:
            continue
        batch = int(meta["batch"][index])
        if batch not in mapping:
            # seed_range is recomputed from the episodes this store receives
            mapping[batch] = target.start_batch(replace(source.batches[batch], seed_range=None))
        if group and (mapping[batch] != group_batch or len(group) >= COPY_GROUP):
            target.append_many(group, batch=group_batch)
            group = []
        group.append(episode)
        group_batch = mapping[batch]
    if group:
        target.append_many(group, batch=group_batch)


def _derivation(operation: str, inputs: Sequence[DemoStore], **arguments: Any) -> dict[str, Any]:
    """The `derived_from` attribute of a store made from others: what was done to which stores, by which command."""
    return {
        "operation": operation,
        "arguments": arguments,
        "inputs": [
            {"path": str(store.path.resolve()), "store_id": store.store_id, "episodes": store.num_episodes}
            for store in inputs
        ],
        "command": command_line(),
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
