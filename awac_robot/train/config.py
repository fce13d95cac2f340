"""Training configuration: one dataclass, loaded from YAML with every key checked.

Defaults follow the AWAC paper's code for the dexterous hand tasks except where a measured
reason on this CPU says otherwise (each such field's comment says why). A typo in a YAML key
is an error, never a silently ignored setting.
"""

from __future__ import annotations

import math
import os
import sysconfig
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from awac_robot.train.awac import ADVANTAGE_SCALES, ALGOS, UpdateConfig
from awac_robot.train.sources import DEMONSTRATIONS, token_problem
from awac_robot.yaml_files import read_mapping, reject_unknown

EXPLORE_MEANS = ("actor", "policy")
HANDOVERS = ("last", "best")


class ConfigError(ValueError):
    """A training config the trainer cannot use; the message names the file and the key."""


@dataclass(frozen=True)
class TrainConfig:
    task: str = "door"
    algo: str = "awac"  # "awac" or "bc" (behaviour cloning on the same actor: the baseline)
    seed: int = 0
    # torch intra-op threads (0 = every core). One, because libgomp's spin-waiting threads collapse when any
    # other process wants a core: bench/updates.py at batch 256 beside one busy process ran 2.2 updates/s with
    # 2 threads and 90 with 1; on an otherwise idle 2-core machine 2 threads reach ~135. The run's evaluation and
    # exploration workers take the second core. See train/__init__.py.
    threads: int = 1
    # torch.compile the update's losses (forward and backward; the same maths): ~20% less CPU per update at one
    # thread here. Off by default because it needs a C++ compiler and the Python headers, and compiling costs
    # 4-20 s per process, more than a short run saves. docs/benchmarks.md "Speed of the update" has the figures.
    compile: bool = False

    # networks (paper: 2 critics + targets, 256x256 MLPs, state-independent log-std)
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    # Paper: 2. Measured, not adopted yet: 4 on door (1 seed, 25k offline + 10k online, eval every 1k over 20
    # episodes) went 90% offline -> 100 100 95 90 100 95 100 95 95 95%, a little steadier than 2 critics
    # (85-100% with a 80% low), but at 43-49 updates/s instead of ~85: one seed cannot carry that cost.
    critic_members: int = 2
    # Beyond the paper, measured: on door without it Q(s, a) passed the feasible maximum 0 (sparse
    # rewards are -1/0) by update 6k and reached +32 by 20k offline; with it Q stayed in [-100, 0].
    critic_layer_norm: bool = True
    log_std_init: float = 0.0
    log_std_min: float = -6.0
    log_std_max: float = 0.0

    # update (paper: Adam 3e-4, gamma 0.99, tau 5e-3, policy weight decay 1e-4)
    lr: float = 3e-4
    actor_weight_decay: float = 1e-4
    discount: float = 0.99
    target_tau: float = 5e-3
    # Temperature of the advantage weights: 1.0, the soft end of the paper's 0.3-1 range. Measured on door
    # (bench/learning.py, noisy DAPG-expert + human store with 39% success, 1 seed each, 25k offline updates):
    # at 0.3 the weights' effective sample size collapsed to ~1.5 of 256 and eval success went 70% (offline) ->
    # 100% (25k online) -> 20% (50k); at 1.0 it stayed ~20-200 and went 80% -> 100% (15k) -> 70% (50k).
    awr_lambda: float = 1.0
    # "none": the paper's A / lambda; "batch_std": A / (lambda * std(A) in the batch), a temperature that does
    # not depend on the scale of Q. Measurements: docs/benchmarks.md.
    advantage_scale: str = "none"
    # Paper: 1024. Compared per wall-clock second on door (one thread each, same store and samples): offline
    # (bench/batch.py) 1024 reached 100% at 96 s and held it, 256 reached 100% at 76 s and sagged to 80% by
    # 25k updates; online (bench/learning.py, 1024: 2 seeds) both hover at 86-100% from ~500 s on, but 256 runs
    # 84 updates/s against 24, so it takes 3.5x the env steps per second (100k online in ~1700 s vs ~5000 s).
    batch_size: int = 256
    # r' = r * scale + offset. Measured, not adopted (door, 1 seed each, 25k offline + 10k online, eval every 1k
    # over 20 episodes): offset 1 (rewards 0/1) 95% offline -> 95 95 70 80 90 85 95 95 100 100%; scale 0.1
    # 100% -> 95 100 100 100 95 100 100 100 95 95%, steadier, but it shrinks advantages tenfold (like lambda 10,
    # closer to BC, which collapses online later than 10k steps), so it needs a long multi-seed run first.
    reward_scale: float = 1.0
    reward_offset: float = 0.0
    # Beyond the paper, measured: evaluate and export a Polyak average of the actor (this rate per update, a
    # ~200-update memory) while the actor itself explores. With batch-softmax weights one sample can carry a
    # third of a batch's gradient, and the actor's success jitters from one evaluation to the next. Forks of one
    # offline run on door (eval every 1k online steps, 20 episodes): actor 75 95 90 85 80 95 70 90 90 45%,
    # average 85 90 95 90 100 80 100 90 85 100%. null = the actor itself, as in the paper.
    policy_average: float | None = 0.005
    # The mean the online exploration samples around: "actor" (the paper's: the actor being trained) or "policy"
    # (the evaluated policy: the averaged actor when policy_average is set), always with the actor's learned std.
    explore_mean: str = "actor"
    # Multiples of the actor's std the exploration noise is drawn with, one per online episode in turn (episode i
    # uses explore_noise[i % len]): (1.0,) is the paper's. A ladder such as (1.0, 0.3, 0.1, 0.0) is Ape-X's answer
    # to not knowing how much noise a task tolerates (Horgan et al. 2018: a different epsilon per actor).
    explore_noise: tuple[float, ...] = (1.0,)
    # The offline weights the online phase starts from: "last" (after offline_steps updates, the paper's) or
    # "best" (the learner as it was at the offline evaluation with the highest success, earliest of equals).
    handover: str = "last"

    # data: the store sources pretrained on (train/sources.py); default every demonstration, no online episodes
    sources: tuple[str, ...] = DEMONSTRATIONS

    # schedule
    offline_steps: int = 25_000  # gradient updates on the store before any interaction
    online_steps: int = 100_000  # env steps of finetuning
    # Paper: 1. Measured, not adopted: 2 on a fork of one offline door run (10k online steps, eval every 1k over
    # 20 episodes) scored 85 70 85 100 55 70 65 65 80 75% against 85 90 95 90 100 80 100 90 85 100% with 1.
    updates_per_step: int = 1
    # Offline share of each online batch; None = uniform over everything, as in the paper. Measured, not adopted:
    # 0.5 on door (1 seed, actor not averaged, eval over 30 episodes every 5k online steps) went 93% offline ->
    # 57 93 80 77 83 80%, the same early dip as uniform; early on it redraws the first few online episodes
    # half of every batch.
    offline_fraction: float | None = None

    # evaluation, logging, checkpoints
    eval_episodes: int = 30  # standard error ~7 points at 80% success (10 episodes: ~13)
    eval_interval: int = 5_000  # env steps between evaluations online
    offline_eval_interval: int = 5_000  # updates between evaluations offline
    log_interval: int = 1_000  # updates between metric lines
    checkpoint_interval: int = 5_000  # updates between checkpoints
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for item in fields(self):  # first, so no range check below ever sees NaN (which fails every comparison)
            value = getattr(self, item.name)
            self._require(not isinstance(value, float) or math.isfinite(value), item.name, "must be finite")
        self._require(self.algo in ALGOS, "algo", f"must be one of {', '.join(ALGOS)}")
        self._require(self.seed >= 0, "seed", "must be >= 0 (env seeds are derived from it)")
        self._require(self.threads >= 0, "threads", "must be >= 0 (0 = every core)")
        self._require(len(self.actor_hidden) > 0 and min(self.actor_hidden) > 0, "actor_hidden", "needs positive sizes")
        self._require(
            len(self.critic_hidden) > 0 and min(self.critic_hidden) > 0, "critic_hidden", "needs positive sizes"
        )
        self._require(self.critic_members >= 1, "critic_members", "must be >= 1")
        self._require(self.log_std_min <= self.log_std_max, "log_std_min", "must be <= log_std_max")
        lo, hi = self.log_std_min, self.log_std_max
        self._require(
            lo <= self.log_std_init <= hi, "log_std_init", f"must be in [log_std_min, log_std_max] = [{lo}, {hi}]"
        )
        self._require(self.lr > 0, "lr", "must be > 0")
        self._require(self.actor_weight_decay >= 0, "actor_weight_decay", "must be >= 0")
        self._require(0 < self.discount <= 1, "discount", "must be in (0, 1]")
        self._require(0 < self.target_tau <= 1, "target_tau", "must be in (0, 1]")
        self._require(self.awr_lambda > 0, "awr_lambda", "must be > 0")
        self._require(self.advantage_scale in ADVANTAGE_SCALES, "advantage_scale", f"must be one of {ADVANTAGE_SCALES}")
        self._require(self.explore_mean in EXPLORE_MEANS, "explore_mean", f"must be one of {EXPLORE_MEANS}")
        noise = self.explore_noise
        self._require(
            len(noise) > 0 and all(math.isfinite(x) and 0 <= x <= 10 for x in noise),
            "explore_noise",
            "needs one or more finite multiples in [0, 10]",
        )
        self._require(self.handover in HANDOVERS, "handover", f"must be one of {HANDOVERS}")
        self._require(self.batch_size >= 2, "batch_size", "must be >= 2")
        self._require(self.reward_scale > 0, "reward_scale", "must be > 0 (a negative scale turns rewards into costs)")
        self._require(token_problem(self.sources) is None, "sources", str(token_problem(self.sources)))
        self._require(self.offline_steps >= 0, "offline_steps", "must be >= 0")
        self._require(self.online_steps >= 0, "online_steps", "must be >= 0")
        avg = self.policy_average
        self._require(avg is None or 0 < avg <= 1, "policy_average", "must be null or in (0, 1]")
        self._require(self.updates_per_step >= 1, "updates_per_step", "must be >= 1")
        frac = self.offline_fraction
        self._require(frac is None or 0 <= frac <= 1, "offline_fraction", "must be null or in [0, 1]")
        for name in ("eval_episodes", "eval_interval", "offline_eval_interval", "log_interval", "checkpoint_interval"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        self._require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")

    def _require(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}' {message}, got {getattr(self, key)!r}")

    def update_config(self) -> UpdateConfig:
        return UpdateConfig(
            algo=self.algo,
            discount=self.discount,
            target_tau=self.target_tau,
            awr_lambda=self.awr_lambda,
            lr=self.lr,
            actor_weight_decay=self.actor_weight_decay,
            reward_scale=self.reward_scale,
            reward_offset=self.reward_offset,
            policy_average=self.policy_average,
            advantage_scale=self.advantage_scale,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes}, "config")


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Check `value` against a field's type (int, float, str, bool, tuple[int, ...], X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(value, inner, key, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(annotation)[0], key, where) for v in value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: key '{key}' must be {annotation.__name__}, got {value!r}")


