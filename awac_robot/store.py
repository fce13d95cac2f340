"""The demonstration store: episodes of experience in a Zarr v3 directory, safe to keep for years.

The layout (see docs/store.md) is the diffusion-policy style replay buffer robot-learning
tools already read: per-step arrays under `data/` concatenated along time, per-episode
arrays under `meta/`, and `meta/episode_ends`. An append writes every row first and then
publishes them with one atomic write of the root attributes: the publication record
(episode count, step count and a CRC-32 of `episode_ends`) and the batches' provenance.
Anything a killed writer left beyond the record is ignored by readers and trimmed by the
next writer, so a store is never "half written", only "shorter than the writer hoped".
Because the record carries a checksum, damage to a published `episode_ends` value is
reported, never mistaken for an unpublished tail and trimmed away.
"""

from __future__ import annotations

import errno
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.types import AnyArray

from awac_robot import __version__
from awac_robot.provenance import Batch
from awac_robot.spec import SpecMismatch, TaskSpec
from awac_robot.store_lock import LockHeld, WriterLock

FORMAT_NAME = "awac-robot demo store"
#: 2 added the publication record, per-batch provenance and chunk checksums; 1 is refused with the upgrade command.
FORMAT_VERSION = 2
REWARD_MODES = ("sparse", "dense")
#: Plain "online" is what runs wrote before they tagged their episodes with `online:<run id>`; still valid.
SOURCES = ("human", "scripted", "policy", "online")
IMPORTED_PREFIX = "imported:"
ONLINE_PREFIX = "online:"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
UNKNOWN_SEED = -1
#: Uncompressed bytes per chunk of a per-step array (see docs/store.md for why 1 MiB).
CHUNK_BYTES = 1 << 20
#: Episodes per chunk of a per-episode array: tiny rows, and a chunk is rewritten on every append.
META_CHUNK = 1024


class StoreError(ValueError):
    """A store that cannot be used as asked; the message is one line saying what is wrong."""


# name -> (dtype, trailing width: "obs", "act" or None for one value per row)
DATA_ARRAYS: dict[str, tuple[str, str | None]] = {
    "obs": ("float32", "obs"),
    "action": ("float32", "act"),
    "reward": ("float32", None),
    "terminated": ("bool", None),
    "truncated": ("bool", None),
    "success": ("bool", None),
}
META_ARRAYS: dict[str, tuple[str, str | None]] = {
    "source": ("str", None),
    "seed": ("int64", None),
    "length": ("int64", None),
    "return": ("float64", None),
    "success": ("bool", None),
    "final_obs": ("float32", "obs"),
    "batch": ("int64", None),
}
ENDS = "meta/episode_ends"
#: Root attribute written last by every append: {"episodes": E, "steps": N, "ends_crc32": CRC-32 of episode_ends[:E]}.
PUBLISHED = "published"
#: Root attribute: the provenance of every batch, indexed by meta/batch.
BATCHES = "batches"


@dataclass
class Episode:
    """One episode of T steps. `obs` has T + 1 rows: the last is the observation after the last action."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    source: str
    seed: int = UNKNOWN_SEED

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float32)
        self.action = np.asarray(self.action, dtype=np.float32)
        self.reward = np.asarray(self.reward, dtype=np.float32)
        self.terminated = np.asarray(self.terminated, dtype=bool)
        self.truncated = np.asarray(self.truncated, dtype=bool)
        self.success = np.asarray(self.success, dtype=bool)
        self.seed = int(self.seed)
        steps = len(self.action)
        if self.obs.ndim != 2 or self.action.ndim != 2 or steps == 0:
            raise StoreError(
                f"episode needs obs of shape (T+1, obs_dim) and action of shape (T, act_dim) with T >= 1, "
                f"got obs {self.obs.shape} and action {self.action.shape}"
            )
        if len(self.obs) != steps + 1:
            raise StoreError(
                f"episode has {steps} actions so it needs {steps + 1} observations (incl. the final one), "
                f"got {len(self.obs)}"
            )
        for name in ("reward", "terminated", "truncated", "success"):
            if getattr(self, name).shape != (steps,):
                raise StoreError(f"episode {name} has shape {getattr(self, name).shape}, expected ({steps},)")

    @property
    def length(self) -> int:
        return len(self.action)

    @property
    def total_return(self) -> float:
        return float(self.reward.sum(dtype=np.float64))

    @property
    def solved(self) -> bool:
        """An episode counts as a success if the task was solved at any step (the DAPG/AWAC convention)."""
        return bool(self.success.any())


@dataclass
class Transitions:
    """Contiguous float32 training arrays; `terminal` is 1.0 only where the env terminated (never on truncation)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminal: np.ndarray
    success: np.ndarray
    load_seconds: float = 0.0
    num_episodes: int = 0

    def __len__(self) -> int:
        return len(self.reward)


