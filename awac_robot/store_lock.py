"""The single-writer lock of a folder (a demo store; bench/suite.py's work folder): `fcntl.flock` on a file in it.

flock (not a pid file checked by hand) because the kernel drops the lock when the holding
process dies, however it dies: a collector killed with SIGKILL never leaves a stale lock
that blocks the next writer. The pid written into the file is only for the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_NAME = "writer.lock"


class LockHeld(RuntimeError):
    """Another process (or another open handle in this one) is writing the store."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class WriterLock:
    """An exclusive, non-blocking lock on `<store>/writer.lock`, held until `release()`."""

    def __init__(self, store_dir: Path) -> None:
        self.path = Path(store_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise LockHeld(holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:  # e.g. a full disk: let go rather than hold a lock nobody will release
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Clear the holder first so a reader of the file never names a process that let go.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
