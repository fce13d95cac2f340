"""The demonstration store: episodes of experience in a Zarr v3 directory, safe to keep for years.

The layout (see docs/store.md) is the diffusion-policy style replay buffer robot-learning
tools already read: per-step arrays under `data/` concatenated along time, per-episode
arrays under `meta/`, and `meta/episode_ends` written last. Publishing `episode_ends` last
is what makes an append atomic: anything a killed writer left beyond the last published
end is ignored by readers and trimmed by the next writer, so a store is never "half
written", only "shorter than the writer hoped".
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from awac_robot import __version__
from awac_robot.spec import SpecMismatch, TaskSpec
from awac_robot.store_lock import LockHeld, WriterLock

FORMAT_NAME = "awac-robot demo store"
FORMAT_VERSION = 1
REWARD_MODES = ("sparse", "dense")
SOURCES = ("human", "scripted", "policy", "online")
IMPORTED_PREFIX = "imported:"
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
}
ENDS = "meta/episode_ends"


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

    data: dict[str, zarr.Array]
    meta: dict[str, zarr.Array]
    ends_array: zarr.Array
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def check_source(source: str) -> None:
    if source in SOURCES or (source.startswith(IMPORTED_PREFIX) and len(source) > len(IMPORTED_PREFIX)):
        return
    raise StoreError(f"unknown episode source {source!r}: use one of {', '.join(SOURCES)} or 'imported:<format>'")


def _width(kind: str | None, spec: TaskSpec) -> tuple[int, ...]:
    return {None: (), "obs": (spec.obs_dim,), "act": (spec.act_dim,)}[kind]


def _compressor(dtype: str) -> BloscCodec:
    typesize = 1 if dtype == "bool" else np.dtype(dtype).itemsize
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=typesize)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class DemoStore:
    """A Zarr demo store opened for reading ("r") or appending ("a", holds the single-writer lock)."""

    def __init__(self, path: Path, group: zarr.Group, mode: str, lock: WriterLock | None) -> None:
        self.path = path
        self.mode = mode
        self._group = group
        self._lock = lock
        attrs = dict(group.attrs)
        try:
            self.spec = TaskSpec.from_dict(attrs["spec"])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"store {path} is corrupt: its task spec attribute is unusable ({exc})") from None
        self.reward_mode: str = attrs["reward_mode"]
        self.attrs = attrs
        self._layout = self._open_layout()

    # -- opening and creating ------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, spec: TaskSpec, reward_mode: str = "sparse") -> DemoStore:
        """Create an empty store at `path` (which must not exist) and open it for appending."""
        path = Path(path)
        if reward_mode not in REWARD_MODES:
            raise StoreError(f"unknown reward mode {reward_mode!r}: use one of {', '.join(REWARD_MODES)}")
        if path.exists():
            raise StoreError(f"{path} already exists: choose a new path, or append to it by opening it")
        # Build in a sibling directory and rename: a create killed halfway leaves no half-store at `path`.
        staging = path.with_name(f".{path.name}.creating-{time.time_ns()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(staging, mode="w-", zarr_format=3)
        group.attrs.update(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "task": spec.name,
                "spec": spec.to_dict(),
                "reward_mode": reward_mode,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "awac_robot_version": __version__,
            }
        )
        for name, (dtype, kind) in DATA_ARRAYS.items():
            width = _width(kind, spec)
            row_bytes = int(np.prod(width, dtype=np.int64)) * np.dtype(dtype).itemsize
            rows = max(1, CHUNK_BYTES // row_bytes)
            group.create_array(
                f"data/{name}", shape=(0, *width), chunks=(rows, *width), dtype=dtype, compressors=_compressor(dtype)
            )
        for name, (dtype, kind) in META_ARRAYS.items():
            width = _width(kind, spec)
            compressors = None if dtype == "str" else _compressor(dtype)
            group.create_array(
                f"meta/{name}", shape=(0, *width), chunks=(META_CHUNK, *width), dtype=dtype, compressors=compressors
            )
        group.create_array(ENDS, shape=(0,), chunks=(META_CHUNK,), dtype="int64", compressors=_compressor("int64"))
        try:
            staging.rename(path)
        except OSError:  # another process created `path` meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"{path} already exists: choose a new path, or append to it by opening it") from None
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> DemoStore:
        """Open an existing store; "a" takes the writer lock and trims what a killed writer left."""
        if mode not in ("r", "a"):
            raise StoreError(f"unknown store mode {mode!r}: use 'r' (read) or 'a' (append)")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        group = _open_root(path, mode)
        lock = None
        if mode == "a":
            lock = WriterLock(path)
            try:
                lock.acquire()
            except LockHeld as held:
                raise StoreError(
                    f"store {path} is already open for writing by {held.holder}; one writer at a time - "
                    "wait for it to finish or stop it"
                ) from None
        try:
            store = cls(path, group, mode, lock)
            if lock is not None:
                store._trim()
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

    def _open_layout(self) -> _Layout:
        # episode_ends is read before the data arrays' shapes: a writer only ever grows data
        # before it publishes, so data read afterwards always covers every published episode.
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
        ends = self._read(ends_array, ENDS, ends_array.shape[0]).astype(np.int64)
        if len(ends) and ends[-1] <= (ends[-2] if len(ends) > 1 else 0):
            # The writer grew episode_ends but was killed before writing the value: not published.
            ends = ends[:-1]
        if np.any(np.diff(ends, prepend=0) <= 0):
            raise StoreError(f"store {self.path} is corrupt: {ENDS} is not strictly increasing")
        steps = int(ends[-1]) if len(ends) else 0
        needed = [(f"data/{name}", array, steps) for name, array in data.items()]
        needed += [(f"meta/{name}", array, len(ends)) for name, array in meta.items()]
        for key, array, rows in [*needed, (ENDS, ends_array, len(ends))]:
            if array.shape[0] < rows:
                raise StoreError(f"store {self.path} is corrupt: {key} has {array.shape[0]} rows, needs {rows}")
            self._check_chunks(key, array, rows)
        return _Layout(data=data, meta=meta, ends_array=ends_array, ends=ends)

    def _array(self, key: str) -> zarr.Array:
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

    def _check_chunks(self, key: str, array: zarr.Array, rows: int) -> None:
        """A deleted chunk file would read back as zeros; refuse instead of handing out invented data."""
        per_chunk = array.chunks[0]
        for index in range(-(-rows // per_chunk)):
            name = Path(key, "c", str(index), *("0" for _ in array.shape[1:]))
            if not (self.path / name).is_file():
                first, last = index * per_chunk, min(rows, (index + 1) * per_chunk) - 1
                raise StoreError(f"store {self.path} is corrupt: {name} (rows {first}-{last} of {key}) is missing")

    def _read(self, array: zarr.Array, key: str, stop: int) -> np.ndarray:
        try:
            return np.asarray(array[:stop])
        except Exception as exc:
            raise StoreError(f"store {self.path}: array {key} is corrupt ({_one_line(exc)})") from None

    def refresh(self) -> None:
        """See episodes a concurrent writer published since this reader opened the store."""
        if self.mode == "r":
            self._group = _open_root(self.path, "r")
            self._layout = self._open_layout()

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

    def append(self, episode: Episode, spec: TaskSpec | None = None) -> None:
        """Add one episode; it becomes visible to readers only once every array holds it.

        Checks come first, so a wrong episode writes nothing. Pass the `spec` of the env the
        episode came from to have the task itself checked, not only the sizes.
        """
        if self._lock is None or not self._lock.held:
            raise StoreError(f"store {self.path} is open read-only (or closed): open it with mode 'a' to append")
        if spec is not None:
            self.spec.check_matches(spec, f"episode for store {self.path}")
        self.check_episode(episode, self.spec, self.reward_mode, f"store {self.path} (task {self.spec.name!r})")
        layout = self._layout
        start, index = self.num_steps, self.num_episodes
        stop = start + episode.length
        steps = {
            "obs": episode.obs[:-1],
            "action": episode.action,
            "reward": episode.reward,
            "terminated": episode.terminated,
            "truncated": episode.truncated,
            "success": episode.success,
        }
        for name, values in steps.items():
            _grow(layout.data[name], stop)
            layout.data[name][start:stop] = values
        per_episode = {
            "source": episode.source,
            "seed": episode.seed,
            "length": episode.length,
            "return": episode.total_return,
            "success": episode.solved,
            "final_obs": episode.obs[-1],
        }
        for name, value in per_episode.items():
            _grow(layout.meta[name], index + 1)
            layout.meta[name][index] = value
        # Publish: only now does the episode exist for a reader.
        layout.ends_array.resize((index + 1,))
        layout.ends_array[index] = stop
        layout.ends = np.append(layout.ends, np.int64(stop))

    @staticmethod
    def check_episode(episode: Episode, spec: TaskSpec, reward_mode: str, where: str) -> None:
        """Raise what `append` would raise for `episode` in a store of `spec` and `reward_mode`.

        Public so that a bulk import can check every episode before it appends the first and
        a refused import leaves the target store as it was (there are no multi-episode
        transactions). `where` names the store in the messages.
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
            self._trim()
            self._lock.release()

    def __enter__(self) -> DemoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def episode_meta(self) -> dict[str, np.ndarray]:
        """Per-episode arrays: source, seed, length, return, success (one entry per published episode)."""
        self.refresh()
        count = self.num_episodes
        names = ("source", "seed", "length", "return", "success")
        meta = {name: self._read(self._layout.meta[name], f"meta/{name}", count) for name in names}
        meta["source"] = _strings(meta["source"])
        return meta

    def load_transitions(self, sources: Sequence[str] | None = None) -> Transitions:
        """All published transitions (or those of episodes from `sources`) as contiguous arrays."""
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
        selected = count
        if sources is not None:
            episode_sources = _strings(self._read(layout.meta["source"], "meta/source", count))
            keep = np.isin(episode_sources, list(sources))
            if count and not keep.any():
                have = ", ".join(sorted(set(episode_sources.tolist())))
                raise StoreError(f"store {self.path} has no episodes from {', '.join(sources)} (it has: {have})")
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


