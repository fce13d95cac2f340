"""Where a batch of episodes came from: one `collect`, import or online-run invocation.

A store that mixes scripted, human and online data is only useful if it can say which
episodes came from which demonstrator, with what noise and seeds, written by which version
of which command. Each invocation that writes episodes describes itself once as a `Batch`;
every episode points at its batch (`meta/batch`), and the store keeps the batches in its
root attributes (docs/store.md lists the fields).
"""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from awac_robot import __version__

#: What wrote a batch; "api" is DemoStore.append without a described batch, "unrecorded" a format-1 store's episodes.
BATCH_KINDS = ("collect", "import", "online", "api", "unrecorded")


@dataclass(frozen=True)
class Batch:
    """The provenance of one invocation's episodes, as stored in the root attribute `batches`."""

    kind: str
    demonstrator: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    noise: float | None = None
    perturb: float | None = None
    #: smallest and largest env seed among this store's episodes of the batch (set by the store)
    seed_range: tuple[int, int] | None = None
    awac_robot_version: str = __version__
    command: str = ""
    started_utc: str = ""
    host: str = ""

    def __post_init__(self) -> None:
        if self.kind not in BATCH_KINDS:
            raise ValueError(f"unknown batch kind {self.kind!r}: use one of {', '.join(BATCH_KINDS)}")

    @classmethod
    def now(
        cls,
        kind: str,
        demonstrator: str | None = None,
        arguments: dict[str, Any] | None = None,
        noise: float | None = None,
        perturb: float | None = None,
    ) -> Batch:
        """A batch started by this process now: its command line, host and time are recorded as they are."""
        return cls(
            kind=kind,
            demonstrator=demonstrator,
            arguments=dict(arguments or {}),
            noise=noise,
            perturb=perturb,
            command=command_line(),
            started_utc=datetime.now(UTC).isoformat(timespec="seconds"),
            host=socket.gethostname(),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seed_range"] = list(self.seed_range) if self.seed_range is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Batch:
        """Fields a newer awac-robot added are kept out, not refused: provenance is read, never trusted for data."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if values.get("seed_range") is not None:
            low, high = values["seed_range"]
            values["seed_range"] = (int(low), int(high))
        return cls(**values)

    def with_seeds(self, seeds: list[int]) -> Batch:
        """This batch with `seed_range` covering `seeds` (unknown seeds, -1, do not count)."""
        known = [seed for seed in seeds if seed >= 0]
        if self.seed_range is not None:
            known += list(self.seed_range)
        return replace(self, seed_range=(min(known), max(known)) if known else None)


#: The command the CLI was handed (`awac-robot` and its arguments), when it was called with an argument list.
_cli_command: list[str] | None = None


@contextmanager
def cli_command(arguments: list[str]) -> Iterator[None]:
    """Around the CLI entry point: `main(argv)` run in-process is the command, not the host's sys.argv."""
    global _cli_command
    outer, _cli_command = _cli_command, ["awac-robot", *arguments]
    try:
        yield
    finally:
        _cli_command = outer  # `awac-robot demo` runs other commands through main() in turn


def command_line() -> str:
    """The command as typed, with the program's directory dropped (`awac-robot collect ...`)."""
    if _cli_command is not None:
        return shlex.join(_cli_command)
    if not sys.argv or not sys.argv[0]:
        return ""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