def from_dict(data: dict[str, Any], where: str) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    reject_unknown(data, (f.name for f in fields(TrainConfig)), where, ConfigError)
    values = {key: _coerce(value, hints[key], key, where) for key, value in data.items()}
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> TrainConfig:
    return from_dict(read_mapping(path, "config file", ConfigError), str(path))


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def setup_torch(config: TrainConfig) -> int:
    """Thread count, denormal flushing, seeds and the compiler `compile` needs; returns the thread count used.

    Denormals appear as weights decay towards zero and make float32 math on x86 many times
    slower; flushing them costs nothing in accuracy that matters here.
    """
    if config.compile:
        require_cpp_compiler()
    threads = config.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    return threads


def require_cpp_compiler() -> None:
    """torch.compile builds C++ kernels against Python.h: without either it would fail deep inside the first update."""
    from torch._inductor import cpp_builder, exc

    fix = "or set compile: false"
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise ConfigError(
            f"config key 'compile' is true, but torch.compile finds no C++ compiler ($CXX or g++): install one "
            f"(e.g. apt-get install g++) {fix}"
        ) from None
    include = Path(sysconfig.get_path("include"))
    if not (include / "Python.h").exists():
        raise ConfigError(
            f"config key 'compile' is true, but torch.compile needs the Python headers and {include} has no "
            f"Python.h: install them (e.g. apt-get install python3-dev) {fix}"
        )
