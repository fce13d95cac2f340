"""A robot reached over UDP: the driver in the robot process, the server beside the arm, and a lossy link for drills.

    robot process (RobotLoop + NetworkDriver) <── UDP ──> arm server (ArmServer around the arm) ── the arm

Every message is sequence-numbered and timestamped; nothing assumes the two machines share a
clock. A command carries the driver's send time and the sequence number of the newest state the
driver had; a state carries the arm's measurement time, and echoes the newest command the arm
received with the driver's stamp of it and the arm's time of receipt. From that each side judges
age on its own clock alone:

  - the driver dates a state no later than it can have been measured, in its own clock:
    `echo_stamp + (measured - received)` (the command was sent before it was received, and the
    state was measured that long after), or the previous state's date if that is later; the
    error is about one one-way delay, on the safe side, so the robot process's guard and the
    controller see a late state as late;
  - the arm dates a command by the state it answers, `now - measured(answers)` (a round trip on
    the arm's clock), and holds once the command in force is older than `timeout`: when the
    robot process is killed, stalled or cut off, the arm holds by itself;
  - a motion (an end-effector delta, a joint velocity) is meant for one step from the state it
    was decided on: the arm applies it only while that state is still its newest, and otherwise
    stops the motion for the step (mode 3 in its record), so a late or repeated delta never
    carries the gripper past the box the robot process checked it against.

Out-of-order and duplicate messages (a sequence number not above the newest seen) are dropped
on both sides; a command that is not finite or outside the task's bounds makes the arm hold.
`LossyLink` sits between the two in tests and benchmarks to drop, delay and reorder messages.
Run the server with `python -m awac_robot.control.drivers.network --task TASK --port PORT`.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import secrets
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from awac_robot.control.drivers import Measurement, NoSettings, RobotDriver
from awac_robot.control.drivers.sim import SimDriver
from awac_robot.control.limits import motion_dims
from awac_robot.control.rt import next_boundary, set_realtime, sleep_until
from awac_robot.control.runlog import RunLog
from awac_robot.envs import get_spec
from awac_robot.spec import TaskSpec

COMMAND_MAGIC, STATE_MAGIC = b"AWC1", b"AWS1"
RUN, HOLD = 1, 2
#: magic, session, seq, driver stamp, answers (state seq), mode | command (act_dim float64)
_COMMAND_HEAD = struct.Struct("<4sQQdQB")
#: magic, session, seq, measured, echo seq, echo stamp, received, episode, solved | obs (float32), applied (float64)
_STATE_HEAD = struct.Struct("<4sQQdQddII")
#: how many of its recent states the arm remembers the measurement time of (a command answering an older one is late)
_REMEMBERED = 1024


def _command_size(spec: TaskSpec) -> int:
    return _COMMAND_HEAD.size + 8 * spec.act_dim


def _state_size(spec: TaskSpec) -> int:
    return _STATE_HEAD.size + 4 * spec.obs_dim + 8 * spec.act_dim


@dataclass(frozen=True)
class NetworkSettings:
    """Where the arm server listens (`--robot-config` of `--robot network`)."""

    port: int
    host: str = "127.0.0.1"


@dataclass
class LinkCounts:
    """What one end saw of the link: messages taken, dropped as out of order or duplicate, malformed."""

    received: int = 0
    out_of_order: int = 0
    malformed: int = 0
    send_errors: int = 0


class NetworkDriver(RobotDriver):
    """The robot process's end: sends each decision as a command, takes the newest state the arm sent."""

    Settings = NetworkSettings

    def __init__(self, spec: TaskSpec, settings: NetworkSettings, seed: int | None) -> None:
        self.spec = spec
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((settings.host, settings.port))
        self.sock.setblocking(False)
        self.session = secrets.randbits(63)
        #: sequence numbers: of the last command sent, the newest state taken, the state last handed to read()
        self.seq = self.newest = self.read_seq = 0
        self.counts = LinkCounts()
        self._state_size = _state_size(spec)
        self._obs_at = _STATE_HEAD.size
        self._applied_at = self._obs_at + 4 * spec.obs_dim
        self._out = bytearray(_command_size(spec))
        self._command = np.ndarray((spec.act_dim,), np.float64, self._out, _COMMAND_HEAD.size)
        self._state = Measurement(np.zeros(spec.obs_dim, np.float32), math.nan, np.zeros(spec.act_dim))

    def read(self) -> Measurement:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                self.read_seq = self.newest  # the state the next decision is made on
                return self._state
            except ConnectionRefusedError:  # an earlier send found no server (ICMP): nothing to read from that
                continue
            self._take(data)

    def _take(self, data: bytes) -> None:
        if len(data) != self._state_size or data[:4] != STATE_MAGIC:
            self.counts.malformed += 1
            return
        _, session, seq, measured, _, echo_stamp, received, episode, solved = _STATE_HEAD.unpack_from(data)
        if session != self.session or seq <= self.newest:
            self.counts.out_of_order += 1
            return
        self.newest = seq
        self.counts.received += 1
        obs = np.frombuffer(data, np.float32, self.spec.obs_dim, self._obs_at).copy()
        applied = np.frombuffer(data, np.float64, self.spec.act_dim, self._applied_at).copy()
        # both are times before which this state cannot have been measured: it came after the previous one
        stamp = float(np.fmax(echo_stamp + (measured - received), self._state.stamp))
        self._state = Measurement(obs, stamp, applied, episode, solved)

    def apply(self, command: np.ndarray) -> None:
        self._command[:] = command
        self._send(RUN)

    def hold(self) -> None:
        self._command[:] = 0.0
        self._send(HOLD)

    def _send(self, mode: int) -> None:
        self.seq += 1
        _COMMAND_HEAD.pack_into(
            self._out, 0, COMMAND_MAGIC, self.session, self.seq, time.perf_counter(), self.read_seq, mode
        )
        try:
            self.sock.send(self._out)
        except OSError:  # no server yet, or the buffer is full: the arm holds by itself without commands
            self.counts.send_errors += 1

    def close(self) -> None:
        self.sock.close()


