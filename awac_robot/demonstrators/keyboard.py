"""Keyboard teleoperation of the gripper tasks: `awac-robot collect --demonstrator keyboard`.

It drives tasks whose action is a gripper move and open/close (`dx, dy, dz, gripper`: push,
pick_place, slide, reach); any other layout (the hands' joint targets, the kitchen arm's
joint velocities) is refused in one line before a store or env exists.

The terminal is put in cbreak mode (keys arrive one at a time, unechoed; Ctrl-C still
interrupts) and read with `select`, so each `act` call waits out exactly one control
period while gathering whatever keys arrived, and a person sees the robot move at the
task's real rate. The terminal settings are restored on quit, on `close`, and at
interpreter exit, whichever comes first.

While a take runs, one status line is rewritten every step with the gripper, object and
goal positions and the distance still to go, so the person is not steering blind.

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
from typing import Any, TextIO

import numpy as np

from awac_robot.demonstrators.scripted_fetch import FetchLayout
from awac_robot.envs import TaskConfig, TaskEnv, TaskError, get_task

#: key -> (action axis, sign) for the three end-effector axes
MOVES = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
TOGGLE, END_TAKE, QUIT = " ", ("\r", "\n"), "q"
#: the action layout the keys map onto: a gripper move along x, y, z and open/close
GRIPPER_ACTIONS = ("dx", "dy", "dz", "gripper")
#: observation entries the status line shows (each an _x, _y, _z triple in the task's obs names)
SHOWN = ("grip_pos", "achieved_goal", "desired_goal")
LEGEND = "keys: w/s x  a/d y  r/f up/down  space open/close  Enter end take  q quit  (after a take: y keep, n discard)"


class TeleopQuit(KeyboardInterrupt):
    """The person pressed q. A KeyboardInterrupt so an unaware loop still stops cleanly."""


class TeleopUnavailable(TaskError):
    """Keyboard teleoperation cannot run here (no terminal, or a task whose actions are not a gripper move)."""


def drives(task: TaskConfig) -> bool:
    """Whether the keys can drive `task`: a gripper-move action, and gripper and goal named in the observation."""
    names = set(task.obs_names)
    return task.act_names == GRIPPER_ACTIONS and all(f"{entry}_{axis}" in names for entry in SHOWN for axis in "xyz")


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
        self._saved: list[Any] | None = None
        self._gripper = 1.0
        self._ended = False
        self._next_tick = 0.0
        self._layout: FetchLayout | None = None
        self._threshold: float | None = None
        self._status_shown = False  # the status line is on screen without its newline yet

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
        if self._status_shown:  # end the status line first, so the message gets a line of its own
            text, self._status_shown = "\n" + text, False
        print(text, file=self.out, flush=True)

    # -- Demonstrator -------------------------------------------------------------------------

    def reset(self, env: TaskEnv, obs: np.ndarray) -> None:
        self._enter_cbreak()
        self._gripper = 1.0
        self._ended = False
        self._layout = FetchLayout(env)
        self._threshold = getattr(env.unwrapped, "distance_threshold", None)  # the Fetch envs' success radius
        self._say(f"take starts: {env.config.name}, {env.config.episode_steps} steps at {1 / self.period:.0f} Hz")
        self._say(LEGEND)
        self._next_tick = time.monotonic() + self.period

    def status(self, obs: np.ndarray) -> str:
        """The live numbers for `obs`: gripper, object (if the task has one), goal, and the distance to go."""
        if self._layout is None:
            raise RuntimeError("call reset(env, obs) before status(obs)")
        layout = self._layout
        grip, goal = layout.vec(obs, "grip_pos"), layout.vec(obs, "desired_goal")
        parts = [f"gripper {_xyz(grip)}"]
        if layout.has("object_pos"):
            parts.append(f"object {_xyz(layout.vec(obs, 'object_pos'))}")
        distance = float(np.linalg.norm(layout.vec(obs, "achieved_goal") - goal))  # what success is judged on
        done = f" (solved below {self._threshold:.2f})" if self._threshold is not None else ""
        parts += [f"goal {_xyz(goal)}", f"distance {distance:.3f} m{done}"]
        return " | ".join(parts)

    def act(self, obs: np.ndarray) -> np.ndarray:
        move = np.zeros(3)
        if not self._ended:
            print(f"\r{self.status(obs)}  ", end="", file=self.out, flush=True)
            self._status_shown = True
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


def _xyz(v: np.ndarray) -> str:
    return "(" + " ".join(f"{x:+.3f}" for x in v) + ")"


def make_keyboard(task: str, fd: int | None = None, config: KeyboardConfig | None = None) -> KeyboardTeleop:
    """Keyboard teleoperation for a gripper task; one clear line when it cannot work here."""
    task_config = get_task(task)
    if not drives(task_config):
        shown = ", ".join(task_config.act_names[:3]) + ", ..." if task_config.act_names else "unnamed"
        raise TeleopUnavailable(
            f"task '{task_config.name}' takes {task_config.act_dim} action numbers ({shown}), not the gripper move "
            f"{', '.join(GRIPPER_ACTIONS)} the keys drive (push, pick_place, reach, slide); "
            "see 'awac-robot tasks' for the demonstrators it has"
        )
    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd):
        raise TeleopUnavailable(
            "keyboard teleoperation needs an interactive terminal, but stdin is not a TTY "
            "(run the command in a terminal, without piping or redirecting its input)"
        )
    return KeyboardTeleop(task_config.control_period, config, fd)
