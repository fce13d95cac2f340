"""Per-row discounted returns of whole episodes: the floor `target_floor: return` puts under Bellman targets.

With sparse -1/0 rewards a backup carries a success one step further back per sweep of the
replay, so for thousands of updates Q near the start of a solved episode knows nothing of how
it ended, and the advantages that weight the actor's likelihood are noise. The episode itself
already says what acting as its data did achieved from every row on: its discounted return.
Flooring each target at that return (the Monte-Carlo lower bound of Cal-QL, Nakamoto et al.
2023) hands the critic the whole episode's outcome at once and leaves every target that is
already higher alone.

`n_step_rows` serves the other way of carrying a sparse success back faster, n-step targets:
each row's target sums the next n rewards of its own episode before it bootstraps, so one
backup moves a success n steps instead of one, and averages over what the data did rather than
taking the best of it as the floor does.
"""

from __future__ import annotations

import numpy as np

#: The floor of a row whose episode has not ended yet: no floor.
UNKNOWN = -np.inf


def episode_returns(reward: np.ndarray, terminal: np.ndarray, discount: float) -> np.ndarray:
    """The discounted return from each row of one episode on, in the reward units the critic learns.

    An episode that ended in a terminal state earns nothing after it. A truncated one is taken
    to go on earning its last reward forever (a door held open stays solved), so a failed
    episode's floor is r_min / (1 - discount), below every target, and a truncated success's
    last rows keep the value of staying solved. Needs discount < 1 (else that tail is infinite).
    """
    if not 0 < discount < 1:
        raise ValueError(f"episode returns need a discount in (0, 1), got {discount}")
    n = len(reward)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    ahead = 0.0 if terminal[-1] > 0.5 else float(reward[-1]) / (1.0 - discount)
    for t in range(n - 1, -1, -1):
        ahead = float(reward[t]) + discount * (1.0 - float(terminal[t])) * ahead
        out[t] = ahead
    return out.astype(np.float32)


def returns_of_episodes(reward: np.ndarray, terminal: np.ndarray, lengths: np.ndarray, discount: float) -> np.ndarray:
    """`episode_returns` of consecutive episodes of the given lengths, packed row after row."""
    if int(np.sum(lengths)) != len(reward):
        raise ValueError(f"episode lengths sum to {int(np.sum(lengths))}, but there are {len(reward)} rows")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    parts = [episode_returns(reward[a:b], terminal[a:b], discount) for a, b in zip(starts, ends, strict=True)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def n_step_rows(lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive episodes of these lengths, each row's look-ahead: (the row it bootstraps from, steps).

    Row t of an episode of length L looks k = min(n, L - t) steps ahead and bootstraps from the
    next observation (and terminal flag) of row t + k - 1: an episode's last rows look only as far
    as its end, and never into the next episode.
    """
    if n < 1:
        raise ValueError(f"n-step look-ahead needs n >= 1, got {n}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(lengths < 0):
        raise ValueError(f"episode lengths must be >= 0, got {lengths.min()}")
    ends = np.repeat(np.cumsum(lengths), lengths)  # per row: one past its episode's last row
    rows = np.arange(len(ends), dtype=np.int64)
    steps = np.minimum(n, ends - rows)
    return rows + steps - 1, steps
