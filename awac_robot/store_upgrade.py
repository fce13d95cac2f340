"""Upgrade a format-1 demo store in place to the current format (`awac-robot demos upgrade`).

Format 1 published an episode by writing its `meta/episode_ends` value last and took an
entry that was not greater than the one before as a publish cut short by a kill. Format 2
publishes with a checksummed record in the root attributes and records provenance per batch.
The upgrade reads the store the way format 1 did, adds `meta/batch` (every episode in one
batch of kind "unrecorded") and writes the record, the batch and the new version in one
atomic write of the root attributes, last: a kill before it leaves a format-1 store that
the upgrade can run on again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.types import AnyArray

from awac_robot.provenance import Batch, command_line
from awac_robot.store import (
    BATCHES,
    ENDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_CHUNK,
    PUBLISHED,
    DemoStore,
    StoreError,
    acquire_writer_lock,
    chunk_codecs,
    ends_checksum,
)

#: Arrays a format-1 store has, each with the rows it must hold: "steps" or "episodes".
_FORMAT_1_ARRAYS = {
    **{f"data/{name}": "steps" for name in ("obs", "action", "reward", "terminated", "truncated", "success")},
    **{f"meta/{name}": "episodes" for name in ("source", "seed", "length", "return", "success", "final_obs")},
}


@dataclass(frozen=True)
class UpgradeSummary:
    path: Path
    episodes: int
    steps: int
    from_version: int
    to_version: int


def upgrade_store(path: str | Path) -> UpgradeSummary:
    """Bring the format-1 store at `path` to the current format; nothing is changed if it is refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    try:
        root = zarr.open_group(path, mode="r+", zarr_format=3)
    except Exception:
        raise StoreError(f"{path} is not a demo store (no Zarr v3 group there)") from None
    attrs = dict(root.attrs)
    version = attrs.get("format_version")
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is a Zarr group but not an awac-robot demo store (attribute 'format' missing)")
    if version == FORMAT_VERSION:
        raise StoreError(f"store {path} already has format version {FORMAT_VERSION}: nothing to upgrade")
    if version != 1:
        raise StoreError(f"store {path} has format version {version!r}: only version 1 can be upgraded")
    lock = acquire_writer_lock(path)
    try:
        ends = _format_1_ends(root, path)
        episodes, steps = len(ends), int(ends[-1]) if len(ends) else 0
        seeds = np.asarray(_format_1_array(root, "meta/seed", path)[:episodes]).tolist()
        legacy = Batch(
            kind="unrecorded",
            arguments={"upgraded_from_format": 1, "upgraded_by": command_line()},
            awac_robot_version=str(attrs.get("awac_robot_version", "")),
            started_utc=str(attrs.get("created_utc", "")),
        ).with_seeds(seeds)
        # overwrite: an upgrade killed after this step left the array of a first attempt
        batch = root.create_array(
            "meta/batch",
            shape=(episodes,),
            chunks=(META_CHUNK,),
            dtype="int64",
            compressors=chunk_codecs("int64"),
            overwrite=True,
            config={"write_empty_chunks": True},
        )
        batch[:] = 0
        root.update_attributes(
            {
                "format_version": FORMAT_VERSION,
                "store_id": uuid.uuid4().hex,
                "derived_from": None,
                PUBLISHED: {"episodes": episodes, "steps": steps, "ends_crc32": ends_checksum(ends)},
                BATCHES: [legacy.to_dict()] if episodes else [],
            }
        )
    finally:
        lock.release()
    DemoStore.open(path, mode="a").close()  # opens as the new format and trims what format 1 left unpublished
    return UpgradeSummary(path, episodes, steps, from_version=1, to_version=FORMAT_VERSION)


def _format_1_ends(root: zarr.Group, path: Path) -> np.ndarray:
    """The published episode ends as format 1 defined them, after checking every array covers them."""
    ends = np.asarray(_format_1_array(root, ENDS, path)[:], dtype=np.int64)
    if len(ends) and ends[-1] <= (ends[-2] if len(ends) > 1 else 0):
        ends = ends[:-1]  # format 1's unpublished tail: grown, value never written
    if np.any(np.diff(ends, prepend=0) <= 0):
        raise StoreError(f"store {path} is corrupt: {ENDS} is not strictly increasing; not upgraded")
    rows = {"steps": int(ends[-1]) if len(ends) else 0, "episodes": len(ends)}
    for key, kind in _FORMAT_1_ARRAYS.items():
        have = _format_1_array(root, key, path).shape[0]
        if have < rows[kind]:
            raise StoreError(f"store {path} is corrupt: {key} has {have} rows, needs {rows[kind]}")
    return ends


def _format_1_array(root: zarr.Group, key: str, path: Path) -> AnyArray:
    try:
        node = root[key]
    except KeyError:
        raise StoreError(f"store {path} is missing array {key!r} (damaged); not upgraded") from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"store {path}: {key} is a group, expected an array (damaged); not upgraded")
    return node
