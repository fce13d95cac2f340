"""Which store episodes a run pretrains on, named by source, so runs that share a store stay apart.

A token names a source family (`human`, `scripted`, `policy`, `imported`, `online`) or one
member of a family (`imported:dapg`, `online:<run id>`); a family selects all its members, so
`online` selects every run's online episodes, the untagged `online` of older stores included.
The default is every demonstration, that is everything but online experience: a second run on
a store must not pretrain on the first run's exploration unless asked to (`--sources
scripted,online`). Only the episodes the store held when the run began can be pretraining data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from awac_robot.store import IMPORTED_PREFIX, SOURCES, StoreError, check_source, source_matches

FAMILIES = (*SOURCES, IMPORTED_PREFIX.removesuffix(":"))
DEMONSTRATIONS = tuple(family for family in FAMILIES if family != "online")


def token_problem(tokens: Sequence[str]) -> str | None:
    """What is wrong with a list of source tokens, or None (for the config's one-line error)."""
    if not tokens:
        return f"needs at least one source (families: {', '.join(FAMILIES)})"
    for token in tokens:
        if token in FAMILIES:
            continue
        try:
            check_source(token)
        except StoreError:
            return (
                f"has an unknown source {token!r}: use a family ({', '.join(FAMILIES)}), "
                "'imported:<format>' or 'online:<run id>'"
            )
    return None


@dataclass(frozen=True)
class Selection:
    """The pretraining set: which of the store's first episodes, and how the store's sources split."""

    episodes: np.ndarray  # indices into the store, ascending
    steps: int
    used: dict[str, int]  # source -> episodes taken
    left_out: dict[str, int]  # source -> episodes not taken

    def to_dict(self) -> dict[str, Any]:
        return {"episodes": len(self.episodes), "steps": self.steps, "used": self.used, "left_out": self.left_out}

    def describe(self) -> str:
        used = ", ".join(f"{source} {count}" for source, count in self.used.items())
        left = ", ".join(f"{source} {count}" for source, count in self.left_out.items())
        text = f"{len(self.episodes)} episodes ({self.steps} steps): {used}"
        return f"{text}; left out: {left}" if left else text


def select(sources: np.ndarray, lengths: np.ndarray, tokens: Sequence[str], where: str) -> Selection:
    """The episodes among `sources`/`lengths` (the store's first episodes) that `tokens` select.

    A member token (`online:<id>`) that selects nothing is refused as a likely typo; a family
    with no episodes is not (the default names every demonstration family).
    """
    keep = np.zeros(len(sources), dtype=bool)
    for token in tokens:
        hits = np.array([source_matches(str(source), token) for source in sources], dtype=bool)
        if ":" in token and not hits.any():
            raise StoreError(f"{where} has no episodes from source {token!r} (it has: {_have(sources)})")
        keep |= hits
    if not keep.any():
        raise StoreError(f"{where} has no episodes from {', '.join(tokens)} (it has: {_have(sources)}): pick --sources")
    return Selection(
        episodes=np.flatnonzero(keep),
        steps=int(lengths[keep].sum()),
        used=_counts(sources[keep]),
        left_out=_counts(sources[~keep]),
    )


def _counts(sources: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(sources, return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}


def _have(sources: np.ndarray) -> str:
    return ", ".join(_counts(sources)) or "no episodes"
