"""The training loop: offline pretraining on the store, then online finetuning that grows it.

The same AWAC update runs in both phases; online, each env step adds its transition to the
replay (the offline data stays in it, as in the paper) and is followed by
`updates_per_step` updates. Every finished online episode is appended to the store the
moment it ends, with source `online:<run id>`, so runs sharing a store stay apart: a run
pretrains on the sources its config names (train/sources.py) among the episodes the store
held when it began, and only its own online episodes ever come back into its replay.

The update has a core to itself: the env is stepped by the exploration worker, one update
behind the learner (train/explorer.py), and evaluations are scored by the evaluation worker
while training goes on (train/eval_worker.py); both are processes that die with the trainer.

The store, not the process, owns the experience. Checkpoints are taken on episode
boundaries, so a checkpoint's counters name an exact prefix of the run's own episodes. A
resumed run loads that prefix, then redoes the run's later stored episodes step by step as
the killed process did them (the exploration noise is drawn again by the explorer's timing
rule, each step's updates and evaluations run again) before it steps the env, and first
redoes the evaluations its checkpoint holds as outstanding: however often a run is killed,
it ends with the updates, env steps and evaluations of an uninterrupted run, and on the same
machine the same weights.
"""

from __future__ import annotations

import copy
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from awac_robot.demonstrators.catalog import collect_hint
from awac_robot.envs import get_spec
from awac_robot.outputs import RUN, check_output_folder
from awac_robot.provenance import Batch
from awac_robot.spec import TaskSpec
from awac_robot.store import DemoStore, Episode, StoreError, online_source
from awac_robot.store_lock import LOCK_NAME, LockHeld, WriterLock
from awac_robot.train.awac import AWACLearner, NonFiniteError
from awac_robot.train.build import build_learner
from awac_robot.train.checkpoint import (
    FORMAT,
    best_success,
    list_checkpoints,
    read_latest_checkpoint,
    save_best,
    save_checkpoint,
)
from awac_robot.train.config import TrainConfig, from_saved, save_config, setup_torch
from awac_robot.train.eval_worker import EvalRequest, EvalWorker
from awac_robot.train.explorer import (
    ExplorerWorker,
    Transition,
    explore_action,
    exploring_networks,
    one_update_behind,
)
from awac_robot.train.noise_choice import NoiseChooser
from awac_robot.train.replay import Replay
from awac_robot.train.returns import UNKNOWN, returns_of_episodes
from awac_robot.train.runlog import RunLog, format_row
from awac_robot.train.sources import select
from awac_robot.train.store_record import StoreRecord
from awac_robot.train.worker import WorkerError

