"""Evaluation in a worker process: the trainer snapshots the policy and trains on while it is scored.

A 100k-step door finetune evaluates 25 times over 30 episodes: 150k env steps, as many as
the online phase itself, that used to stop the update each time (docs/benchmarks.md). Now
an evaluation point copies the evaluated policy's weights into an `EvalRequest` and sends
them to one long-lived worker (its own env, its own torch with one thread, the trainer's
fixed eval seeds), which scores them with the same `evaluate` as `awac-robot evaluate` and,
after the trainer has logged the result, redraws the run's curve.

A request is either a point of the learning curve, scored on `eval_episodes` selection seeds, or
a report (`handover`, `final`), scored on `report_episodes` report seeds (train/evaluation.py
says why the two never share a seed). Requests are served in order, so results come back in
eval order; the trainer records each one (log row, `best.pt`, the checkpoint's latest eval)
with the counters of its snapshot.
A checkpoint holds the requests still outstanding, so a run killed with an evaluation in
flight redoes exactly those on resume (train/finetune.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awac_robot.envs import make_env
from awac_robot.spec import TaskSpec
from awac_robot.train.build import build_actor
from awac_robot.train.config import TrainConfig, from_dict, setup_torch
from awac_robot.train.evaluation import REPORT, SELECT, evaluate
from awac_robot.train.plots import draw_curve
from awac_robot.train.worker import STOP, Worker

EVALUATE, REPORT_EVAL, CURVE = "evaluate", "report", "curve"
#: what a report evaluation scores: the policy handed to the online phase, and the one the run ends with
REPORTS = ("handover", "final")


@dataclass(frozen=True)
class EvalRequest:
    """A snapshot of the evaluated policy and the trainer's counters when it was taken."""

    phase: str
    counters: dict[str, Any]
    #: wall-clock time of the snapshot: the log row carries it, not the time the result came back
    time: float
    policy: dict[str, torch.Tensor]
    #: None: a point of the learning curve (selection seeds); else which report it is (report seeds)
    report: str | None = None

    @classmethod
    def snapshot(
        cls, phase: str, counters: dict[str, Any], time: float, policy: torch.nn.Module, report: str | None = None
    ) -> EvalRequest:
        return cls(phase, counters, time, {k: v.detach().clone() for k, v in policy.state_dict().items()}, report)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "counters": dict(self.counters), "time": self.time, "policy": self.policy,
            "report": self.report,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRequest:
        return cls(data["phase"], dict(data["counters"]), float(data["time"]), dict(data["policy"]), data.get("report"))


class EvalWorker:
    """The trainer's side: requests go out in order, results come back in the same order."""

    def __init__(self, config: TrainConfig, spec: TaskSpec, reward_mode: str) -> None:
        self.worker = Worker(
            "evaluation",
            serve,
            config.to_dict(),
            spec.to_dict(),
            reward_mode,
            timeout=config.worker_timeout,
            queued=True,
        )
        self._queue: deque[EvalRequest | None] = deque()  # None: a curve to draw, acknowledged without a result
        self._redraw: Path | None = None  # a curve asked for while one was being drawn: drawn after it

    def submit(self, request: EvalRequest) -> None:
        kind = EVALUATE if request.report is None else REPORT_EVAL
        self.worker.send((kind, {k: v.numpy() for k, v in request.policy.items()}))
        self._queue.append(request)

    def draw_curve(self, run_dir: Path) -> None:
        """Redraw the run's curve from its log: at most one drawing in flight, the next one after it.

        A drawing (~0.5 s) that starts after the request shows every row logged before it, so
        requests made while one is in flight fold into one drawing sent when it is done.
        """
        if None in self._queue:
            self._redraw = run_dir
            return
        self.worker.send((CURVE, str(run_dir)))
        self._queue.append(None)

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def outstanding(self) -> list[EvalRequest]:
        return [request for request in self._queue if request is not None]

    def results(self, wait: bool) -> Iterator[tuple[EvalRequest, dict[str, float]]]:
        """Finished evaluations in order: those already back, or (`wait`) everything asked, curves included."""
        while self._queue and (wait or self.worker.has_reply()):
            reply = self.worker.recv()
            request = self._queue.popleft()
            if request is not None:
                yield request, reply
            elif self._redraw is not None:
                run_dir, self._redraw = self._redraw, None
                self.draw_curve(run_dir)

    def close(self, finish: bool = True) -> None:
        self.worker.close(finish)


def serve(conn: Connection, config_data: dict[str, Any], spec_data: dict[str, Any], reward_mode: str) -> None:
    """The worker: one env and one policy network, reused for every request."""
    config = from_dict(config_data, "the evaluation worker's config")
    setup_torch(config.replace(threads=1, compile=False))  # a worker runs no update: nothing to compile
    env = make_env(config.task, reward=reward_mode)
    policy = build_actor(config, TaskSpec.from_dict(spec_data)).requires_grad_(False)
    while (request := conn.recv()) is not STOP:
        kind, payload = request
        if kind in (EVALUATE, REPORT_EVAL):
            policy.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in payload.items()})
            episodes, purpose = (config.eval_episodes, SELECT) if kind == EVALUATE else (config.report_episodes, REPORT)
            conn.send(evaluate(policy, env, episodes, config.seed, purpose))
        else:
            draw_curve(Path(payload))
            conn.send(None)
