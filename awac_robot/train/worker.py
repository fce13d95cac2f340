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

A worker that stops without dying (SIGSTOP, a frozen container, a process stuck in the
kernel) would leave the trainer waiting for a reply forever, so each worker has a heartbeat:
a thread of its own stamps a shared clock every HEARTBEAT_PERIOD, and the trainer, waiting
for a reply, gives up with one line once the stamp is older than the run's `worker_timeout`.
The heartbeat says the process runs, not that its request is nearly done: an evaluation may
take minutes on a loaded machine and must not be cut short. The trainer waits in short polls,
so a Ctrl-C is honoured at once.

Tensors cross the pipe as numpy arrays: a torch tensor sent through a multiprocessing pipe
would be moved into shared memory behind the caller's back (torch's pickling hooks). Spawn
imports the parent's main module again in each worker, so a script of one's own that runs a
Trainer needs the usual `if __name__ == "__main__":` guard (the CLI and `python -m` have it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from awac_robot.processes import die_with_parent

#: The trainer's last message to a worker: finish what was asked and exit.
STOP = None
#: What ends the trainer's sender thread of a queued worker (never sent).
_CLOSE_SENDER = object()
#: Seconds a worker gets to finish its queue and exit on STOP before it is terminated.
STOP_TIMEOUT = 30.0
#: Seconds between a worker's heartbeats.
HEARTBEAT_PERIOD = 0.5
#: Seconds a worker has for its first heartbeat: spawn imports torch and MuJoCo first, which on a
#: loaded two-core machine has taken tens of seconds.
START_TIMEOUT = 300.0
#: Seconds the trainer blocks in one poll for a reply: how soon it sees a lost heartbeat or a Ctrl-C.
POLL = 0.1


class WorkerError(RuntimeError):
    """A worker process failed; the message names it, says how, and that the run can be resumed."""


@dataclass(frozen=True)
class WorkerFailed:
    """What a worker sends instead of its reply when it raises: the error in one line."""

    line: str


#: A worker's body: it reads requests from the pipe until STOP and answers each in order.
Serve = Callable[..., None]


class Worker:
    """One worker process and the trainer's end of its pipe.

    `queued` sends go through a thread of the trainer's: a request larger than the pipe's
    buffer (a policy snapshot is ~0.3 MB, the buffer 64 KB) would otherwise hold the trainer
    until the worker has finished its current request and reads the next one. Small,
    latency-bound messages (the explorer's) go straight into the pipe.
    """

    def __init__(self, name: str, serve: Serve, *args: Any, timeout: float, queued: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        #: seconds without a heartbeat after which the worker counts as stopped
        self.timeout = timeout
        self._conn, child = context.Pipe()
        self._heartbeat = context.RawValue("d", 0.0)  # the worker's time.monotonic() at its last beat; 0: none yet
        self.process = context.Process(
            target=_worker_main,
            args=(serve, child, os.getpid(), self._heartbeat, args),
            name=f"awac-robot {name}",
            daemon=True,
        )
        self._started = time.monotonic()
        self.process.start()
        child.close()  # the trainer keeps only its own end, so the worker's death reads as the end of the pipe
        self._outbox: queue.SimpleQueue[Any] | None = None
        self._sender: threading.Thread | None = None
        self._send_failed = False
        if queued:
            self._outbox = queue.SimpleQueue()
            self._sender = threading.Thread(target=self._send_queued, name=f"{name} sender", daemon=True)
            self._sender.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, message: Any) -> None:
        """Hand `message` to the worker (queued: without waiting for the pipe)."""
        if self._outbox is None:
            self._send_now(message)
        elif self._send_failed:
            raise self._died()
        else:
            self._outbox.put(message)

    def _send_now(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise self._died() from None

    def _send_queued(self) -> None:
        assert self._outbox is not None
        while (message := self._outbox.get()) is not _CLOSE_SENDER:
            try:
                self._conn.send(message)
            except OSError:  # the worker is gone: the next send, or recv, says so
                self._send_failed = True
                return

    def recv(self) -> Any:
        self._wait_for_reply()
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if isinstance(message, WorkerFailed):
            self.process.join(STOP_TIMEOUT)
            raise WorkerError(f"the {self.name} worker (pid {self.pid}) failed: {message.line}; {RESUME}")
        return message

    def _wait_for_reply(self) -> None:
        """Return once a reply (or the worker's end) is waiting; raise WorkerError if its heartbeat stops first."""
        while not self._poll(POLL):
            self._check_heartbeat()

    def _poll(self, timeout: float) -> bool:
        try:
            return self._conn.poll(timeout)
        except (EOFError, OSError):
            return True  # recv says how the worker ended

    def _check_heartbeat(self) -> None:
        beat = self._heartbeat.value
        silent = time.monotonic() - (beat or self._started)
        if silent > (self.timeout if beat else START_TIMEOUT):
            state = "started and never beat" if not beat else f"sent no heartbeat for {silent:.0f} s"
            raise WorkerError(
                f"the {self.name} worker (pid {self.pid}) stopped answering: it {state} (stopped, e.g. by "
                f"SIGSTOP, or stuck; config key worker_timeout is {self.timeout:g} s); {RESUME}"
            )

    def has_reply(self) -> bool:
        """A reply (or the worker's end) is waiting, so `recv` returns without blocking.

        Asked while the trainer goes on with other work, so a stopped worker is noticed here
        too, not only once the trainer waits for it.
        """
        if self._poll(0.0):
            return True
        self._check_heartbeat()
        return False

    def close(self, finish: bool = True) -> None:
        """End the worker: let it finish what it was asked and exit (`finish`), or kill it (a run stopping early).

        A worker that does not exit within STOP_TIMEOUT of being asked is killed as well.
        """
        if finish and self.process.is_alive():
            if self._outbox is None:
                os.set_blocking(self._conn.fileno(), False)  # a stuck worker with a full pipe must not hold us
                with contextlib.suppress(OSError):
                    self._conn.send(STOP)
            else:
                self._outbox.put(STOP)
            self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        if self._sender is not None:  # a send still blocked in the pipe fails now that the worker is gone
            assert self._outbox is not None
            self._outbox.put(_CLOSE_SENDER)
            self._sender.join(STOP_TIMEOUT)
        self._conn.close()

    def _died(self) -> WorkerError:
        self.process.join(STOP_TIMEOUT)
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return WorkerError(f"the {self.name} worker (pid {self.pid}) {how}; {RESUME}")


RESUME = "the run stopped at its last checkpoint: continue it with --resume"


def _worker_main(serve: Serve, conn: Connection, parent_pid: int, heartbeat: Any, args: tuple[Any, ...]) -> None:
    """The worker process: tied to the trainer, beating, then `serve` until STOP or the trainer is gone."""
    die_with_parent(parent_pid, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_beat, args=(heartbeat,), name="heartbeat", daemon=True).start()
    try:
        serve(conn, *args)
    except EOFError:  # the trainer is gone: nobody is left to tell
        return
    except BaseException as exc:
        line = " ".join(f"{type(exc).__name__}: {exc}".split())
        with contextlib.suppress(OSError):
            conn.send(WorkerFailed(line))
        raise SystemExit(1) from None


def _beat(heartbeat: Any) -> None:
    """Stamp the shared clock while this process runs (a stopped process stops every thread, this one too)."""
    while True:
        heartbeat.value = time.monotonic()
        time.sleep(HEARTBEAT_PERIOD)