def _open_root(path: Path, mode: str) -> zarr.Group:
    try:
        group = zarr.open_group(path, mode="r" if mode == "r" else "r+", zarr_format=3)
    except Exception:
        raise StoreError(f"{path} is not a demo store (no Zarr v3 group there)") from None
    attrs: dict[str, Any] = dict(group.attrs)
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is a Zarr group but not an awac-robot demo store (attribute 'format' missing)")
    version = attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"store {path} has format version {version!r} (written by awac-robot {attrs.get('awac_robot_version')}); "
            f"this awac-robot {__version__} reads up to version {FORMAT_VERSION}: upgrade awac-robot"
        )
    for key in ("spec", "reward_mode", "task"):
        if key not in attrs:
            raise StoreError(f"store {path} is corrupt: root attribute {key!r} is missing")
    return group


def _grow(array: zarr.Array, rows: int) -> None:
    """Make room for `rows` rows, a chunk at a time: a resize per append would double the write cost."""
    if array.shape[0] < rows:
        _resize_rows(array, max(rows, array.shape[0] + array.chunks[0]))


def _resize_rows(array: zarr.Array, rows: int) -> None:
    if array.shape[0] != rows:
        array.resize((rows, *array.shape[1:]))


def _strings(values: np.ndarray) -> np.ndarray:
    """Zarr hands strings back as numpy's variable-width StringDType; callers get plain fixed-width str."""
    return np.array(values.tolist(), dtype=str)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
