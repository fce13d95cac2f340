"""Latest-value slots in shared memory: one writer, any number of readers, no locks, no torn reads.

A control loop wants the newest observation, not a queue of old ones, and must never block
on the process at the other end. Each slot is a sequence number followed by float64 values,
written seqlock-style:

    writer: seq += 1 (odd: write in progress); copy values; seq += 1 (even: consistent)
    reader: s1 = seq; copy values; s2 = seq; the copy is good iff s1 == s2 and s1 is even
            (a bounded number of tries: a reader never waits on the writer's scheduling)

so a reader retries instead of returning half of one write and half of the next. The
version number handed back (seq // 2) counts completed writes: a reader sees "nothing new"
without comparing payloads. This relies on stores becoming visible in program order
(x86-64 TSO); on a weakly ordered CPU (ARM) a port needs explicit fences.

Layout of one slot (little-endian): int64 seq | float64 values[n].
"""

from __future__ import annotations

import secrets
from multiprocessing import resource_tracker, shared_memory

import numpy as np

_HEADER = 8


class Slot:
    """One latest-value slot of `size` float64 values."""

    def __init__(self, shm: shared_memory.SharedMemory, size: int, owner: bool) -> None:
        self._shm = shm
        self.size = size
        self.owner = owner
        buf = shm.buf
        assert buf is not None, "an open shared memory segment has a buffer"
        self._seq = buf[:_HEADER].cast("q")  # memoryview: indexing it is ~3x cheaper than a numpy scalar
        self._values = np.ndarray((size,), dtype=np.float64, buffer=buf, offset=_HEADER)
        self._scratch = np.empty(size)

    @property
    def name(self) -> str:
        return self._shm.name

    @classmethod
    def create(cls, size: int, prefix: str = "awac") -> Slot:
        name = f"{prefix}_{secrets.token_hex(6)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=_HEADER + 8 * size)
        slot = cls(shm, size, owner=True)
        slot._seq[0] = 0
        slot._values[:] = 0.0
        return slot

    @classmethod
    def attach(cls, name: str, size: int) -> Slot:
        shm = shared_memory.SharedMemory(name=name, create=False)
        # Python < 3.13 registers attached segments with this process's resource tracker, which
        # would unlink them when this process exits, under the feet of the owner: only the owner may.
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        if shm.size < _HEADER + 8 * size:
            shm.close()
            raise ValueError(f"shared memory {name!r} holds {shm.size} bytes, a slot of {size} values needs more")
        return cls(shm, size, owner=False)

    def write(self, values: np.ndarray) -> None:
        seq = self._seq
        seq[0] = seq[0] + 1
        self._values[:] = values
        seq[0] = seq[0] + 1

    def read(self, out: np.ndarray, max_tries: int = 2000) -> int:
        """Copy the latest values into `out`; return how many writes completed before them (0: never written).

        Returns -1 and leaves `out` untouched if no consistent copy was had in `max_tries` (the
        writer was descheduled mid-write): a real-time reader must not spin on another process,
        and a caller that keeps its previous values sees them age, which the stale check catches.
        """
        seq, values, scratch = self._seq, self._values, self._scratch
        for _ in range(max_tries):
            before = seq[0]
            if before & 1:
                continue
            scratch[:] = values
            if seq[0] == before:
                out[:] = scratch
                return before >> 1
        return -1

    def version(self) -> int:
        """Completed writes so far, without copying the values (a heartbeat check)."""
        return self._seq[0] >> 1

    def close(self) -> None:
        """Detach; the owner also removes the segment (readers attached elsewhere keep theirs until they close)."""
        # release the views first: SharedMemory.close refuses while buffers are exported
        self._seq.release()
        del self._values
        self._shm.close()
        if self.owner:
            self._shm.unlink()
