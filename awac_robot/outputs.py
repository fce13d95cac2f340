"""The one check every command runs on a path it is about to write, before any work starts.

A command that writes never overwrites what it did not write itself: an existing file is
replaced only when it is the kind of file the command writes (an awac-robot ONNX policy for
export, recognised by content) or when the user says `--force`. Nothing is written into a
folder that belongs to another stage - a demo store (a Zarr group), a training run folder or
a deployment's run folder - since each of those is read back by code that trusts its layout
(a file dropped among a run's checkpoints is what `--resume` falls back over). And a folder
that cannot be written is named in one line before hours of work, not in a traceback after.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path


class OutputError(ValueError):
    """An output path a command must not or cannot write; the message names it and what to do instead."""


STORE, RUN, DEPLOY_RUN = "a demo store (Zarr)", "a training run folder", "a deploy run folder"
#: What marks a folder as another stage's (checked on the output path and on every folder above it):
#: any one of each kind's sets of files, all of that set present.
FOLDER_KINDS: dict[str, tuple[tuple[str, ...], ...]] = {
    STORE: (("zarr.json",), (".zgroup",)),
    RUN: (("metrics.jsonl", "config.yaml"), ("metrics.jsonl", "checkpoints")),
    DEPLOY_RUN: (("supervisor.log",), ("robot.runlog",), ("controller.runlog",)),
}


def folder_kind(path: Path) -> str | None:
    """Which stage's folder `path` is, by the files each kind always holds; None for an ordinary folder."""
    if not path.is_dir():
        return None
    for kind, marker_sets in FOLDER_KINDS.items():
        if any(all((path / marker).exists() for marker in markers) for markers in marker_sets):
            return kind
    return None


def check_output_file(
    path: Path,
    flag: str,
    what: str,
    suffixes: Sequence[str] = (),
    ours: Callable[[Path], bool] | None = None,
    force: bool | None = None,
) -> Path:
    """Refuse (OutputError, one line) a file output that would overwrite, land in another stage's folder, or fail.

    `ours(path)` recognises an existing file this command wrote (it may be replaced); `force`
    None means the command offers no --force, False that it was not given.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{flag} {path}: a {what} must end in {' or '.join(suffixes)}")
    _check_not_inside(path.parent, path, flag)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: give the name of the {what} to write")
    replaceable = ours is not None and path.is_file() and ours(path)
    if (path.exists() or path.is_symlink()) and not replaceable and not force:
        fix = "choose another path, or pass --force to replace it" if force is not None else "choose another path"
        raise OutputError(f"{flag} {path} exists and is not a {what} this command wrote: {fix}")
    _check_writable(path.parent, path, flag)
    return path


def check_output_folder(path: Path, flag: str, kind: str | None) -> Path:
    """Refuse a folder output that is a file, another stage's folder or inside one, or cannot be written.

    `kind` is what the command itself makes of the folder (STORE, RUN, DEPLOY_RUN, or None for
    an ordinary folder): a folder already of that kind is the command's business (a store
    to append to, a run to resume), any other kind is refused.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: choose another path")
    found = folder_kind(path)
    if found is not None and found != kind:
        raise OutputError(f"{flag} {path} is {found}: choose another path")
    _check_not_inside(path.parent, path, flag)
    _check_writable(path if path.exists() else path.parent, path, flag)
    return path


def _check_not_inside(folder: Path, path: Path, flag: str) -> None:
    for parent in (folder.absolute(), *folder.absolute().parents):
        found = folder_kind(parent)
        if found is not None:
            raise OutputError(f"{flag} {path} is inside {parent}, {found}: write it elsewhere")


def _check_writable(folder: Path, path: Path, flag: str) -> None:
    """The nearest existing folder at or above `folder` must be a folder this process can create files in."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder: choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "permission denied"
        raise OutputError(f"{flag} {path}: cannot write in {existing} ({why}): choose another path")
