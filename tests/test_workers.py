"""The trainer's worker processes: exact evaluation, the explorer's timing rule, failing loudly.

Real spawned worker processes, real reach envs, real `awac-robot finetune` subprocesses
whose workers, or the trainer itself, are killed with real signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import (
    TINY,
    assert_gone_soon,
    finetune_args,
    processes_of,
    running,
    wait_for,
    worker_pids,
    write_config,
)

from awac_robot.collect import CollectConfig, collect
from awac_robot.envs import get_spec, make_env
from awac_robot.store import DemoStore
from awac_robot.train.build import build_actor
from awac_robot.train.config import TrainConfig, from_dict, setup_torch
from awac_robot.train.eval_worker import EvalRequest, EvalWorker
from awac_robot.train.evaluation import evaluate
from awac_robot.train.explorer import Transition, one_update_behind
from awac_robot.train.worker import WorkerError

#: Online evaluations every 2 reach episodes and offline ones every 10 updates: the workers are busy early.
SETTINGS = {"eval_interval": 100, "offline_eval_interval": 10, "eval_episodes": 2, "checkpoint_interval": 10_000}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "reach.zarr"
    collect(CollectConfig(task="reach", episodes=4, store=path, progress=False))
    return path


def tiny_config(**changes: object) -> TrainConfig:
    return from_dict({**TINY, "task": "reach", "seed": 5, **changes}, "test config")


def policy_with_weights(config: TrainConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_actor(config, get_spec("reach")).requires_grad_(False)


def request(policy: torch.nn.Module, updates: int) -> EvalRequest:
    counters = {"updates": updates, "env_steps": 0, "online_episodes": 0, "offline_done": False}
    return EvalRequest.snapshot("offline", counters, time.time(), policy)


def test_the_evaluation_worker_scores_exactly_like_an_evaluation_in_process_and_never_holds_the_trainer() -> None:
    config = tiny_config(eval_episodes=3, actor_hidden=[256, 256])  # 0.3 MB snapshots: more than a pipe holds
    setup_torch(config)
    policies = [policy_with_weights(config, seed) for seed in (0, 1)]
    # dense rewards: the return sums a distance at every step, so any difference in an action shows
    in_process = [evaluate(p, make_env("reach", reward="dense"), config.eval_episodes, config.seed) for p in policies]
    assert in_process[0] != in_process[1]  # two different policies, so equal results below are no accident

    worker = EvalWorker(config, get_spec("reach"), "dense")
    try:
        os.kill(worker.worker.pid, signal.SIGSTOP)  # a worker that reads nothing for now, as one busy evaluating
        submit = lambda: [worker.submit(request(p, i)) for i, p in enumerate(policies)]  # noqa: E731
        submitting = threading.Thread(target=submit, daemon=True)
        submitting.start()
        submitting.join(60)
        assert not submitting.is_alive(), "submitting waited for the worker"
        assert [r.counters["updates"] for r in worker.outstanding()] == [0, 1]
        os.kill(worker.worker.pid, signal.SIGCONT)
        back = list(worker.results(wait=True))
    finally:
        worker.close()
    assert [r.counters["updates"] for r, _ in back] == [0, 1]  # in the order asked
    assert [result for _, result in back] == in_process  # the same seeds, the same weights: the same figures
    assert not worker.busy and worker.outstanding() == []


def test_a_worker_that_raises_stops_its_caller_with_one_line() -> None:
    config = tiny_config()
    worker = EvalWorker(config, get_spec("reach"), "sparse")
    wrong = policy_with_weights(tiny_config(actor_hidden=[8]), 0)  # another network's weights: cannot load
    try:
        worker.submit(request(wrong, 0))
        with pytest.raises(WorkerError) as raised:
            list(worker.results(wait=True))
    finally:
        worker.close()
    message = str(raised.value)
    assert "\n" not in message and f"the evaluation worker (pid {worker.worker.pid}) failed: RuntimeError" in message
    assert "size mismatch" in message and "--resume" in message
    assert worker.worker.process.exitcode == 1


def test_each_step_is_handed_on_after_the_weights_for_the_next_action_are_out() -> None:
    events: list[str] = []

    def steps(length: int) -> list[Transition]:
        nothing = np.zeros(1)
        return [Transition(nothing, nothing, 0.0, nothing, False, last=i == length - 1) for i in range(length)]

    def publish() -> None:
        events.append("publish")

    for index, _ in enumerate(one_update_behind(iter(steps(3)), publish)):
        events.append(f"update {index}")
    # the first action's weights, then step i's updates always run after the weights for step i + 1 went out
    assert events == ["publish", "publish", "update 0", "publish", "update 1", "update 2"]


def start_run(demos: Path, tmp_path: Path, online: int, **settings: object) -> tuple[subprocess.Popen, Path, Path]:
    store, out = tmp_path / "reach.zarr", tmp_path / "run"
    shutil.copytree(demos, store)
    config = write_config(tmp_path, **SETTINGS, **settings)
    args = finetune_args(store, out, config, 20, online, task="reach", seed=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "awac_robot", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a command started from a terminal
        # Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`, nohup) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the run.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, store, out


def online_episodes(store: Path) -> int:
    with DemoStore.open(store) as reader:
        return reader.num_episodes - 4


@pytest.mark.parametrize("name", ["evaluation", "exploration"])
def test_a_worker_killed_mid_run_stops_the_run_with_one_line(demos: Path, tmp_path: Path, name: str) -> None:
    proc, store, out = start_run(demos, tmp_path, online=5000)
    try:
        wait_for(lambda: online_episodes(store) >= 1, proc, "an online episode")
        pid = worker_pids(out)[name]
        os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=60)  # never a hang
        error = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert code == 2, error
    assert error.count("\n") == 1
    assert f"error: the {name} worker (pid {pid}) was killed by signal 9; " in error and "--resume" in error
    assert online_episodes(store) < 100  # it stopped there, not at the end of the run


def test_a_sigkilled_trainer_takes_its_workers_with_it_even_a_stopped_one(demos: Path, tmp_path: Path) -> None:
    proc, store, out = start_run(demos, tmp_path, online=5000)
    try:
        wait_for(lambda: online_episodes(store) >= 1, proc, "an online episode")
        pids = worker_pids(out)
        children = processes_of(proc.pid)  # the workers and whatever else multiprocessing started
        assert set(pids) == {"evaluation", "exploration"} and set(pids.values()) <= children
        os.kill(pids["evaluation"], signal.SIGSTOP)  # a stuck worker: it would handle no SIGTERM now
        proc.send_signal(signal.SIGKILL)  # no cleanup of the trainer's runs: only the kernel can end them
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert_gone_soon(children)


def stop_a_worker(
    demos: Path, tmp_path: Path, name: str, then: Callable[[subprocess.Popen], None], **settings: object
) -> tuple[int, float, str, Path, int]:
    """A finetune whose `name` worker is SIGSTOPped once the run is online, then `then(run)`: the run's exit
    code, the seconds from `then` to the exit, its stderr, its folder and the stopped worker's pid."""
    proc, store, out = start_run(demos, tmp_path, online=5000, **settings)
    try:
        wait_for(lambda: online_episodes(store) >= 1, proc, "an online episode")
        pid = worker_pids(out)[name]
        os.kill(pid, signal.SIGSTOP)  # alive, its pipe open, answering nothing
        then(proc)
        acted = time.monotonic()
        code = proc.wait(timeout=120)  # never a hang
        waited = time.monotonic() - acted
        error = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return code, waited, error, out, pid


