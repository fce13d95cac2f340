"""The training loop: offline pretraining on the store, then online finetuning that grows it.

The same AWAC update runs in both phases; online, each env step adds its transition to the
replay (the offline data stays in it, as in the paper) and is followed by
`updates_per_step` updates. Every finished online episode is appended to the store with
source "online" the moment it ends, so the store -- not the process -- owns the
experience: a resumed run reloads every online episode the store holds, including those
that finished after the last checkpoint. Checkpoints are taken on episode boundaries
online, so the counters in a checkpoint always match what the store holds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from awac_robot.demonstrators.catalog import collect_hint
from awac_robot.envs import get_spec, make_env
from awac_robot.provenance import Batch
from awac_robot.rollout import FunctionActor, Step, rollout
from awac_robot.spec import TaskSpec
from awac_robot.store import DemoStore
from awac_robot.train.awac import AWACLearner, NonFiniteError
from awac_robot.train.build import build_learner
from awac_robot.train.checkpoint import best_success, list_checkpoints, read_checkpoint, save_best, save_checkpoint
from awac_robot.train.config import TrainConfig, from_dict, save_config, setup_torch
from awac_robot.train.evaluation import evaluate
from awac_robot.train.plots import draw_curve
from awac_robot.train.replay import Replay
from awac_robot.train.runlog import RunLog, format_row

EPISODE_SEED_STRIDE = 100_000


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite numbers, a run folder in the way); one line says what to do."""


@dataclass
class Counters:
    updates: int = 0
    env_steps: int = 0
    online_episodes: int = 0
    offline_steps_in_store: int = 0  # transitions in the store when the run began: the offline data
    offline_episodes_in_store: int = 0
    offline_done: bool = False


def missing_store_message(task: str, store_path: Path) -> str:
    return f"no demo store at {store_path}: {collect_hint(task, store_path)}"


def empty_store_message(task: str, store_path: Path) -> str:
    return f"store {store_path} holds no episodes: {collect_hint(task, store_path)}"


def open_store(task: str, store_path: Path, mode: str) -> DemoStore:
    if not Path(store_path).exists():
        raise FileNotFoundError(missing_store_message(task, store_path))
    store = DemoStore.open(store_path, mode=mode)
    get_spec(task).check_matches(store.spec, f"store {store_path}")
    if store.num_episodes == 0:
        store.close()
        raise TrainingError(empty_store_message(task, store_path))
    return store


