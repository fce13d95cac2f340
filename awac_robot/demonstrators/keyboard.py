"""Keyboard teleoperation of the tabletop (Fetch) tasks: `awac-robot collect --demonstrator keyboard`.

The terminal is put in cbreak mode (keys arrive one at a time, unechoed; Ctrl-C still
interrupts) and read with `select`, so each `act` call waits out exactly one control
period while gathering whatever keys arrived, and a person sees the robot move at the
task's real rate. The terminal settings are restored on quit, on `close`, and at
interpreter exit, whichever comes first.

Keys (also printed as a legend when a take starts):

    w / s   gripper +x / -x         a / d   gripper +y / -y         r / f   up / down
    space   open / close the gripper
    Enter   end the take now (the rest of the episode holds still, without waiting)
    y / n   after a take: keep it / discard it
    q       quit: raises `TeleopQuit` (a KeyboardInterrupt), so the collect loop stops
            after flushing the takes already kept, and the CLI exits as "interrupted"
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from awac_robot.envs import TaskEnv, TaskError, get_task

#: key -> (action axis, sign) for the three end-effector axes
MOVES = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
TOGGLE, END_TAKE, QUIT = " ", ("\r", "\n"), "q"
LEGEND = "keys: w/s x  a/d y  r/f up/down  space open/close  Enter end take  q quit  (after a take: y keep, n discard)"


class TeleopQuit(KeyboardInterrupt):
    """The person pressed q. A KeyboardInterrupt so an unaware loop still stops cleanly."""


class TeleopUnavailable(TaskError):
    """Keyboard teleoperation cannot run here (no terminal, or not a tabletop task)."""


@dataclass(frozen=True)
class KeyboardConfig:
    """How far one key press moves the gripper, as a fraction of the largest action."""

    speed: float = 0.5


class KeyboardTeleop:
    """A `Demonstrator` driven by a person at the terminal (source "human")."""

    source = "human"

    def __init__(
        self,
        period: float,
        config: KeyboardConfig | None = None,
        fd: int | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.period = period
        self.config = config or KeyboardConfig()
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.out = out or sys.stdout
        self._saved: list | None = None
        self._gripper = 1.0
        self._ended = False
        self._next_tick = 0.0

    # -- terminal ---------------------------------------------------------------------------

    def _enter_cbreak(self) -> None:
        if self._saved is None:
            self._saved = termios.tcgetattr(self.fd)
            atexit.register(self.close)
            tty.setcbreak(self.fd)

    def close(self) -> None:
        """Give the terminal back exactly as it was; safe to call more than once."""
        if self._saved is not None:
            saved, self._saved = self._saved, None
            atexit.unregister(self.close)
            with contextlib.suppress(termios.error):  # a terminal that has gone away needs no restoring
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def __enter__(self) -> KeyboardTeleop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keys(self, timeout: float) -> str:
        """Whatever keys arrive within `timeout` seconds (a timeout <= 0 just polls)."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:
            self._quit("the terminal closed")
        return data.decode("utf-8", errors="ignore")

    def _quit(self, reason: str = "q pressed") -> None:
        self.close()
        self._say(f"quit ({reason})")
        raise TeleopQuit(f"teleoperation stopped: {reason}")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- Demonstrator -------------------------------------------------------------------------

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._enter_cbreak()
        self._gripper = 1.0
        self._ended = False
        self._say(f"take starts: {env.config.name}, {env.config.episode_steps} steps at {1 / self.period:.0f} Hz")
        self._say(LEGEND)
        self._next_tick = time.monotonic() + self.period

    def act(self, obs: np.ndarray) -> np.ndarray:
        move = np.zeros(3)
        if not self._ended:
            keys = ""
            while True:
                # gather keys until this step's tick, so the robot moves at the task's own rate
                keys += self._keys(self._next_tick - time.monotonic())
                if time.monotonic() >= self._next_tick:
                    break
            self._next_tick += self.period
            for key in keys.lower():
                if key == QUIT:
                    self._quit()
                if key in MOVES:
                    axis, sign = MOVES[key]
                    move[axis] += sign * self.config.speed
                elif key == TOGGLE:
                    self._gripper = -self._gripper
                elif key in END_TAKE:
                    self._ended = True
                    self._say("take ended")
        return np.clip(np.append(move, self._gripper), -1.0, 1.0).astype(np.float32)

    def keep_episode(self) -> bool:
        self._say("keep this take? y = keep, n = discard, q = quit")
        while True:
            for key in self._keys(1.0).lower():
                if key == QUIT:
                    self._quit()
                if key in "yn":
                    self._say("kept" if key == "y" else "discarded")
                    return key == "y"


def make_keyboard(task: str, fd: int | None = None, config: KeyboardConfig | None = None) -> KeyboardTeleop:
    """Keyboard teleoperation for a tabletop task; one clear line when it cannot work here."""
    task_config = get_task(task)
    if task_config.domain != "tabletop":
        raise TeleopUnavailable(
            f"task '{task_config.name}' is a {task_config.domain} task: keyboard teleoperation drives the tabletop "
            "tasks only (e.g. push, pick_place, reach, slide); use --demonstrator scripted or policy:PATH.onnx"
        )
    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd):
        raise TeleopUnavailable(
            "keyboard teleoperation needs an interactive terminal, but stdin is not a TTY "
            "(run the command in a terminal, without piping or redirecting its input)"
        )
    return KeyboardTeleop(task_config.control_period, config, fd)