@dataclass
class _Layout:
    """The opened arrays of a store and its published extent."""

    data: dict[str, AnyArray]
    meta: dict[str, AnyArray]
    ends_array: AnyArray
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ends_crc32: int = 0


def check_source(source: str) -> None:
    if source in SOURCES or (source.startswith(IMPORTED_PREFIX) and len(source) > len(IMPORTED_PREFIX)):
        return
    if source.startswith(ONLINE_PREFIX) and _RUN_ID.fullmatch(source.removeprefix(ONLINE_PREFIX)):
        return
    raise StoreError(
        f"unknown episode source {source!r}: use one of {', '.join(SOURCES)}, 'imported:<format>' "
        "or 'online:<run id>' (run id: letters, digits, '-' and '_')"
    )


def source_matches(source: str, name: str) -> bool:
    """Whether episode source `source` is `name` or a member of it (`online` holds every `online:<run id>`).

    The one rule for naming sources, shared by training's `--sources` and `demos filter --source`.
    """
    return source == name or source.startswith(f"{name}:")


def online_source(run_id: str) -> str:
    """The source of the online episodes a training run appends: it tells runs sharing a store apart."""
    source = f"{ONLINE_PREFIX}{run_id}"
    check_source(source)
    return source


def _width(kind: str | None, spec: TaskSpec) -> tuple[int, ...]:
    return {None: (), "obs": (spec.obs_dim,), "act": (spec.act_dim,)}[kind]


def chunk_codecs(dtype: str) -> list[BloscCodec | Crc32cCodec]:
    """Blosc (not for strings), then a CRC-32C of every chunk: a flipped byte is reported, not decoded as data."""
    if dtype == "str":
        return [Crc32cCodec()]
    typesize = 1 if dtype == "bool" else np.dtype(dtype).itemsize
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=typesize), Crc32cCodec()]


