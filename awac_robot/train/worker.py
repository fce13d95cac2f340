"""A trainer's worker process: spawned, tied to the trainer's life, failing loudly.

Evaluation and exploration run in worker processes so that they use the second core instead
of taking turns with the update on the first (docs/benchmarks.md, "Wall time of a
finetune"). A worker is a `multiprocessing` spawn child (a fresh interpreter: no copied
torch thread pool, no copied MuJoCo state) that talks to the trainer over one pipe.

Its life is the trainer's: the kernel SIGKILLs it the moment the trainer dies, even when
the trainer itself was SIGKILLed (`die_with_parent`; SIGKILL also ends a stopped or stuck
worker), and it ends when the pipe from the trainer closes. It ignores
SIGINT, which a terminal sends to the whole process group: a Ctrl-C is the trainer's to
handle. A worker that fails (an exception inside it, a signal, an exit) makes the trainer's
next exchange with it raise `WorkerError` with one line; the run stops there, it never
hangs and never carries on without the worker.

Tensors cross the pipe as numpy arrays: a torch tensor sent through a multiprocessing pipe
would be moved into shared memory behind the caller's back (torch's pickling hooks).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from awac_robot.processes import die_with_parent

#: The trainer's last message to a worker: finish what was asked and exit.
STOP = None
#: Seconds a worker gets to finish its queue and exit on STOP before it is terminated.
STOP_TIMEOUT = 30.0


class WorkerError(RuntimeError):
    """A worker process failed; the message names it, says how, and that the run can be resumed."""


@dataclass(frozen=True)
class WorkerFailed:
    """What a worker sends instead of its reply when it raises: the error in one line."""

    line: str


#: A worker's body: it reads requests from the pipe until STOP and answers each in order.
Serve = Callable[..., None]


class Worker:
    def __init__(self, name: str, serve: Serve, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(serve, child, os.getpid(), args), name=f"awac-robot {name}", daemon=True
        )
        self.process.start()
        child.close()  # the trainer keeps only its own end, so the worker's death reads as the end of the pipe

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise self._died() from None

    def recv(self) -> Any:
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if isinstance(message, WorkerFailed):
            self.process.join(STOP_TIMEOUT)
            raise WorkerError(f"the {self.name} worker (pid {self.pid}) failed: {message.line}; {RESUME}")
        return message

    def has_reply(self) -> bool:
        """A reply (or the worker's end) is waiting, so `recv` returns without blocking."""
        return self._conn.poll()

    def close(self, finish: bool = True) -> None:
        """End the worker: let it finish what it was asked and exit (`finish`), or kill it (a run stopping early).

        A worker that does not exit within STOP_TIMEOUT of being asked is killed as well.
        """
        if finish and self.process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(STOP)
            self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()

    def _died(self) -> WorkerError:
        self.process.join(STOP_TIMEOUT)
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return WorkerError(f"the {self.name} worker (pid {self.pid}) {how}; {RESUME}")


RESUME = "the run stopped at its last checkpoint: continue it with --resume"


def _worker_main(serve: Serve, conn: Connection, parent_pid: int, args: tuple[Any, ...]) -> None:
    """The worker process: tied to the trainer, then `serve` until STOP or the trainer is gone."""
    die_with_parent(parent_pid, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(conn, *args)
    except EOFError:  # the trainer is gone: nobody is left to tell
        return
    except BaseException as exc:
        line = " ".join(f"{type(exc).__name__}: {exc}".split())
        with contextlib.suppress(OSError):
            conn.send(WorkerFailed(line))
        raise SystemExit(1) from None
