"""The replay: offline transitions first, online ones appended after, in one packed tensor.

Each row is [obs | action | reward | next_obs | terminal | steps | imitate | floor], so drawing
a batch is one random index tensor and one `index_select` -- no Python work per sample. Rows
below `offline_size` came from the store before the run started; that split is what the
offline/online mixing option samples from. `imitate` says whether the actor may be fitted to
the row (`imitate_online: solved`) and `floor` is the row's discounted return to its episode's
end (`target_floor: return`, train/returns.py): an online episode's rows are added unmarked and
with no floor, and get both once the episode has ended. Rows are one-step transitions
(`steps` 1) until `look_ahead` turns whole episodes into n-step ones (`n_step`): `reward` is
then the discounted sum of the next `steps` rewards and `next_obs`, `terminal` those of the
row `steps - 1` ahead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from awac_robot.train.awac import Batch
from awac_robot.train.returns import UNKNOWN, n_step_rows


class Replay:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int) -> None:
        self.obs_dim, self.act_dim = obs_dim, act_dim
        # Column offsets of the scalar columns after [obs | action]; next_obs sits between reward and terminal.
        self._reward = obs_dim + act_dim
        self._next_obs = slice(self._reward + 1, self._reward + 1 + obs_dim)
        self._terminal, self._steps, self._imitate, self._floor = (self._reward + 1 + obs_dim + i for i in range(4))
        self.width = self._floor + 1
        self.data = torch.empty(max(capacity, 1), self.width)
        self.size = 0
        self.offline_size = 0
        self.reward_range = torch.tensor([math.inf, -math.inf])
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
        columns = (obs, action, reward, next_obs, terminal, np.ones(len(reward)), imitate, floor)
        parts = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in columns]
        n = parts[0].shape[0]
        parts = [p.reshape(n, -1) for p in parts]
        if self.size + n > self.data.shape[0]:
            grown = torch.empty(max(2 * self.data.shape[0], self.size + n), self.width)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        torch.cat(parts, 1, out=self.data[self.size : self.size + n])
        if n > 0:
            low, high = torch.aminmax(parts[2])
            self.reward_range = torch.stack([self.reward_range[0].minimum(low), self.reward_range[1].maximum(high)])
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
            self.data[self.size - rows : self.size, self._imitate] = 1.0
        self.data[self.size - rows : self.size, self._floor] = torch.as_tensor(floor, dtype=torch.float32)

    def look_ahead(self, lengths: np.ndarray, n: int, discount: float) -> None:
        """Make the last sum(lengths) rows, whole one-step episodes of these lengths, n-step rows (see the module).

        Rewards are summed as stored, before the learner's reward scale and offset (it applies those
        per step from `steps`). Call it once per row: a second call would sum sums.
        """
        count = int(np.sum(lengths))
        if not 0 <= count <= self.size:
            raise ValueError(f"cannot look ahead over {count} rows of a replay of {self.size}")
        if n == 1 or count == 0:
            return
        last, steps = (torch.as_tensor(x) for x in n_step_rows(lengths, n))
        block = self.data[self.size - count : self.size]
        if bool((block[:, self._steps] != 1).any()):
            raise ValueError("these rows already look ahead: look_ahead is for one-step rows only")
        reward = block[:, self._reward].clone()
        rows = torch.arange(count)
        total = torch.zeros(count)
        for j in range(n):
            inside = j < steps  # row t + j is still inside row t's look-ahead
            total += torch.where(inside, discount**j * reward[(rows + j).clamp_max(count - 1)], 0.0)
        end = block.index_select(0, last)  # copies, so the rows read below are the one-step ones
        block[:, self._next_obs] = end[:, self._next_obs]
        block[:, self._terminal] = end[:, self._terminal]
        block[:, self._steps] = steps.float()
        block[:, self._reward] = total

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
        return self.batch_of(index)

    def batch_of(self, index: torch.Tensor) -> Batch:
        """The rows at `index` as a Batch, its columns split by the layout this replay packs them in."""
        rows = self.data.index_select(0, index)
        return Batch(
            obs=rows[:, : self.obs_dim],
            action=rows[:, self.obs_dim : self._reward],
            reward=rows[:, self._reward],
            next_obs=rows[:, self._next_obs],
            terminal=rows[:, self._terminal],
            imitate=rows[:, self._imitate] > 0.5,
            floor=rows[:, self._floor],
            steps=rows[:, self._steps],
            reward_range=self.reward_range,
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