def ends_checksum(ends: np.ndarray, start: int = 0) -> int:
    return zlib.crc32(np.asarray(ends, dtype="<i8").tobytes(), start)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class DemoStore:
    """A Zarr demo store opened for reading ("r") or appending ("a", holds the single-writer lock)."""

    def __init__(self, path: Path, group: zarr.Group, mode: str, lock: WriterLock | None) -> None:
        self.path = path
        self.mode = mode
        self._group = group
        self._lock = lock
        self._current_batch: int | None = None
        self._load()

    def _load(self) -> None:
        """Read the root attributes and the layout they publish, as one snapshot."""
        attrs: dict[str, Any] = dict(self._group.attrs)  # JSON from disk: checked where each value is parsed
        try:
            self.spec = TaskSpec.from_dict(attrs["spec"])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"store {self.path} is corrupt: its task spec attribute is unusable ({exc})") from None
        self.reward_mode: str = attrs["reward_mode"]
        self.attrs = attrs
        try:
            self.batches: list[Batch] = [Batch.from_dict(entry) for entry in attrs[BATCHES]]
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"store {self.path} is corrupt: root attribute {BATCHES!r} is unusable ({exc})") from None
        self._layout = self._open_layout(attrs[PUBLISHED])

    # -- opening and creating ------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, spec: TaskSpec, reward_mode: str = "sparse") -> DemoStore:
        """Create an empty store at `path` (which must not exist) and open it for appending."""
        path = Path(path)
        _move_into_place(_make_empty(path, spec, reward_mode), path)
        return cls.open(path, mode="a")

    @classmethod
    @contextmanager
    def building(
        cls, path: str | Path, spec: TaskSpec, reward_mode: str = "sparse", derived_from: dict[str, Any] | None = None
    ) -> Iterator[DemoStore]:
        """A new store filled inside the `with` block and moved to `path` only when the block completes.

        For writes that must be all-or-nothing (merge, filter, split): an error or a kill
        halfway leaves nothing at `path`, only a hidden staging directory beside it (deleted
        on an error; after a kill, `.NAME.creating-*` can be removed by hand).
        """
        staged = StagedStore(Path(path), spec, reward_mode, derived_from)
        try:
            yield staged.store
        except BaseException:
            staged.discard()
            raise
        staged.commit()

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> DemoStore:
        """Open an existing store; "a" takes the writer lock, checks the chunks it will rewrite and trims leftovers."""
        if mode not in ("r", "a"):
            raise StoreError(f"unknown store mode {mode!r}: use 'r' (read) or 'a' (append)")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        group = _open_root(path, mode)
        lock = acquire_writer_lock(path) if mode == "a" else None
        try:
            store = cls(path, group, mode, lock)
            if lock is not None:
                store._check_tail_chunks()
                store._trim()
        except OSError as exc:
            if lock is not None:
                lock.release()
            raise StoreError(f"store {path} cannot be opened ({_os_reason(exc)}): {_os_fix(exc)}") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return store

    @classmethod
    def open_or_create(cls, path: str | Path, spec: TaskSpec, reward_mode: str = "sparse") -> DemoStore:
        """Append to the store at `path` if it exists (it must be for the same task and reward), else create it."""
        if not Path(path).exists():
            return cls.create(path, spec, reward_mode)
        store = cls.open(path, mode="a")
        try:
            spec.check_matches(store.spec, f"store {path}")
            if store.reward_mode != reward_mode:
                raise SpecMismatch(
                    f"store {path} records {store.reward_mode} rewards, not {reward_mode}: use another store path"
                )
        except BaseException:
            store.close()
            raise
        return store

    def _open_layout(self, record: Any) -> _Layout:
        # The record is read (with the root attributes) before any array: a writer writes every
        # row before it publishes, so the arrays read afterwards cover every published episode.
        count, steps, crc = _check_record(record, self.path)
        ends_array = self._array(ENDS)
        data = {name: self._array(f"data/{name}") for name in DATA_ARRAYS}
        meta = {name: self._array(f"meta/{name}") for name in META_ARRAYS}
        for group, table in (("data", DATA_ARRAYS), ("meta", META_ARRAYS)):
            arrays = data if group == "data" else meta
            for name, (_, kind) in table.items():
                expected = _width(kind, self.spec)
                found = arrays[name].shape[1:]
                if found != expected:
                    raise StoreError(
                        f"store {self.path} is corrupt: {group}/{name} has rows of shape {found}, "
                        f"its task spec needs {expected}"
                    )
        if ends_array.shape[0] < count:
            raise StoreError(
                f"store {self.path} is damaged: {ENDS} has {ends_array.shape[0]} entries, its publication record "
                f"says {count} episodes were published; restore the store from a copy"
            )
        ends = self._read(ends_array, ENDS, count).astype(np.int64)
        if ends_checksum(ends) != crc or (int(ends[-1]) if count else 0) != steps:
            raise StoreError(
                f"store {self.path} is damaged: {ENDS} does not match its publication record ({count} episodes, "
                f"{steps} steps, CRC-32 {crc}), so it was changed after it was written; restore the store "
                "from a copy (nothing was changed)"
            )
        if np.any(np.diff(ends, prepend=0) <= 0):
            raise StoreError(f"store {self.path} is corrupt: {ENDS} is not strictly increasing")
        needed = [(f"data/{name}", array, steps) for name, array in data.items()]
        needed += [(f"meta/{name}", array, count) for name, array in meta.items()]
        for key, array, rows in [*needed, (ENDS, ends_array, count)]:
            if array.shape[0] < rows:
                raise StoreError(f"store {self.path} is corrupt: {key} has {array.shape[0]} rows, needs {rows}")
            self._check_chunks(key, array, rows)
        batch = self._read(meta["batch"], "meta/batch", count)
        if count and (batch.min() < 0 or batch.max() >= len(self.batches)):
            raise StoreError(
                f"store {self.path} is corrupt: meta/batch points outside the {len(self.batches)} recorded batches"
            )
        return _Layout(data=data, meta=meta, ends_array=ends_array, ends=ends, ends_crc32=crc)

    def _array(self, key: str) -> AnyArray:
        try:
            array = self._group[key]
        except KeyError:
            raise StoreError(f"store {self.path} is missing array {key} (damaged or not an awac-robot store)") from None
        except Exception as exc:
            raise StoreError(f"store {self.path}: array {key} is unreadable ({_one_line(exc)})") from None
        if not isinstance(array, zarr.Array):
            raise StoreError(f"store {self.path}: {key} is a group, expected an array")
        # Chunks equal to the fill value are written too, so a missing chunk file always means damage.
        return array.with_config({"write_empty_chunks": True}) if self.mode == "a" else array

    def _check_chunks(self, key: str, array: AnyArray, rows: int) -> None:
        """A deleted chunk file would read back as zeros; refuse instead of handing out invented data."""
        per_chunk = array.chunks[0]
        for index in range(-(-rows // per_chunk)):
            name = Path(key, "c", str(index), *("0" for _ in array.shape[1:]))
            if not (self.path / name).is_file():
                first, last = index * per_chunk, min(rows, (index + 1) * per_chunk) - 1
                raise StoreError(f"store {self.path} is corrupt: {name} (rows {first}-{last} of {key}) is missing")

    def _check_tail_chunks(self) -> None:
        """An append rewrites the last chunk of every array; it must decode before any episode is run."""
        layout = self._layout
        arrays = [(f"data/{name}", array, self.num_steps) for name, array in layout.data.items()]
        arrays += [(f"meta/{name}", array, self.num_episodes) for name, array in layout.meta.items()]
        for key, array, rows in arrays:
            if rows:
                try:
                    array[rows - 1]
                except Exception as exc:
                    raise StoreError(
                        f"store {self.path}: array {key} is corrupt ({_one_line(exc)}); appending would rewrite that "
                        "chunk: restore the store from a copy, or write to a new store (nothing was changed)"
                    ) from None

    def verify(self) -> None:
        """Decode every chunk of every array, one array at a time; StoreError names the first that fails.

        What `demos info` runs before it describes a store: a summary read from the metadata
        alone would vouch for steps that can no longer be read.
        """
        layout = self._layout
        for name, array in layout.data.items():
            self._read(array, f"data/{name}", self.num_steps)
        for name, array in layout.meta.items():
            self._read(array, f"meta/{name}", self.num_episodes)

    def _read(self, array: AnyArray, key: str, stop: int) -> np.ndarray:
        try:
            return np.asarray(array[:stop])
        except Exception as exc:
            raise StoreError(f"store {self.path}: array {key} is corrupt ({_one_line(exc)})") from None

    def refresh(self) -> None:
        """See episodes a concurrent writer published since this reader opened the store."""
        if self.mode == "r":
            self._group = _open_root(self.path, "r")
            self._load()

    # -- properties ------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self._layout.ends)

    @property
    def num_steps(self) -> int:
        return int(self._layout.ends[-1]) if self.num_episodes else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._layout.ends.copy()

    @property
    def store_id(self) -> str:
        """A random id given at creation: copies of one store share it, a merge or filter output gets its own."""
        return str(self.attrs["store_id"])

    def size_on_disk(self) -> int:
        return _disk_bytes(self.path)

    def raw_bytes(self) -> int:
        """Uncompressed bytes of the published data: what the same arrays take as plain numpy."""
        total = 0
        for table, arrays, rows in (
            (DATA_ARRAYS, self._layout.data, self.num_steps),
            (META_ARRAYS, self._layout.meta, self.num_episodes),
        ):
            for name, (dtype, _) in table.items():
                itemsize = 8 if dtype == "str" else np.dtype(dtype).itemsize
                total += rows * int(np.prod(arrays[name].shape[1:], dtype=np.int64)) * itemsize
        return total + 8 * self.num_episodes

    # -- writing ---------------------------------------------------------------------------

    def start_batch(self, batch: Batch) -> int:
        """Describe the episodes appended from now on (one invocation); returns the batch's index.

        The batch is written with its first published episode, so an invocation that keeps
        no episode leaves no trace. Appends without a started batch get one of kind "api".
        """
        self._require_writer()
        self.batches.append(batch)
        self._current_batch = len(self.batches) - 1
        return self._current_batch

    def append(self, episode: Episode, spec: TaskSpec | None = None, batch: int | None = None) -> None:
        """Add one episode; it becomes visible to readers only once every array holds it (see `append_many`)."""
        self.append_many([episode], spec=spec, batch=batch)

    def append_many(self, episodes: Sequence[Episode], spec: TaskSpec | None = None, batch: int | None = None) -> None:
        """Add episodes as one publication: readers see all of them or none, even if the writer dies halfway.

        Every episode is checked before anything is written, so one wrong episode writes
        nothing. Pass the `spec` of the env the episodes came from to have the task itself
        checked, not only the sizes. `batch` (an index from `start_batch`) defaults to the
        current batch.
        """
        self._require_writer()
        if not episodes:
            return
        if spec is not None:
            self.spec.check_matches(spec, f"episode for store {self.path}")
        where = f"store {self.path} (task {self.spec.name!r})"
        for position, episode in enumerate(episodes):
            try:
                self.check_episode(episode, self.spec, self.reward_mode, where)
            except (StoreError, SpecMismatch) as exc:
                if len(episodes) == 1:
                    raise
                raise type(exc)(f"episode {position} of {len(episodes)}: {exc}") from None
        if batch is None:
            batch = self._current_batch if self._current_batch is not None else self.start_batch(Batch.now("api"))
        elif not 0 <= batch < len(self.batches):
            raise StoreError(f"store {self.path} has no batch {batch}: start one with start_batch()")
        try:
            stops = self._write_rows(episodes, batch)
            self._publish(stops, batch, [episode.seed for episode in episodes])
        except Exception as exc:
            raise StoreError(
                f"store {self.path}: writing {len(episodes)} episode(s) failed ({_os_reason(exc)}); none of them "
                f"was published and the {self.num_episodes} published episodes are intact: "
                f"{_os_fix(exc)} and run again"
            ) from None

    def _require_writer(self) -> None:
        if self._lock is None or not self._lock.held:
            raise StoreError(f"store {self.path} is open read-only (or closed): open it with mode 'a' to append")

    def _write_rows(self, episodes: Sequence[Episode], batch: int) -> np.ndarray:
        """Every row of `episodes` past the published ones; returns their episode ends (nothing published yet)."""
        layout = self._layout
        start, index = self.num_steps, self.num_episodes
        stops = start + np.cumsum([episode.length for episode in episodes], dtype=np.int64)
        stop, count = int(stops[-1]), len(episodes)
        steps = {
            "obs": np.concatenate([episode.obs[:-1] for episode in episodes]),
            "action": np.concatenate([episode.action for episode in episodes]),
            "reward": np.concatenate([episode.reward for episode in episodes]),
            "terminated": np.concatenate([episode.terminated for episode in episodes]),
            "truncated": np.concatenate([episode.truncated for episode in episodes]),
            "success": np.concatenate([episode.success for episode in episodes]),
        }
        for name, values in steps.items():
            _grow(layout.data[name], stop)
            layout.data[name][start:stop] = values
        per_episode = {
            "source": np.array([episode.source for episode in episodes]),
            "seed": np.array([episode.seed for episode in episodes], dtype=np.int64),
            "length": np.array([episode.length for episode in episodes], dtype=np.int64),
            "return": np.array([episode.total_return for episode in episodes], dtype=np.float64),
            "success": np.array([episode.solved for episode in episodes], dtype=bool),
            "final_obs": np.stack([episode.obs[-1] for episode in episodes]),
            "batch": np.full(count, batch, dtype=np.int64),
        }
        for name, values in per_episode.items():
            _grow(layout.meta[name], index + count)
            layout.meta[name][index : index + count] = values
        _grow(layout.ends_array, index + count)
        layout.ends_array[index : index + count] = stops
        return stops

    def _publish(self, stops: np.ndarray, batch: int, seeds: list[int]) -> None:
        """One atomic write of the root attributes: only now do the new episodes exist for a reader."""
        layout = self._layout
        ends = np.concatenate([layout.ends, stops])
        crc = ends_checksum(stops, layout.ends_crc32)
        batches = list(self.batches)
        batches[batch] = batches[batch].with_seeds(seeds)
        record = {"episodes": len(ends), "steps": int(ends[-1]), "ends_crc32": crc}
        self._group.update_attributes({PUBLISHED: record, BATCHES: [entry.to_dict() for entry in batches]})
        self.attrs = {**self.attrs, PUBLISHED: record, BATCHES: [entry.to_dict() for entry in batches]}
        self.batches = batches
        layout.ends, layout.ends_crc32 = ends, crc

    @staticmethod
    def check_episode(episode: Episode, spec: TaskSpec, reward_mode: str, where: str) -> None:
        """Raise what `append` would raise for `episode` in a store of `spec` and `reward_mode`.

        Public so that an importer can check every episode before it opens or creates the
        store, and name the file's own episode index in the message. `where` names the store.
        """
        if episode.obs.shape[1] != spec.obs_dim or episode.action.shape[1] != spec.act_dim:
            raise SpecMismatch(
                f"episode has obs_dim {episode.obs.shape[1]} and act_dim {episode.action.shape[1]}, "
                f"{where} needs {spec.obs_dim} and {spec.act_dim}"
            )
        check_source(episode.source)
        for name in ("obs", "action", "reward"):
            if not np.all(np.isfinite(getattr(episode, name))):
                raise StoreError(f"episode {name} contains NaN or inf: refused by {where}")
        low, high = np.asarray(spec.act_low), np.asarray(spec.act_high)
        if np.any(episode.action < low) or np.any(episode.action > high):
            raise StoreError(
                f"episode actions leave the task's bounds [{low.min():g}, {high.max():g}]: record the executed "
                f"(clipped) action, which is what {where} holds"
            )
        ended = episode.terminated[:-1] | episode.truncated[:-1]
        if ended.any():
            step = int(np.argmax(ended))
            raise StoreError(f"episode ends (terminated/truncated) at step {step}, before its last step")
        if reward_mode == "sparse":
            expected = np.where(episode.success, 0.0, -1.0).astype(np.float32)
            if not np.array_equal(episode.reward, expected):
                raise StoreError(
                    f"episode rewards are not sparse (0 where success, -1 elsewhere) but {where} records sparse "
                    "rewards: collect with reward='sparse' or use a dense store"
                )

    def _trim(self) -> None:
        """Drop whatever a killed writer left beyond the published episodes (called under the lock)."""
        layout = self._layout
        for array in layout.data.values():
            _resize_rows(array, self.num_steps)
        for array in layout.meta.values():
            _resize_rows(array, self.num_episodes)
        _resize_rows(layout.ends_array, self.num_episodes)
        for partial in self.path.rglob("*.partial"):  # temporaries of a write cut short by the kill
            partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock is not None and self._lock.held:
            try:
                self._trim()
            except OSError as exc:
                raise StoreError(
                    f"store {self.path}: trimming unpublished rows on close failed ({_os_reason(exc)}); the "
                    f"{self.num_episodes} published episodes are intact and the next writer trims the rest"
                ) from None
            finally:
                self._lock.release()

    def __enter__(self) -> DemoStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        with suppress(StoreError):  # the error in flight is the one to report; a failed trim leaves only ignored rows
            self.close()

    # -- reading ---------------------------------------------------------------------------

    def episode_meta(self) -> dict[str, np.ndarray]:
        """Per-episode arrays: source, seed, length, return, success, batch (one entry per published episode)."""
        self.refresh()
        count = self.num_episodes
        names = ("source", "seed", "length", "return", "success", "batch")
        meta = {name: self._read(self._layout.meta[name], f"meta/{name}", count) for name in names}
        meta["source"] = _strings(meta["source"])
        return meta

    def load_transitions(
        self, sources: Sequence[str] | None = None, episodes: Sequence[int] | np.ndarray | None = None
    ) -> Transitions:
        """All published transitions, or those of the episodes from `sources` and/or at the indices `episodes`.

        The rows keep the store's episode order, whatever order `episodes` lists them in.
        """
        self.refresh()
        started = time.perf_counter()
        layout, steps, count = self._layout, self.num_steps, self.num_episodes
        columns = {name: self._read(layout.data[name], f"data/{name}", steps) for name in DATA_ARRAYS}
        obs = np.ascontiguousarray(columns["obs"], dtype=np.float32)
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        if count:
            next_obs[layout.ends - 1] = self._read(layout.meta["final_obs"], "meta/final_obs", count)
        arrays = {
            "obs": obs,
            "action": columns["action"],
            "reward": columns["reward"],
            "next_obs": next_obs,
            "terminal": columns["terminated"].astype(np.float32),
            "success": columns["success"].astype(bool),
        }
        keep = np.ones(count, dtype=bool)
        if sources is not None:
            episode_sources = _strings(self._read(layout.meta["source"], "meta/source", count))
            keep = np.isin(episode_sources, list(sources))
            if count and not keep.any():
                have = ", ".join(sorted(set(episode_sources.tolist())))
                raise StoreError(f"store {self.path} has no episodes from {', '.join(sources)} (it has: {have})")
        if episodes is not None:
            index = np.asarray(episodes, dtype=np.int64)
            outside = index[(index < 0) | (index >= count)]
            if len(outside):
                raise StoreError(f"store {self.path} has {count} episodes: there is no episode {outside[0]}")
            keep &= np.isin(np.arange(count), index)
        if not keep.all():  # selecting every row would only copy the arrays
            rows = np.repeat(keep, np.diff(layout.ends, prepend=0))
            arrays = {name: value[rows] for name, value in arrays.items()}
        selected = int(keep.sum())
        arrays = {
            name: np.ascontiguousarray(value, dtype=bool if name == "success" else np.float32)
            for name, value in arrays.items()
        }
        return Transitions(**arrays, load_seconds=time.perf_counter() - started, num_episodes=selected)

    def episodes(self) -> Iterator[Episode]:
        """Every published episode, rebuilt with its final observation (reads the store into memory once)."""
        self.refresh()
        layout, steps, count = self._layout, self.num_steps, self.num_episodes
        columns = {name: self._read(layout.data[name], f"data/{name}", steps) for name in DATA_ARRAYS}
        meta = {name: self._read(layout.meta[name], f"meta/{name}", count) for name in META_ARRAYS}
        starts = np.concatenate([[0], layout.ends[:-1]]).astype(np.int64)
        for index, (start, stop) in enumerate(zip(starts, layout.ends, strict=True)):
            part = {name: columns[name][start:stop] for name in DATA_ARRAYS}
            part["obs"] = np.concatenate([part["obs"], meta["final_obs"][index][None]])
            yield Episode(**part, source=str(meta["source"][index]), seed=int(meta["seed"][index]))


def add_episodes(path: str | Path, spec: TaskSpec, reward_mode: str, episodes: Sequence[Episode], batch: Batch) -> None:
    """Add `episodes` to the store at `path` (created if missing) as one publication: all of them or none.

    For imports: a file that fails halfway must not leave its first episodes behind, where a
    rerun would duplicate them. A new store is built aside and moved into place.
    """
    if Path(path).exists():
        with DemoStore.open_or_create(path, spec, reward_mode) as store:
            store.start_batch(batch)
            store.append_many(episodes, spec=spec)
        return
    with DemoStore.building(path, spec, reward_mode) as store:
        store.start_batch(batch)
        store.append_many(episodes, spec=spec)


class StagedStore:
    """A new store built in a hidden sibling directory, then moved to its path with one rename."""

    def __init__(
        self, path: Path, spec: TaskSpec, reward_mode: str = "sparse", derived_from: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self._staging = _make_empty(path, spec, reward_mode, derived_from)
        try:
            self.store = DemoStore.open(self._staging, mode="a")
        except BaseException:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise

    def commit(self) -> None:
        """Close the finished store and move it to its path (which must still not exist)."""
        try:
            self.store.close()
        except BaseException:
            self.discard()
            raise
        _move_into_place(self._staging, self.path)

    def discard(self) -> None:
        with suppress(StoreError):
            self.store.close()
        shutil.rmtree(self._staging, ignore_errors=True)


def acquire_writer_lock(path: Path) -> WriterLock:
    """The store's single-writer lock, or one line saying who holds it or why the store cannot be written."""
    lock = WriterLock(path)
    try:
        lock.acquire()
    except LockHeld as held:
        raise StoreError(
            f"store {path} is already open for writing by {held.holder}; one writer at a time - "
            "wait for it to finish or stop it"
        ) from None
    except OSError as exc:
        raise StoreError(f"store {path} cannot be opened for appending ({_os_reason(exc)}): {_os_fix(exc)}") from None
    return lock


def _make_empty(path: Path, spec: TaskSpec, reward_mode: str, derived_from: dict[str, Any] | None = None) -> Path:
    """An empty store in a hidden sibling of `path`; returns that staging directory."""
    if reward_mode not in REWARD_MODES:
        raise StoreError(f"unknown reward mode {reward_mode!r}: use one of {', '.join(REWARD_MODES)}")
    if path.exists():
        raise StoreError(f"{path} already exists: choose a new path, or append to it by opening it")
    staging = path.with_name(f".{path.name}.creating-{time.time_ns()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(staging, mode="w-", zarr_format=3)
        for name, (dtype, kind) in DATA_ARRAYS.items():
            width = _width(kind, spec)
            row_bytes = int(np.prod(width, dtype=np.int64)) * np.dtype(dtype).itemsize
            rows = max(1, CHUNK_BYTES // row_bytes)
            group.create_array(
                f"data/{name}", shape=(0, *width), chunks=(rows, *width), dtype=dtype, compressors=chunk_codecs(dtype)
            )
        for name, (dtype, kind) in META_ARRAYS.items():
            width = _width(kind, spec)
            group.create_array(
                f"meta/{name}",
                shape=(0, *width),
                chunks=(META_CHUNK, *width),
                dtype=dtype,
                compressors=chunk_codecs(dtype),
            )
        group.create_array(ENDS, shape=(0,), chunks=(META_CHUNK,), dtype="int64", compressors=chunk_codecs("int64"))
        # The root attributes last: a staging directory without them is not a store.
        group.update_attributes(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "task": spec.name,
                "spec": spec.to_dict(),
                "reward_mode": reward_mode,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "awac_robot_version": __version__,
                "store_id": uuid.uuid4().hex,
                "derived_from": derived_from,
                PUBLISHED: {"episodes": 0, "steps": 0, "ends_crc32": ends_checksum(np.zeros(0, dtype=np.int64))},
                BATCHES: [],
            }
        )
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"cannot create store {path} ({_os_reason(exc)}): {_os_fix(exc)}") from None
    return staging


def _move_into_place(staging: Path, path: Path) -> None:
    try:
        if path.exists():
            raise FileExistsError(path)
        staging.rename(path)
    except OSError:  # another process created `path` meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"{path} already exists: choose a new path, or append to it by opening it") from None


def _check_record(record: Any, path: Path) -> tuple[int, int, int]:
    keys = ("episodes", "steps", "ends_crc32")
    if not isinstance(record, dict) or not all(type(record.get(key)) is int and record[key] >= 0 for key in keys):
        raise StoreError(
            f"store {path} is damaged: its publication record (root attribute {PUBLISHED!r}) is unusable "
            f"({str(record)[:80]}); restore the store from a copy"
        )
    return record["episodes"], record["steps"], record["ends_crc32"]


def _open_root(path: Path, mode: str) -> zarr.Group:
    try:
        group = zarr.open_group(path, mode="r" if mode == "r" else "r+", zarr_format=3)
    except Exception:
        raise StoreError(f"{path} is not a demo store (no Zarr v3 group there)") from None
    attrs: dict[str, Any] = dict(group.attrs)
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is a Zarr group but not an awac-robot demo store (attribute 'format' missing)")
    version = attrs.get("format_version")
    if version == 1:
        raise StoreError(
            f"store {path} has format version 1, this awac-robot {__version__} reads version {FORMAT_VERSION}: "
            f"upgrade it once with `awac-robot demos upgrade {path}`"
        )
    if version != FORMAT_VERSION:
        raise StoreError(
            f"store {path} has format version {version!r} (written by awac-robot {attrs.get('awac_robot_version')}); "
            f"this awac-robot {__version__} reads version {FORMAT_VERSION}: upgrade awac-robot"
        )
    for key in ("spec", "reward_mode", "task", "store_id", PUBLISHED, BATCHES):
        if key not in attrs:
            raise StoreError(f"store {path} is corrupt: root attribute {key!r} is missing")
    if attrs["reward_mode"] not in REWARD_MODES:
        raise StoreError(
            f"store {path} is corrupt: root attribute 'reward_mode' is {attrs['reward_mode']!r}, "
            f"not one of {', '.join(REWARD_MODES)}"
        )
    return group


def _grow(array: AnyArray, rows: int) -> None:
    """Make room for `rows` rows, a chunk at a time: a resize per append would double the write cost."""
    if array.shape[0] < rows:
        _resize_rows(array, max(rows, array.shape[0] + array.chunks[0]))


def _resize_rows(array: AnyArray, rows: int) -> None:
    if array.shape[0] != rows:
        array.resize((rows, *array.shape[1:]))


def _strings(values: np.ndarray) -> np.ndarray:
    """Zarr hands strings back as numpy's variable-width StringDType; callers get plain fixed-width str."""
    return np.array(values.tolist(), dtype=str)


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _os_reason(exc: BaseException) -> str:
    """What went wrong, in words the user acts on: disk full, file size limit, not writable, else the error."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return f"no space left: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return f"a file size limit was reached: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
        return f"the store is not writable: {exc.strerror}"
    return _one_line(exc)


def _os_fix(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return "free some disk space"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "raise the file size limit (ulimit -f)"
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
        return "make the store writable, or write to a new store"
    return "check the store with `awac-robot demos info`"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