EPISODE_SEED_STRIDE = 100_000
#: online episodes the logged exploration success and noise multiple are averaged over
RECENT_EPISODES = 20


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite numbers, a run folder in the way, a worker lost); one line says what to do."""


@dataclass
class Counters:
    updates: int = 0
    env_steps: int = 0
    online_episodes: int = 0
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


def new_run_id(run_dir: Path) -> str:
    """The folder name (in the characters a store source allows) and a random suffix: unique per run."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(run_dir).resolve().name).strip("-") or "run"
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Trainer:
    """One run: owns the store handle, replay, learner, counters and the run folder.

    `notes` and `warnings` are lines for the user (what the run trains on, what a resume
    picked up or had to skip); the CLI prints them before training starts.
    """

    def __init__(
        self,
        run_dir: Path,
        store_path: Path | None,
        config: TrainConfig | None,
        resume: bool,
        online: bool,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.online = online
        self.progress = progress
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.last_checkpoint: Path | None = None
        self.evaluator: EvalWorker | None = None
        self.explorer: ExplorerWorker | None = None
        self._evals_to_redo: list[EvalRequest] = []
        check_output_folder(self.run_dir, "--out", RUN)
        #: held until `train` ends: a second train/finetune on this folder is refused, never interleaved
        self._lock = self._lock_run_dir()
        try:
            self._start(store_path, config, resume, online, tensorboard)
        except BaseException:
            self._release_run_dir()
            raise

    def _lock_run_dir(self) -> WriterLock:
        self._created_run_dir = not self.run_dir.exists()
        lock = WriterLock(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except LockHeld as held:
            raise TrainingError(
                f"run folder {self.run_dir} is in use by another train or finetune ({held.holder}): "
                "wait for it to end, or choose another --out"
            ) from None
        except OSError as exc:
            raise TrainingError(f"cannot write the run folder {self.run_dir} ({exc.strerror or exc})") from None
        return lock

    def _release_run_dir(self) -> None:
        """Let go of the run folder; one this run created and left empty is removed (a run that never began)."""
        self._lock.release()
        if self._created_run_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _start(
        self, store_path: Path | None, config: TrainConfig | None, resume: bool, online: bool, tensorboard: bool
    ) -> None:
        state = self._resume_state() if resume else None
        if state is None:
            if list_checkpoints(self.run_dir):
                raise TrainingError(
                    f"{self.run_dir} already holds a run: pass --resume to continue it, or choose another --out"
                )
            if config is None or store_path is None:
                raise TrainingError("a new run needs a config and a store")
            self.run_id = new_run_id(self.run_dir)
        else:
            config = from_saved(state["config"], f"{state['path']} config")
            self.run_id = state["run_id"]
            store_path = store_path or Path(state["store"]["path"])
        self.config = config
        self.online_source = online_source(self.run_id)
        self.threads = setup_torch(config)
        self.spec: TaskSpec = get_spec(config.task)
        self.store = open_store(config.task, Path(store_path), "a" if online else "r")
        try:
            self._redo = self._load_data(state)
        except BaseException:
            self.store.close()
            raise
        self.learner: AWACLearner = build_learner(config, self.spec, self.replay.offline_obs())
        self.explore_rng = torch.Generator().manual_seed(config.seed + 2)
        self.noise = NoiseChooser(config.explore_noise, config.explore_choice, config.explore_memory, config.seed)
        for solved in self._kept_solved:  # the checkpointed online episodes, as they chose their noise
            self.noise.record(bool(solved))
        #: with `handover: best`, the learner state and evaluation of the best offline evaluation so far
        self.offline_best: dict[str, Any] | None = None
        #: the report evaluations done (train/evaluation.py), by name: "handover", then "final"
        self.reports: dict[str, dict[str, Any]] = {}
        self.log = RunLog(self.run_dir, tensorboard)
        if state is None:
            self.last_eval: dict[str, Any] = {}
            save_config(config, self.run_dir / "config.yaml")
            self.log.write(
                {
                    "event": "start",
                    "run_id": self.run_id,
                    "sources": list(config.sources),
                    "pretraining": self.pretraining.to_dict(),
                    "store": self.store_record.to_dict(),
                    "online_source": self.online_source,
                }
            )
            self.notes.append(f"run {self.run_id}: pretraining on {self.pretraining.describe()}")
            self.checkpoint()
        else:
            self._restore(state)
        self.best_success = best_success(self.run_dir)
        if online:  # this invocation's online episodes are one provenance batch of the store
            arguments = {"run_id": self.run_id, "run_dir": str(self.run_dir.resolve()), "resumed": state is not None}
            self.store.start_batch(Batch.now("online", demonstrator="awac", arguments=arguments))
        self._stats: list[dict[str, torch.Tensor]] = []
        self._log_clock = (time.perf_counter(), self.counters.updates)

    def _resume_state(self) -> dict[str, Any]:
        state, unreadable = read_latest_checkpoint(self.run_dir)
        name = Path(state["path"]).name
        for problem in unreadable:
            self.warnings.append(f"{problem}: resuming from the previous kept checkpoint {name}")
        if state["format"] != FORMAT:
            raise TrainingError(
                f"{state['path']} was written before runs recorded their store (checkpoint format {state['format']}): "
                "it can be exported or evaluated, not resumed; start a new run with another --out"
            )
        return state

    def _load_data(self, state: dict[str, Any] | None) -> np.ndarray:
        """Check the store, pick the pretraining set, fill the replay; returns the stored episodes to redo."""
        meta = self.store.episode_meta()
        if state is None:
            self.store_record = StoreRecord.of(self.store, meta)
            self.counters = Counters()
        else:
            self.store_record = StoreRecord.from_dict(state["store"])
            self.store_record.check(self.store, meta, str(self.run_dir))
            if str(Path(self.store.path).resolve()) != self.store_record.path:
                self.notes.append(
                    f"store {self.store.path} is not where the run found it ({self.store_record.path}), "
                    f"but its first {self.store_record.episodes} episodes are the ones the run began with"
                )
            self.counters = Counters(**state["counters"])
        first, c = self.store_record.episodes, self.counters
        self.pretraining = select(
            meta["source"][:first], meta["length"][:first], self.config.sources, f"store {self.store.path}"
        )
        own = np.flatnonzero(meta["source"] == self.online_source)
        kept, redo = own[: c.online_episodes], own[c.online_episodes :]
        self._kept_solved = meta["success"][kept]
        if len(kept) < c.online_episodes or int(meta["length"][kept].sum()) != c.env_steps:
            raise StoreError(
                f"store {self.store.path} holds {len(own)} online episodes of run {self.run_id} "
                f"({int(meta['length'][own].sum())} env steps), but its checkpoint counts {c.online_episodes} "
                f"({c.env_steps} env steps): resume on the store the run wrote to"
            )
        transitions = self.store.load_transitions(episodes=np.concatenate([self.pretraining.episodes, kept]))
        remaining = max(0, self.config.online_steps - c.env_steps) if self.online else 0
        self.replay = Replay(
            self.spec.obs_dim, self.spec.act_dim, len(transitions) + remaining + 1, seed=self.config.seed
        )
        # The pretraining set first (imitated), then this run's checkpointed episodes (imitated if solved).
        solved_rows = np.repeat(meta["success"][kept], meta["length"][kept])
        lengths = meta["length"][np.sort(np.concatenate([self.pretraining.episodes, kept]))]
        floors = self.floors(transitions.reward, transitions.terminal, lengths)
        imitate = np.concatenate([np.ones(self.pretraining.steps), solved_rows])
        self.replay.add_transitions(transitions, imitate, floors)
        self.replay.look_ahead(lengths, self.config.n_step, self.config.discount)
        self.replay.mark_offline(self.pretraining.steps)
        self._redo_steps = int(meta["length"][redo].sum())
        return redo

    def _restore(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.replay.generator.set_state(state["replay_rng"])
        self.explore_rng.set_state(state["explore_rng"])
        self.last_eval = dict(state.get("eval") or {})
        self._evals_to_redo = [EvalRequest.from_dict(request) for request in state.get("evals_outstanding", [])]
        self.offline_best = state.get("offline_best")
        self.reports = dict(state.get("reports") or {})
        self.last_checkpoint = Path(state["path"])
        self._next_checkpoint = self.counters.updates + self.config.checkpoint_interval
        redo, c = self._redo, self.counters
        self.log.write(
            {
                "event": "resume",
                "checkpoint": self.last_checkpoint.name,
                "updates": c.updates,
                "env_steps": c.env_steps,
                "online_episodes": c.online_episodes,
                "redo_episodes": len(redo),
                "redo_env_steps": self._redo_steps,
                "redo_evals": [request.counters["updates"] for request in self._evals_to_redo],
            }
        )
        note = (
            f"resuming run {self.run_id} from {self.last_checkpoint.name}: update {c.updates}, "
            f"{c.env_steps} online env steps ({c.online_episodes} episodes)"
        )
        if len(redo):
            note += (
                f"; the store holds {len(redo)} later episodes of this run ({self._redo_steps} env steps): "
                f"redoing their {self._redo_steps * self.config.updates_per_step} updates from the store first"
            )
        if self._evals_to_redo:
            note += f"; redoing the {len(self._evals_to_redo)} evaluation(s) still outstanding at that checkpoint"
        self.notes.append(note)

    # -- persistence -------------------------------------------------------------------------

    def checkpoint(self) -> Path:
        if not self.learner.weights_finite():
            kept = (
                f"last good checkpoint kept at {self.last_checkpoint}" if self.last_checkpoint else "none was written"
            )
            raise TrainingError(f"non-finite weights at update {self.counters.updates}: stopped; {kept}")
        state = {
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "run_id": self.run_id,
            "store": self.store_record.to_dict(),
            "pretraining": self.pretraining.to_dict(),
            "counters": asdict(self.counters),
            "learner": self.learner.state_dict(),
            "replay_rng": self.replay.generator.get_state(),
            "explore_rng": self.explore_rng.get_state(),
            "eval": self.last_eval,
            "reports": self.reports,
            # evaluations asked for but not back yet: a resume redoes them (their snapshots are here)
            "evals_outstanding": [request.to_dict() for request in self.evaluator.outstanding()]
            if self.evaluator is not None
            else [],
        }
        if self.offline_best is not None and not self.counters.offline_done:
            state["offline_best"] = self.offline_best
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
        if self.evaluator is not None and self.evaluator.busy:
            self.record_evals()
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
        recent = self.noise.recent(RECENT_EPISODES) if phase == "online" else None
        if recent is not None:
            row["explore_success"], row["explore_noise"] = recent
        self.record(row)
        self._stats.clear()
        self._log_clock = (time.perf_counter(), self.counters.updates)

    def record(self, row: dict[str, Any]) -> None:
        """Log a metrics row; without a progress bar, also print it as one plain line."""
        self.log.write(row)
        if not self.progress:
            print(format_row(row), flush=True)

    def start_eval(self, phase: str) -> None:
        """Snapshot the evaluated policy for the evaluation worker; its result is recorded when it is back.

        With `handover: best` an offline evaluation is waited for: the handover keeps the whole
        learner as it was when evaluated, and the learner must not move on before the result says
        whether it is the best so far.
        """
        assert self.evaluator is not None
        self.evaluator.submit(EvalRequest.snapshot(phase, asdict(self.counters), time.time(), self.learner.policy))
        if phase == "offline" and self.config.handover == "best":
            self.record_evals(wait=True)

    def record_evals(self, wait: bool = False) -> None:
        """Record the evaluations that are back (with `wait`: every one asked for), in the order they were asked."""
        assert self.evaluator is not None
        for request, result in self.evaluator.results(wait):
            self.record_eval(request, result)

    def report(self, name: str) -> None:
        """Score the policy as it is now on the report seeds, once per run, and wait for it.

        Reports never choose anything (no best.pt, no handover): they are the unbiased figures a
        run is judged by. Waiting keeps them out of every checkpoint's outstanding evaluations, so
        a fork of the checkpoint (bench/fork.py) inherits the handover's report instead of redoing it.
        """
        if self.config.report_episodes == 0 or name in self.reports:
            return
        assert self.evaluator is not None
        counters = asdict(self.counters)
        self.evaluator.submit(EvalRequest.snapshot(self.phase, counters, time.time(), self.learner.policy, name))
        self.record_evals(wait=True)

    @property
    def phase(self) -> str:
        return "online" if self.counters.offline_done else "offline"

    def record_eval(self, request: EvalRequest, result: dict[str, float]) -> None:
        counters = request.counters
        if request.report is not None:
            where = {"env_steps": counters["env_steps"], "updates": counters["updates"]}
            self.reports[request.report] = {**result, **where}
            self.record(
                {
                    "phase": request.phase,
                    "report": request.report,
                    "updates": counters["updates"],
                    "env_steps": counters["env_steps"],
                    "report_success": result["success_rate"],
                    "report_return": result["return"],
                    "report_episodes": result["episodes"],
                    "time": request.time,
                }
            )
            return
        self.last_eval = {**result, "env_steps": counters["env_steps"], "updates": counters["updates"]}
        if self.best_success is None or result["success_rate"] > self.best_success:
            self.best_success = result["success_rate"]
            best = {"config": self.config.to_dict(), "spec": self.spec.to_dict(), "run_id": self.run_id}
            save_best(self.run_dir, best, request.policy, counters, self.last_eval)
        best_offline = self.offline_best["eval"]["success_rate"] if self.offline_best else -1.0
        if request.phase == "offline" and self.config.handover == "best" and result["success_rate"] > best_offline:
            # start_eval waited for this result, so the learner is still the one evaluated
            self.offline_best = {"eval": self.last_eval, "learner": copy.deepcopy(self.learner.state_dict())}
        self.record(
            {
                "phase": request.phase,
                "updates": counters["updates"],
                "env_steps": counters["env_steps"],
                "eval_success": result["success_rate"],
                "eval_return": result["return"],
                "eval_episodes": result["episodes"],
                "time": request.time,
            }
        )
        assert self.evaluator is not None
        self.evaluator.draw_curve(self.run_dir)

    # -- the phases ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run (or continue) both phases with their workers; returns the last evaluation."""
        finished = False
        try:
            self.start_workers()
            self.offline_phase()
            if self.online:
                self.online_phase()
                if self.counters.env_steps > 0:  # else the final policy is the handed-over one, reported already
                    self.report("final")
            if self._stats:
                self.write_metrics("online" if self.online else "offline")
            self.record_evals(wait=True)
            self.checkpoint()
            finished = True
        except WorkerError as exc:
            raise TrainingError(str(exc)) from None
        finally:
            for worker in (self.explorer, self.evaluator):
                if worker is not None:
                    worker.close(finish=finished)  # a run stopping on an error or Ctrl-C does not wait for them
            self.store.close()
            self.log.close()
            self._release_run_dir()
        return self.last_eval

    def start_workers(self) -> None:
        """The evaluation worker (first given the evaluations a resume redoes), and the explorer if steps are left."""
        reward_mode = self.store.reward_mode
        self.evaluator = EvalWorker(self.config, self.spec, reward_mode)
        for request in self._evals_to_redo:
            self.evaluator.submit(request)
        pids = {"evaluation": self.evaluator.worker.pid}
        if self.online and self.counters.env_steps < self.config.online_steps:
            networks = exploring_networks(self.learner.actor, self.learner.policy, self.config)
            self.explorer = ExplorerWorker(self.config, self.spec, reward_mode, networks)
            pids["exploration"] = self.explorer.worker.pid
        self.log.write({"event": "workers", "pids": pids})

    def offline_phase(self) -> None:
        cfg, c = self.config, self.counters
        if c.offline_done:
            return
        bar = tqdm(total=cfg.offline_steps, initial=c.updates, desc="offline", disable=not self.progress)
        while c.updates < cfg.offline_steps:
            self.update("offline")
            if c.updates % cfg.offline_eval_interval == 0 and c.updates < cfg.offline_steps:
                self.start_eval("offline")
            if c.updates >= self._next_checkpoint:
                self.checkpoint()
            if c.updates % 100 == 0:
                bar.update(c.updates - bar.n)
                bar.set_postfix(success=self.last_eval.get("success_rate"), ups=f"{self.updates_per_second():.0f}")
        bar.close()
        self.start_eval("offline")  # the offline start of the finetuning curve
        self.hand_over()
        self.report("handover")
        c.offline_done = True
        self.checkpoint()

    def hand_over(self) -> None:
        """With `handover: best`, go back to the learner of the best offline evaluation; it starts the online phase.

        Offline success often peaks before the last update; the evaluation being deterministic on
        fixed seeds, the restored learner's evaluation is the one recorded then, and it is logged
        again as the offline start of the finetuning curve.
        """
        best = self.offline_best
        if best is None or best["eval"]["updates"] == self.counters.updates:
            return
        self.learner.load_state_dict(best["learner"])
        self.learner.updates = self.counters.updates
        self.last_eval = dict(best["eval"])
        self.log.write({"event": "handover", "from_updates": best["eval"]["updates"], "updates": self.counters.updates})
        self.record(
            {
                "phase": "offline",
                "updates": self.counters.updates,
                "env_steps": self.counters.env_steps,
                "eval_success": best["eval"]["success_rate"],
                "eval_return": best["eval"]["return"],
                "eval_episodes": best["eval"]["episodes"],
                "handover_from": best["eval"]["updates"],
                "time": time.time(),
            }
        )
        self.offline_best = None

    def online_phase(self) -> None:
        cfg, c = self.config, self.counters
        bar = tqdm(total=cfg.online_steps, initial=c.env_steps, desc="online", disable=not self.progress)
        self.redo_stored_episodes(bar)
        while c.env_steps < cfg.online_steps:
            assert self.explorer is not None
            seed = (cfg.seed + 1) * EPISODE_SEED_STRIDE + c.online_episodes
            budget, scale = cfg.online_steps - c.env_steps, self.noise.next_scale()
            for step in self.explorer.steps(seed, budget, self.explore_rng, scale, self.online_source):
                self.learn_from_step(step, bar)
            episode, explore_state = self.explorer.finish()
            self.explore_rng.set_state(explore_state)
            self.store.append(episode, spec=self.spec)
            self.end_episode(episode)
        bar.update(c.env_steps - bar.n)
        bar.close()
        if c.env_steps % cfg.eval_interval != 0:
            self.start_eval("online")

    def redo_stored_episodes(self, bar: tqdm) -> None:
        """Feed this run's episodes stored after its checkpoint through the online loop again, env-free.

        The exploration noise is drawn for every step as the killed process drew it, from a copy
        of the actor kept one update behind by the explorer's rule, so the RNG (and, updates
        being the same, the next action sampled) stays where it would have been.
        """
        if not len(self._redo):
            return
        wanted = set(self._redo.tolist())
        learners = exploring_networks(self.learner.actor, self.learner.policy, self.config)
        acting = {name: copy.deepcopy(network).requires_grad_(False) for name, network in learners.items()}
        actor, mean = acting["actor"], acting.get("mean", acting["actor"])
        steps = 0
        reproduced = [0]

        def publish() -> None:
            for name, network in acting.items():
                network.load_state_dict(learners[name].state_dict())

        def stored_steps(episode: Episode, scale: float) -> Iterator[Transition]:
            for t in range(episode.length):
                drawn = explore_action(actor, mean, episode.obs[t], self.explore_rng, scale)
                reproduced[0] += bool(np.array_equal(drawn, episode.action[t]))
                last = t == episode.length - 1
                obs, next_obs = episode.obs[t], episode.obs[t + 1]
                yield Transition(obs, episode.action[t], episode.reward[t], next_obs, episode.terminated[t], last)

        for index, episode in enumerate(self.store.episodes()):
            if index not in wanted:
                continue
            for step in one_update_behind(stored_steps(episode, self.noise.next_scale()), publish):
                self.learn_from_step(step, bar)
            steps += episode.length
            self.end_episode(episode)
        self.log.write(
            {
                "event": "redo",
                "episodes": len(wanted),
                "env_steps": steps,
                "updates": self.counters.updates,
                "actions_reproduced": reproduced[0],
            }
        )
        self._redo = self._redo[:0]

    def learn_from_step(self, step: Transition, bar: tqdm) -> None:
        """One online env step's bookkeeping: count it, add it to the replay, update, evaluate on schedule."""
        cfg, c = self.config, self.counters
        c.env_steps += 1
        self.replay.add_step(step.obs, step.action, step.reward, step.next_obs, bool(step.terminated))
        for _ in range(cfg.updates_per_step):
            self.update("online")
        if c.env_steps % cfg.eval_interval == 0:
            self.start_eval("online")
        if c.env_steps % 100 == 0:
            bar.update(c.env_steps - bar.n)
            bar.set_postfix(success=self.last_eval.get("success_rate"), ups=f"{self.updates_per_second():.0f}")

    def floors(self, reward: np.ndarray, terminal: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The replay's floor per row of these whole episodes: their returns under `target_floor: return`."""
        cfg = self.config
        if cfg.target_floor == "none":
            return np.full(len(reward), UNKNOWN, dtype=np.float32)
        critic_reward = np.asarray(reward, dtype=np.float64) * cfg.reward_scale + cfg.reward_offset
        return returns_of_episodes(critic_reward, np.asarray(terminal, dtype=np.float64), lengths, cfg.discount)

    def end_episode(self, episode: Episode) -> None:
        """Checkpoints are taken here only, on episode boundaries, so their counters match the store."""
        self.counters.online_episodes += 1
        self.noise.record(episode.solved)
        floors = self.floors(episode.reward, episode.terminated, np.array([episode.length]))
        self.replay.end_episode(episode.solved, floors)
        self.replay.look_ahead(np.array([episode.length]), self.config.n_step, self.config.discount)
        if self.counters.updates >= self._next_checkpoint:
            self.checkpoint()