class Trainer:
    """One run: owns the store handle, replay, learner, counters and the run folder."""

    def __init__(
        self,
        run_dir: Path,
        store_path: Path,
        config: TrainConfig | None,
        resume: bool,
        online: bool,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.online = online
        self.progress = progress
        state: dict[str, Any] | None = None
        if resume:
            state = read_checkpoint(self.run_dir)
            config = from_dict(state["config"], f"{state['path']} config")
        elif list_checkpoints(self.run_dir):
            raise TrainingError(
                f"{self.run_dir} already holds a run: pass --resume to continue it, or choose another --out"
            )
        if config is None:
            raise TrainingError("a new run needs a config")
        self.config = config
        self.threads = setup_torch(config)
        self.spec: TaskSpec = get_spec(config.task)
        self.store = open_store(config.task, Path(store_path), "a" if online else "r")
        transitions = self.store.load_transitions()
        self.counters = Counters(**state["counters"]) if state else Counters()
        if state is None:
            self.counters.offline_steps_in_store = self.store.num_steps
            self.counters.offline_episodes_in_store = self.store.num_episodes
        else:
            # Online episodes in the store are the ground truth, even those finished after the checkpoint.
            self.counters.env_steps = self.store.num_steps - self.counters.offline_steps_in_store
            self.counters.online_episodes = self.store.num_episodes - self.counters.offline_episodes_in_store
        remaining = max(0, config.online_steps - self.counters.env_steps) if online else 0
        self.replay = Replay(self.spec.obs_dim, self.spec.act_dim, len(transitions) + remaining + 1, seed=config.seed)
        self.replay.add_transitions(transitions)  # on resume, the online episodes stored so far come after
        self.replay.mark_offline(self.counters.offline_steps_in_store)
        del transitions
        self.learner: AWACLearner = build_learner(config, self.spec, self.replay.offline_obs())
        self.explore_rng = torch.Generator().manual_seed(config.seed + 2)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.run_dir, tensorboard)
        if state is None:
            self.run_id = f"{self.run_dir.name}-{uuid.uuid4().hex[:8]}"
            self.last_eval: dict[str, Any] = {}
            save_config(config, self.run_dir / "config.yaml")
            self.last_checkpoint = self.checkpoint()
        else:
            self.learner.load_state_dict(state["learner"])
            self.replay.generator.set_state(state["replay_rng"])
            self.explore_rng.set_state(state["explore_rng"])
            self.run_id = state["run_id"]
            self.last_eval = dict(state.get("eval") or {})
            self.last_checkpoint = Path(state["path"])
            self._next_checkpoint = self.counters.updates + config.checkpoint_interval
            self.log.write({"event": "resume", "updates": self.counters.updates, "env_steps": self.counters.env_steps})
        self.best_success = best_success(self.run_dir)
        if online:  # this invocation's online episodes are one provenance batch of the store
            arguments = {"run_id": self.run_id, "run_dir": str(self.run_dir.resolve()), "resumed": state is not None}
            self.store.start_batch(Batch.now("online", demonstrator="awac", arguments=arguments))
        self._stats: list[dict[str, torch.Tensor]] = []
        self._log_clock = (time.perf_counter(), self.counters.updates)

    # -- persistence -------------------------------------------------------------------------

    def checkpoint(self) -> Path:
        if not self.learner.weights_finite():
            raise TrainingError(
                f"non-finite weights at update {self.counters.updates}: stopped; "
                f"last good checkpoint kept at {self.last_checkpoint}"
            )
        state = {
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "run_id": self.run_id,
            "counters": asdict(self.counters),
            "learner": self.learner.state_dict(),
            "replay_rng": self.replay.generator.get_state(),
            "explore_rng": self.explore_rng.get_state(),
            "eval": self.last_eval,
        }
        self.last_checkpoint = save_checkpoint(
            self.run_dir, self.counters.updates, state, keep=self.config.keep_checkpoints
        )
        self._next_checkpoint = self.counters.updates + self.config.checkpoint_interval
        return self.last_checkpoint

    # -- one update, with the metric bookkeeping ------------------------------------------------

    def update(self, phase: str) -> None:
        cfg = self.config
        fraction = cfg.offline_fraction if phase == "online" else None
        try:
            stats = self.learner.update(self.replay.sample(cfg.batch_size, fraction))
        except NonFiniteError as exc:
            raise TrainingError(f"{exc}: stopped; last good checkpoint kept at {self.last_checkpoint}") from None
        self.counters.updates += 1
        self._stats.append(stats)
        if self.counters.updates % cfg.log_interval == 0:
            self.write_metrics(phase)

    def updates_per_second(self) -> float:
        start, updates = self._log_clock
        return (self.counters.updates - updates) / max(time.perf_counter() - start, 1e-9)

    def write_metrics(self, phase: str) -> None:
        row: dict[str, Any] = {
            "phase": phase,
            "updates": self.counters.updates,
            "env_steps": self.counters.env_steps,
            "updates_per_s": round(self.updates_per_second(), 2),
            "time": time.time(),
        }
        if self._stats:
            for key in self._stats[0]:
                row[key] = float(torch.stack([s[key] for s in self._stats]).mean())
        self.record(row)
        self._stats.clear()
        self._log_clock = (time.perf_counter(), self.counters.updates)

    def record(self, row: dict[str, Any]) -> None:
        """Log a metrics row; without a progress bar, also print it as one plain line."""
        self.log.write(row)
        if not self.progress:
            print(format_row(row), flush=True)

    def run_eval(self, phase: str, eval_env: Any) -> dict[str, Any]:
        result = evaluate(self.learner.policy, eval_env, self.config.eval_episodes, self.config.seed)
        self.last_eval = {**result, "env_steps": self.counters.env_steps, "updates": self.counters.updates}
        if self.best_success is None or result["success_rate"] > self.best_success:
            self.best_success = result["success_rate"]
            best = {"config": self.config.to_dict(), "spec": self.spec.to_dict(), "run_id": self.run_id}
            save_best(self.run_dir, best, self.learner.policy, asdict(self.counters), self.last_eval)
        self.record(
            {
                "phase": phase,
                "updates": self.counters.updates,
                "env_steps": self.counters.env_steps,
                "eval_success": result["success_rate"],
                "eval_return": result["return"],
                "eval_episodes": result["episodes"],
                "time": time.time(),
            }
        )
        draw_curve(self.run_dir)
        return self.last_eval

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The online action: a sample from the current actor, drawn from the checkpointed exploration generator."""
        actor = self.learner.actor
        return actor.sample(actor(torch.from_numpy(obs)[None]), self.explore_rng)[0].numpy()

    # -- the phases ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run (or continue) both phases; returns the last evaluation."""
        eval_env = make_env(self.config.task, reward=self.store.reward_mode)
        try:
            self.offline_phase(eval_env)
            if self.online:
                self.online_phase(eval_env)
            if self._stats:
                self.write_metrics("online" if self.online else "offline")
            self.checkpoint()
        finally:
            self.store.close()
            self.log.close()
        return self.last_eval

    def offline_phase(self, eval_env: Any) -> None:
        cfg, c = self.config, self.counters
        if c.offline_done:
            return
        bar = tqdm(total=cfg.offline_steps, initial=c.updates, desc="offline", disable=not self.progress)
        while c.updates < cfg.offline_steps:
            self.update("offline")
            if c.updates % cfg.offline_eval_interval == 0 and c.updates < cfg.offline_steps:
                self.run_eval("offline", eval_env)
            if c.updates >= self._next_checkpoint:
                self.checkpoint()
            if c.updates % 100 == 0:
                bar.update(c.updates - bar.n)
                bar.set_postfix(success=self.last_eval.get("success_rate"), ups=f"{self.updates_per_second():.0f}")
        bar.close()
        self.run_eval("offline", eval_env)  # the offline start of the finetuning curve
        c.offline_done = True
        self.checkpoint()

    def online_phase(self, eval_env: Any) -> None:
        cfg, c = self.config, self.counters
        env = make_env(cfg.task, reward=self.store.reward_mode)
        bar = tqdm(total=cfg.online_steps, initial=c.env_steps, desc="online", disable=not self.progress)
        explorer = FunctionActor(self.explore)

        def on_step(step: Step) -> bool:
            c.env_steps += 1
            self.replay.add_step(step.obs, step.action, step.reward, step.next_obs, step.terminated)
            for _ in range(cfg.updates_per_step):
                self.update("online")
            if c.env_steps % cfg.eval_interval == 0:
                self.run_eval("online", eval_env)
            if c.env_steps % 100 == 0:
                bar.update(c.env_steps - bar.n)
                bar.set_postfix(success=self.last_eval.get("success_rate"), ups=f"{self.updates_per_second():.0f}")
            # The run's step budget ends the episode as a time limit would: truncation, never a terminal.
            return c.env_steps >= cfg.online_steps

        while c.env_steps < cfg.online_steps:
            seed = (cfg.seed + 1) * EPISODE_SEED_STRIDE + c.online_episodes
            self.store.append(rollout(env, explorer, seed, source="online", on_step=on_step), spec=self.spec)
            c.online_episodes += 1
            if c.updates >= self._next_checkpoint:
                self.checkpoint()
        bar.update(c.env_steps - bar.n)
        bar.close()
        if c.env_steps % cfg.eval_interval != 0:
            self.run_eval("online", eval_env)
