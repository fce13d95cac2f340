"""Keyboard teleoperation, driven for real: a child process on a pseudo-terminal, keys typed by the test."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from awac_robot.cli import main
from awac_robot.demonstrators.keyboard import KeyboardTeleop, TeleopUnavailable, make_keyboard
from awac_robot.envs import make_env
from awac_robot.store import DemoStore

# One keyboard take of `reach` in the child: prints the actions and the verdict, or QUIT.
CHILD = """
import json
from awac_robot.demonstrators.keyboard import TeleopQuit, make_keyboard
from awac_robot.envs import make_env

env = make_env("reach")
demo = make_keyboard("reach")
obs, _ = env.reset(seed=0)
demo.reset(env, obs)
actions = []
try:
    done = False
    while not done:
        action = demo.act(obs)
        actions.append(action.tolist())
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    keep = demo.keep_episode()
    print("RESULT " + json.dumps({"actions": actions, "keep": keep}), flush=True)
except TeleopQuit:
    print("QUIT", flush=True)
"""


class Terminal:
    """A child process whose stdin/stdout are the slave side of a pty; stderr is kept apart."""

    def __init__(self, argv: list[str]) -> None:
        self.master, self.slave = pty.openpty()
        self.settings_before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=subprocess.PIPE)
        self.output = ""

    def wait_for(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child never printed {text!r}; output so far: {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                self.output += os.read(self.master, 4096).decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, exit_code: int = 0) -> None:
        assert self.proc.wait(timeout=30) == exit_code, self.proc.stderr.read().decode()
        self.restored = termios.tcgetattr(self.slave) == self.settings_before
        os.close(self.master)
        os.close(self.slave)


def _stop(term: Terminal) -> None:
    if term.proc.poll() is None:
        term.proc.kill()
        term.proc.wait()


@pytest.fixture
def terminal():
    term = Terminal([sys.executable, "-c", CHILD])
    yield term
    _stop(term)


def test_keys_move_the_gripper_and_the_verdict_is_the_persons(terminal: Terminal) -> None:
    terminal.wait_for("keys: w/s x")
    terminal.type(b"wd \r")  # +x and -y together, close the gripper, end the take
    terminal.wait_for("keep this take?")
    terminal.type(b"n")
    terminal.wait_for("RESULT ")
    terminal.finish()
    result = json.loads(terminal.output.split("RESULT ", 1)[1].splitlines()[0])
    actions = result["actions"]
    assert len(actions) == 50 and result["keep"] is False
    moved = [i for i, a in enumerate(actions) if a[:3] != [0.0, 0.0, 0.0]]
    assert len(moved) == 1, "the keys typed once act on exactly one step"
    first = moved[0]
    assert actions[first] == [0.5, -0.5, 0.0, -1.0]
    assert all(a == [0.0, 0.0, 0.0, 1.0] for a in actions[:first]), "gripper starts open, arm still"
    assert all(a == [0.0, 0.0, 0.0, -1.0] for a in actions[first + 1 :]), "after Enter the arm holds still"
    assert "take ended" in terminal.output and "discarded" in terminal.output
    assert "| goal (" in terminal.output and "| distance " in terminal.output, "the live status line is shown"
    assert terminal.restored, "terminal settings must be restored when the process exits"


def test_q_quits_cleanly_and_restores_the_terminal(terminal: Terminal) -> None:
    terminal.wait_for("keys: w/s x")
    terminal.type(b"q")
    terminal.wait_for("QUIT")
    terminal.finish()
    assert terminal.restored


def test_keep_is_yes_and_the_status_line_updates_while_waiting(terminal: Terminal) -> None:
    terminal.wait_for("keys: w/s x")
    terminal.wait_for("| distance ", count=3)  # rewritten every step, keys or not
    terminal.type(b"\r")
    terminal.wait_for("keep this take?")
    terminal.type(b"y")
    terminal.wait_for("RESULT ")
    terminal.finish()
    assert '"keep": true' in terminal.output


def test_collect_cli_keeps_the_takes_the_person_keeps_and_q_stops_it(tmp_path: Path) -> None:
    store = tmp_path / "human.zarr"
    argv = [sys.executable, "-m", "awac_robot", "collect", "--task", "reach", "--demonstrator", "keyboard"]
    term = Terminal([*argv, "--episodes", "3", "--store", str(store), "--no-progress"])
    try:
        term.wait_for("keys: w/s x")
        term.type(b"w\r")
        term.wait_for("keep this take?")
        term.type(b"y")
        term.wait_for("keys: w/s x", count=2)  # the second take starts
        term.type(b"q")
        term.finish(exit_code=130)  # stopped by the person: the CLI reports "interrupted"
    finally:
        _stop(term)
    assert term.restored
    meta = DemoStore.open(store).episode_meta()
    assert list(meta["source"]) == ["human"], "the kept take is in the store; the quit one is not"
    assert int(meta["length"][0]) == 50


def test_refuses_without_a_terminal() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(TeleopUnavailable, match="stdin is not a TTY") as err:
            make_keyboard("reach", fd=read_end)
        assert "\n" not in str(err.value)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("task", ["door", "pen", "relocate", "hammer", "kitchen"])
def test_refuses_a_task_whose_actions_are_not_a_gripper_move(task: str) -> None:
    with pytest.raises(TeleopUnavailable, match=f"task '{task}' takes .* not the gripper move dx, dy, dz") as err:
        make_keyboard(task)
    assert "\n" not in str(err.value)


def test_collect_refuses_keyboard_for_kitchen_before_making_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "kitchen.zarr"
    argv = ["collect", "--task", "kitchen", "--demonstrator", "keyboard", "--episodes", "1", "--store", str(store)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "takes 9 action numbers" in err and err.count("\n") == 1
    assert not store.exists()


def test_status_line_shows_gripper_object_goal_and_distance() -> None:
    """The numbers a person steers by, read from the observation the next action is taken in."""
    master, slave = pty.openpty()
    try:
        env = make_env("push")
        obs, _ = env.reset(seed=3)
        with KeyboardTeleop(env.config.control_period, fd=slave, out=io.StringIO()) as demo:
            demo.reset(env, obs)
            line = demo.status(obs)
        names = env.config.obs_names
        at = {name: obs[names.index(name)] for name in names}
        for entry in ("grip_pos", "object_pos", "desired_goal"):
            assert " ".join(f"{at[f'{entry}_{axis}']:+.3f}" for axis in "xyz") in line
        distance = np.linalg.norm([at[f"achieved_goal_{a}"] - at[f"desired_goal_{a}"] for a in "xyz"])
        assert f"distance {distance:.3f} m (solved below 0.05)" in line
    finally:
        os.close(master)
        os.close(slave)
