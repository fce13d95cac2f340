"""The replay: offline transitions first, online ones appended after, in one packed tensor.

Each row is [obs | action | reward | next_obs | terminal | imitate | floor], so drawing a batch
is one random index tensor and one `index_select` -- no Python work per sample. Rows below
`offline_size` came from the store before the run started; that split is what the
offline/online mixing option samples from. `imitate` says whether the actor may be fitted to
the row (`imitate_online: solved`) and `floor` is the row's discounted return to its episode's
end (`target_floor: return`, train/returns.py): an online episode's rows are added unmarked and
with no floor, and get both once the episode has ended.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from awac_robot.train.awac import Batch
from awac_robot.train.returns import UNKNOWN


class Replay:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int) -> None:
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 4
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
        floor: np.ndarray | torch.Tensor,
    ) -> None:
        """Append rows (each argument has a leading batch axis)."""
        columns = (obs, action, reward, next_obs, terminal, imitate, floor)
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
        """Append one online step, neither imitated nor floored until `end_episode` marks its episode."""
        row = (obs[None], action[None], np.array([reward]), next_obs[None], np.array([float(done)]))
        self.add(*row, np.zeros(1), np.full(1, UNKNOWN))

    def add_transitions(
        self, transitions: Any, imitate: np.ndarray | None = None, floor: np.ndarray | None = None
    ) -> None:
        """Append everything in `transitions` (anything with obs/action/reward/next_obs/terminal arrays).

        `imitate`: one flag per row, default every row; `floor`: one return per row, default none.
        """
        t, n = transitions, len(transitions.reward)
        flags = np.ones(n) if imitate is None else imitate
        floors = np.full(n, UNKNOWN) if floor is None else floor
        for name, column in (("imitate flags", flags), ("floors", floors)):
            if len(column) != n:
                raise ValueError(f"{len(column)} {name} for {n} transitions")
        self.add(t.obs, t.action, t.reward, t.next_obs, t.terminal, flags, floors)

    def end_episode(self, solved: bool, floor: np.ndarray) -> None:
        """The last len(floor) rows are an online episode that has ended: give them their floors, imitate if solved."""
        rows = len(floor)
        if not 0 <= rows <= self.size - self.offline_size:
            raise ValueError(f"cannot mark the last {rows} rows of {self.size - self.offline_size} online ones")
        if solved:
            self.data[self.size - rows : self.size, -2] = 1.0
        self.data[self.size - rows : self.size, -1] = torch.as_tensor(floor, dtype=torch.float32)

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
            terminal=rows[:, -3],
            imitate=rows[:, -2] > 0.5,
            floor=rows[:, -1],
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