@pytest.mark.parametrize("name", ["evaluation", "exploration"])
def test_a_stopped_worker_stops_the_run_with_one_line_once_its_heartbeat_is_late(
    demos: Path, tmp_path: Path, name: str
) -> None:
    code, waited, error, out, pid = stop_a_worker(demos, tmp_path, name, lambda run: None, worker_timeout=3)
    assert code == 2, error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"error: the {name} worker (pid {pid}) stopped answering: it sent no heartbeat for " in error
    assert "worker_timeout is 3 s" in error and "--resume" in error
    assert 3 <= waited < 60
    assert not running(pid)  # the stopped worker was killed, not left behind
    assert list((out / "checkpoints").glob("ckpt_*.pt"))  # what --resume continues from


def ctrl_c(run: subprocess.Popen) -> None:
    time.sleep(2.0)  # the trainer now waits for the stopped worker's reply
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group


@pytest.mark.parametrize("name", ["evaluation", "exploration"])
def test_ctrl_c_ends_a_run_at_once_while_a_worker_is_stopped(demos: Path, tmp_path: Path, name: str) -> None:
    code, waited, error, _, pid = stop_a_worker(demos, tmp_path, name, ctrl_c)  # default worker_timeout: a minute
    assert code == 130 and error.strip() == "interrupted", error
    assert waited < 15
    assert not running(pid)
