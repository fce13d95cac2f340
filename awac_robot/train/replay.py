"""The replay: offline transitions first, online ones appended after, in one packed tensor.

Each row is [obs | action | reward | next_obs | terminal | imitate], so drawing a batch is one
random index tensor and one `index_select` -- no Python work per sample. Rows below
`offline_size` came from the store before the run started; that split is what the
offline/online mixing option samples from. `imitate` says whether the actor may be fitted to
the row (`imitate_online: solved`): an online episode's rows are added unmarked and marked once
the episode has ended solved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from awac_robot.train.awac import Batch


class Replay:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int) -> None:
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 3
        self.data = torch.empty(max(capacity, 1), self.width)
        self.size = 0
        self.offline_size = 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(
        self,
        obs: np.ndarray | torch.Tensor,
        action: np.ndarray | torch.Tensor,
        reward: np.ndarray | torch.Tensor,
        next_obs: np.ndarray | torch.Tensor,
        terminal: np.ndarray | torch.Tensor,
        imitate: np.ndarray | torch.Tensor,
    ) -> None:
        """Append rows (each argument has a leading batch axis)."""
        columns = (obs, action, reward, next_obs, terminal, imitate)
        parts = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in columns]
        n = parts[0].shape[0]
        parts = [p.reshape(n, -1) for p in parts]
        if self.size + n > self.data.shape[0]:
            grown = torch.empty(max(2 * self.data.shape[0], self.size + n), self.width)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        torch.cat(parts, 1, out=self.data[self.size : self.size + n])
        self.size += n

    def add_step(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, done: bool) -> None:
        """Append one online step, not imitated until `imitate_last` marks its episode."""
        self.add(obs[None], action[None], np.array([reward]), next_obs[None], np.array([float(done)]), np.zeros(1))

    def add_transitions(self, transitions: Any, imitate: np.ndarray | None = None) -> None:
        """Append everything in `transitions` (anything with obs/action/reward/next_obs/terminal arrays).

        `imitate`: one flag per row; default every row.
        """
        t = transitions
        flags = np.ones(len(t.reward)) if imitate is None else imitate
        if len(flags) != len(t.reward):
            raise ValueError(f"{len(flags)} imitate flags for {len(t.reward)} transitions")
        self.add(t.obs, t.action, t.reward, t.next_obs, t.terminal, flags)

    def imitate_last(self, rows: int) -> None:
        """The last `rows` rows (an online episode that ended solved) may be imitated."""
        if not 0 <= rows <= self.size - self.offline_size:
            raise ValueError(f"cannot mark the last {rows} rows of {self.size - self.offline_size} online ones")
        self.data[self.size - rows : self.size, -1] = 1.0

    def mark_offline(self, rows: int | None = None) -> None:
        """The first `rows` rows (default: everything added so far) are the offline data."""
        rows = self.size if rows is None else rows
        if not 0 <= rows <= self.size:
            raise ValueError(f"cannot mark {rows} offline rows in a replay of {self.size}")
        self.offline_size = rows

    def sample(self, batch_size: int, offline_fraction: float | None = None) -> Batch:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay")
        online = self.size - self.offline_size
        if offline_fraction is None or online == 0 or self.offline_size == 0:
            index = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        else:
            n_off = round(offline_fraction * batch_size)
            index = torch.cat(
                [
                    torch.randint(0, self.offline_size, (n_off,), generator=self.generator),
                    torch.randint(self.offline_size, self.size, (batch_size - n_off,), generator=self.generator),
                ]
            )
        rows = self.data.index_select(0, index)
        o, a = self.obs_dim, self.act_dim
        return Batch(
            obs=rows[:, :o],
            action=rows[:, o : o + a],
            reward=rows[:, o + a],
            next_obs=rows[:, o + a + 1 : 2 * o + a + 1],
            terminal=rows[:, -2],
            imitate=rows[:, -1] > 0.5,
        )

    def offline_obs(self) -> torch.Tensor:
        return self.data[: self.offline_size, : self.obs_dim]

    @classmethod
    def from_offline(cls, obs_dim: int, act_dim: int, transitions: Any, capacity: int, seed: int) -> Replay:
        """A replay holding `transitions` (anything with obs/action/reward/next_obs/terminal arrays) as offline data."""
        replay = cls(obs_dim, act_dim, capacity, seed)
        replay.add_transitions(transitions)
        replay.mark_offline()
        return replay
