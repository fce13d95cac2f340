"""The suite's Ray path as a user meets it: a real two-node Ray cluster, and a Ray suite stopped by a signal.

Everything here is a real process: `ray start` nodes on this machine (loopback only, one CPU
each, their own temp dirs; stopped by their session's pids whatever the test's outcome) and the
suite itself as a command, so the signal, Ray's shutdown and what is printed are all the real ones.
Both run a two-run grid of the push-scripted store (built once per test, a few seconds).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from awac_robot.store import DemoStore

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the suite is a script, not a package
from runner import eval_rows  # noqa: E402

RAY = Path(sys.executable).with_name("ray")
#: push-scripted's store: 50 episodes of 50 steps
STORE_STEPS = 50 * 50


def suite_command(work: Path, *args: str) -> list[str]:
    grid = ["--only", "push-scripted", "--algo", "awac", "bc", "--offline-steps", "200", "--work", str(work)]
    grid += ["--seeds", "1", "--no-compile"]
    return [sys.executable, str(BENCH / "suite.py"), *grid, "--ray", *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def session_members(session: int) -> list[int]:
    """Every live process whose session id is `session` (what `ray start` in a new session left running)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended while we looked
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
            if int(fields[3]) == session and fields[0] != "Z":  # a zombie has ended: its parent reaps it
                members.append(int(entry.name))
    return members


def stop_session(session: int, grace: float = 15.0) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(session):
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while session_members(session) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not session_members(session), f"Ray processes of session {session} outlived SIGKILL"


@contextmanager
def two_node_cluster() -> Iterator[tuple[str, list[Path], dict[str, str]]]:
    """A Ray head and a second Ray node on this machine, one CPU each.

    Yields the head's address, each node's temp dir, and the environment a driver needs to join:
    the cluster's own token, set on both nodes as docs/benchmarks.md tells for real machines.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # Short temp dirs: Ray puts unix sockets under them, and a socket's path must stay under 108 bytes.
    temp_dirs = [Path(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp")) for name in ("head", "node")]
    address = f"127.0.0.1:{free_port()}"
    each = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 * 2**20)]
    head = ["--head", "--port", address.split(":")[1], "--include-dashboard", "false"]
    head += ["--disable-usage-stats"]
    sessions = []
    try:
        for role, temp_dir in zip((head, ["--address", address]), temp_dirs, strict=True):
            command = [str(RAY), "start", *role, *each, "--temp-dir", str(temp_dir)]
            command += ["--dashboard-agent-listen-port", str(free_port())]  # two nodes on one machine
            starter = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=env, start_new_session=True)  # fmt: skip
            sessions.append(starter.pid)  # its daemons stay in this session after it returns
            output, _ = starter.communicate(timeout=180)
            assert starter.returncode == 0, f"{' '.join(command)} failed:\n{output}"
        yield address, temp_dirs, env
    finally:
        for session in reversed(sessions):
            stop_session(session)
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def check_run_came_back_whole(row: dict, offline: int, online: int) -> None:
    assert row["returncode"] == 0, row["last_output"]
    folder = Path(row["folder"])
    assert json.dumps(row["evals"]) == json.dumps(eval_rows(folder / "run"))  # as JSON: a NaN speed equals itself
    assert [(e["phase"], e.get("report"), e["updates"], e["env_steps"]) for e in row["evals"]] == [
        ("offline", None, offline, 0),
        ("offline", "handover", offline, 0),
        ("online", None, offline + online, online),
        ("online", "final", offline + online, online),
    ]
    assert (folder / "run" / "metrics.jsonl").is_file() and Path(row["log"]).is_file()
    with DemoStore.open(folder / "run" / "store.zarr") as copy:  # the run's own store copy, with its online episodes
        assert copy.num_steps == STORE_STEPS + online


@pytest.mark.slow
def test_a_grid_on_a_two_node_ray_cluster_comes_back_whole(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with two_node_cluster() as (address, temp_dirs, env):
        suite = subprocess.run(
            suite_command(work, "--online-steps", "200", "--jobs", "2", "--ray-address", address),
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert suite.returncode == 0, suite.stdout + suite.stderr
        # Each node ran one of the two runs: the runs' evaluation lines are in both nodes' worker logs.
        for temp_dir in temp_dirs:
            logs = "".join(p.read_text() for p in temp_dir.glob("session_*/logs/worker-*.out"))
            assert "push-scripted" in logs and "online" in logs, f"no run ran on the node of {temp_dir}"
    assert f"2 runs on Ray ({address})" in suite.stdout
    results = json.loads((work / "results" / "defaults.json").read_text())
    assert sorted(results["runs"]) == ["push-scripted/awac/s0", "push-scripted/bc/s0"]
    for row in results["runs"].values():
        assert row["where"] == f"ray {address}"
        check_run_came_back_whole(row, offline=200, online=200)


def read_lines(stream: object, into: list[str]) -> threading.Thread:
    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_ray_suite_stopped_by_a_signal_ends_in_one_line_keeping_the_finished_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    work = tmp_path / "work"
    # Both offline phases run first; the first online phase is short; the second is stopped while it runs.
    # Its scratch folder is under `scratch` (TMPDIR), so a finetune left running would show it in its command;
    # short, because Ray keeps its unix sockets under TMPDIR too (a socket path must stay under 108 bytes).
    scratch = Path(tempfile.mkdtemp(prefix="suite-", dir="/tmp"))
    suite = subprocess.Popen(
        suite_command(work, "--online-steps", "200", "--jobs", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    readers = [read_lines(suite.stdout, out), read_lines(suite.stderr, err)]
    try:
        deadline = time.monotonic() + 300
        while not any(" s0 final policy" in line for line in out):  # the first run's end: the second starts
            assert suite.poll() is None and time.monotonic() < deadline, "".join(out + err)
            time.sleep(0.2)
        if sig == signal.SIGINT:
            os.killpg(suite.pid, sig)  # what a terminal's Ctrl-C does: the whole foreground group
        else:
            suite.send_signal(sig)  # what `kill` or a job scheduler does: the suite alone
        suite.wait(timeout=120)
    finally:
        if suite.poll() is None:
            os.killpg(suite.pid, signal.SIGKILL)
            suite.wait()
        for reader in readers:
            reader.join(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)

    results = work / "results" / "defaults.json"
    assert suite.returncode == 128 + sig, "".join(out + err)
    assert err == [f"suite: stopped by {sig.name}: 1 of 2 runs finished, kept in {results}\n"], "".join(err)
    assert "Token authentication" not in "".join(out)  # Ray's start-up notices are for --verbose
    rows = json.loads(results.read_text())["runs"]
    assert len(rows) == 1
    check_run_came_back_whole(next(iter(rows.values())), offline=200, online=200)
    deadline = time.monotonic() + 30  # the stopped run's finetune and its workers end with its task
    while leftovers := [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(scratch) in read_cmdline(p)]:
        assert time.monotonic() < deadline, f"processes left running: {leftovers}"
        time.sleep(0.5)


def read_cmdline(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