def server_columns(spec: TaskSpec) -> dict[str, tuple[tuple[int, ...], type]]:
    """The arm server's own record, one row per arm step."""
    return {
        "t": ((), np.float64),  # perf_counter s at the decision
        "state_seq": ((), np.int64),  # the state measured after this step
        "command_seq": ((), np.int64),  # the command in force (0: none)
        "command_age": ((), np.float64),  # round-trip age of the command in force at the decision (s; NaN: none)
        "mode": ((), np.int8),  # 1 the command was applied, 2 the arm held, 3 applied with its motion stopped
        "applied": ((spec.act_dim,), np.float64),
    }


class ArmServer:
    """The arm's end: steps the arm at the task period with the newest command in force, or holds."""

    def __init__(self, spec: TaskSpec, sock: socket.socket, timeout: float, seed: int | None) -> None:
        self.spec, self.sock, self.timeout = spec, sock, timeout
        self.arm = SimDriver(spec, NoSettings(), seed)
        self.motion = list(motion_dims(spec))
        self.sock.setblocking(False)
        self.counts = LinkCounts()
        self.refused = self.overruns = 0
        self.stop_requested = False
        self.measured = np.full(_REMEMBERED, -math.inf)
        self.state_seq = 0
        self.client: tuple[str, int] | None = None
        self.session = self.last_seq = self.command_seq = self.answers = 0
        self.echo_stamp = self.received = math.nan
        self.running = False
        self.command = np.zeros(self.spec.act_dim)
        self._stopped = np.zeros(self.spec.act_dim)
        self._size = _command_size(self.spec)
        self._out = bytearray(_state_size(self.spec))
        self._obs = np.ndarray((self.spec.obs_dim,), np.float32, self._out, _STATE_HEAD.size)
        applied_at = _STATE_HEAD.size + 4 * self.spec.obs_dim
        self._applied = np.ndarray((self.spec.act_dim,), np.float64, self._out, applied_at)
        self._low, self._high = np.asarray(self.spec.act_low), np.asarray(self.spec.act_high)

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def run(self, log: RunLog | None, seconds: float | None) -> None:
        period = self.spec.control_period
        boundary = start = time.perf_counter()
        self._send(self.arm.read())
        while not self.stop_requested and (seconds is None or boundary - start < seconds):
            self._receive()
            now = time.perf_counter()
            age = now - self.measured[self.answers % _REMEMBERED] if self.command_seq else math.nan
            run = self.running and age <= self.timeout
            mode = 2
            if run:
                mode = 3 if self.motion and self.answers != self.state_seq else 1
                if mode == 3:
                    self._stopped[:] = self.command
                    self._stopped[self.motion] = 0.0
                self.arm.apply(self.command if mode == 1 else self._stopped)
            else:
                self.arm.hold()
            state = self.arm.read()
            if log is not None:
                row = log.row
                row["t"][0], row["state_seq"][0], row["command_seq"][0] = now, self.state_seq + 1, self.command_seq
                row["command_age"][0], row["mode"][0], row["applied"][0] = age, mode, state.applied
                log.append()
            self._send(state)
            boundary, skipped = next_boundary(boundary, period, time.perf_counter())
            self.overruns += skipped
            sleep_until(boundary, 0.0002)
        self.arm.close()

    def _receive(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue
            received = time.perf_counter()
            if len(data) != self._size or data[:4] != COMMAND_MAGIC:
                self.counts.malformed += 1
                continue
            _, session, seq, stamp, answers, mode = _COMMAND_HEAD.unpack_from(data)
            if session != self.session:  # a new robot process: its sequence numbers start again
                self.session, self.last_seq, self.running, self.command_seq = session, 0, False, 0
            if seq <= self.last_seq:
                self.counts.out_of_order += 1
                continue
            self.counts.received += 1
            self.client, self.last_seq, self.echo_stamp, self.received = sender, seq, stamp, received
            if mode == HOLD:
                self.running = False
                continue
            command = np.frombuffer(data, np.float64, self.spec.act_dim, _COMMAND_HEAD.size)
            known = 0 < answers <= self.state_seq and self.state_seq - answers < _REMEMBERED
            ok = mode == RUN and known and bool(np.all((command >= self._low) & (command <= self._high)))
            if not ok:  # NaN fails both comparisons
                self.refused += 1
                self.running = False
                continue
            self.command[:] = command
            self.command_seq, self.answers, self.running = seq, answers, True

    def _send(self, state: Measurement) -> None:
        self.state_seq += 1
        self.measured[self.state_seq % _REMEMBERED] = state.stamp
        if self.client is None:
            return
        _STATE_HEAD.pack_into(
            self._out,
            0,
            STATE_MAGIC,
            self.session,
            self.state_seq,
            state.stamp,
            self.last_seq,
            self.echo_stamp,
            self.received,
            state.episode,
            state.solved,
        )
        self._obs[:] = state.obs
        self._applied[:] = state.applied
        try:
            self.sock.sendto(self._out, self.client)
        except OSError:
            self.counts.send_errors += 1


class LossyLink:
    """A UDP relay between driver and server that drops, delays and reorders messages (for drills and benches).

    The driver sends to `port`; the relay forwards to `target` and sends the replies back to the
    driver. Each message is dropped with probability `loss`, otherwise delivered after `delay`
    plus up to `jitter` seconds; with probability `reorder` it is held back until the next one in
    the same direction has gone. The settings may be changed while it runs (e.g. `loss = 1.0`: the
    link is cut). It stops by itself after `seconds`. Its thread asks for SCHED_FIFO `priority` (0:
    normal scheduling): on a busy machine a relay at normal priority is itself a late link.
    """

    def __init__(
        self,
        target: tuple[str, int],
        loss: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
        seconds: float = 120.0,
        priority: int = 0,
    ) -> None:
        self.target, self.loss, self.delay, self.jitter, self.reorder = target, loss, delay, jitter, reorder
        self.rng = np.random.default_rng(seed)
        self.near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.near.bind(("127.0.0.1", 0))
        self.far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.far.bind(("127.0.0.1", 0))
        self.port = int(self.near.getsockname()[1])
        self.dropped = self.delivered = self.reordered = 0
        self._driver: tuple[str, int] | None = None
        self._queue: list[tuple[float, int, int, bytes]] = []  # (due, order, direction, message)
        self._held: dict[int, bytes] = {}
        self._order = 0
        self._stop = threading.Event()
        self._end = time.monotonic() + seconds
        self.priority = priority
        self._thread = threading.Thread(target=self._run, name="lossy-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.near.close()
        self.far.close()

    def _run(self) -> None:
        set_realtime(self.priority)  # this thread only
        while not self._stop.is_set() and time.monotonic() < self._end:
            wait = max(0.0, min([self._queue[0][0] - time.perf_counter()] if self._queue else [0.005]))
            ready, _, _ = select.select([self.near, self.far], [], [], min(wait, 0.005))
            for sock in ready:
                data, sender = sock.recvfrom(65536)
                direction = 0 if sock is self.near else 1
                if direction == 0:
                    self._driver = sender
                self._admit(direction, data)
            now = time.perf_counter()
            while self._queue and self._queue[0][0] <= now:
                _, _, direction, data = heapq.heappop(self._queue)
                destination = self.target if direction == 0 else self._driver
                if destination is None:
                    continue
                try:
                    (self.far if direction == 0 else self.near).sendto(data, destination)
                    self.delivered += 1
                except OSError:  # nobody listening any more: the message is lost, as on a network
                    self.dropped += 1

    def _admit(self, direction: int, data: bytes) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        if direction not in self._held and self.rng.random() < self.reorder:
            self._held[direction] = data  # goes out right after the next message in this direction
            self.reordered += 1
            return
        self._schedule(direction, data)
        held = self._held.pop(direction, None)
        if held is not None:
            self._schedule(direction, held)

    def _schedule(self, direction: int, data: bytes) -> None:
        due = time.perf_counter() + self.delay + self.rng.random() * self.jitter
        self._order += 1
        heapq.heappush(self._queue, (due, self._order, direction, data))


def main(argv: list[str] | None = None) -> None:
    """The arm server: `python -m awac_robot.control.drivers.network --task TASK --port PORT [...]`."""
    parser = argparse.ArgumentParser(description="serve the simulated arm of a task to a NetworkDriver over UDP")
    parser.add_argument("--task", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: any free one, printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, help="hold once the command in force is this old (s; default 3 T)")
    parser.add_argument("--log", type=Path, help="write the arm's record (a run log) here")
    parser.add_argument("--seconds", type=float, help="stop by itself after this long")
    args = parser.parse_args(argv)
    spec = get_spec(args.task)
    timeout = args.timeout if args.timeout is not None else 3 * spec.control_period
    if not (math.isfinite(timeout) and 2 * spec.control_period <= timeout <= 10 * spec.control_period):
        raise SystemExit(f"--timeout must be in [{2 * spec.control_period:g}, {10 * spec.control_period:g}] s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.host, args.port))
    server = ArmServer(spec, sock, timeout, args.seed)
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    meta = {"task_spec": spec.to_dict(), "timeout": timeout, "seed": args.seed, "period": spec.control_period}
    log = RunLog(args.log, server_columns(spec), meta) if args.log else None
    print(f"arm server: task {spec.name} on {args.host}:{sock.getsockname()[1]} pid {os.getpid()}", flush=True)
    set_realtime(9)
    exit_reason = "error"
    try:
        server.run(log, args.seconds)
        exit_reason = "signal" if server.stop_requested else "normal"
    finally:
        if log is not None:
            log.close(
                {"exit": exit_reason, "refused": server.refused, "overruns": server.overruns, **vars(server.counts)}
            )
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
