"""Training configuration: one dataclass, loaded from YAML with every key checked.

Defaults follow the AWAC paper's code for the dexterous hand tasks except where a measured
reason on this CPU says otherwise (each such field's comment says why; docs/defaults.md has the
measurements). A typo in a YAML key is an error, never a silently ignored setting.
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

from awac_robot.rollout import MAX_SEED
from awac_robot.train.awac import (
    ADVANTAGE_SCALES,
    ALGOS,
    IMITATE_ONLINE,
    TARGET_CLIPS,
    TARGET_FLOORS,
    VALUE_ACTIONS,
    UpdateConfig,
)
from awac_robot.train.evaluation import MAX_REPORT_EPISODES, MAX_SELECT_EPISODES
from awac_robot.train.noise_choice import RULES
from awac_robot.train.sources import DEMONSTRATIONS, token_problem
from awac_robot.yaml_files import read_mapping, reject_unknown

#: the largest batch and layer width a config may ask for (the paper's are 1024 and 256)
MAX_BATCH, MAX_WIDTH = 65_536, 16_384
EXPLORE_MEANS = ("actor", "policy")
HANDOVERS = ("last", "best")


class ConfigError(ValueError):
    """A training config the trainer cannot use; the message names the file and the key."""


@dataclass(frozen=True)
class TrainConfig:
    task: str = "door"
    algo: str = "awac"  # "awac" or "bc" (behaviour cloning on the same actor: the baseline)
    seed: int = 0
    # torch intra-op threads (0 = every core). One, because libgomp's spin-waiting threads fall off a cliff
    # whenever another process wants a core, and the run's evaluation and exploration workers take the second
    # core (docs/defaults.md has the figures for this and every field below).
    threads: int = 1
    # torch.compile the update's losses (forward and backward; the same maths). Off by default because it needs
    # a C++ compiler and the Python headers, and compiling costs more than a short run saves.
    compile: bool = False
    # Seconds an evaluation or exploration worker may go without a heartbeat (a thread of its own, every 0.5 s)
    # before the run stops, resumable, naming it: generous, because a loaded machine delays a thread by seconds.
    worker_timeout: float = 60.0

    # networks (paper: 2 critics + targets, 256x256 MLPs, state-independent log-std)
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    # Paper: 2. Four were a little steadier on door at half the updates/s: not worth it on one seed's evidence.
    critic_members: int = 2
    # Beyond the paper: without it Q(s, a) climbs past the feasible maximum of sparse -1/0 rewards.
    critic_layer_norm: bool = True
    log_std_init: float = 0.0
    log_std_min: float = -6.0
    log_std_max: float = 0.0

    # update (paper: Adam 3e-4, gamma 0.99, tau 5e-3, policy weight decay 1e-4)
    lr: float = 3e-4
    actor_weight_decay: float = 1e-4
    discount: float = 0.99
    target_tau: float = 5e-3
    # Temperature of the advantage weights: 1.0, the soft end of the paper's 0.3-1 range; at 0.3 the weights
    # collapsed onto a few samples per batch and online success fell later on.
    awr_lambda: float = 1.0
    # "none": the paper's A / lambda; "batch_std": A / (lambda * std(A) in the batch), a temperature that does
    # not depend on the scale of Q; "ess": lambda chosen per batch (awr_lambda unused) to hold the weights'
    # effective sample size at target_ess of the batch; "ess_floor": awr_lambda, or the "ess" temperature in a
    # batch where awr_lambda's weights fall below that ESS; "td_error": A / max(awr_lambda, the RMS Bellman error of
    # the batch's critics), so advantages within the critics' own error do not pick what the actor copies
    # (docs/benchmarks.md has what each measured).
    advantage_scale: str = "none"
    target_ess: float = 0.25
    # Which online rows the actor's weighted likelihood is fitted to: "solved" (the rows of online episodes that
    # ended solved; failed ones still train the critic) or "all" (the paper's). Offline rows always are. With
    # sparse rewards the weights hardly tell failed exploration from a demonstration, so "all" copies it.
    imitate_online: str = "solved"
    # "return": floor every Bellman target at its row's discounted return to the end of its episode (Cal-QL's
    # Monte-Carlo bound; train/returns.py), so a sparse success reaches the start of its episode at once; "none":
    # the paper's plain backup.
    target_floor: str = "none"
    # Env steps each Bellman target sums before it bootstraps (at most; never past its episode's end). Paper: 1.
    # n carries a sparse success n steps back per backup, at the bias of the data's own actions for n - 1 steps.
    n_step: int = 1
    # "reward_range": clip every Bellman target to the discounted values the replay's rewards can reach,
    # [min(r, 0), max(r, 0)] / (1 - gamma) ([-100, 0] for the sparse reward at 0.99), since the minimum over
    # critics drifts below what any return can be; "none": the paper's plain backup.
    target_clip: str = "none"
    # The action V(s) is taken at in A = Q(s, a) - V(s): "sample", one draw of the policy (the paper's text);
    # "mean", the policy's mean action (the paper's code, rlkit's awr_use_mle_for_vf), a baseline without the
    # draw's noise, which under sparse rewards is as large as the advantages themselves.
    value_action: str = "sample"
    # Paper: 1024. Per wall-clock second on one CPU core, 256 learns about as well and steps the env 3.5x faster.
    batch_size: int = 256
    # r' = r * scale + offset. A smaller scale shrinks the advantages like a larger lambda (closer to BC).
    reward_scale: float = 1.0
    reward_offset: float = 0.0
    # Beyond the paper: evaluate and export a Polyak average of the actor (this rate per update, a ~200-update
    # memory), because with batch-softmax weights one sample can carry a third of a batch's gradient and the
    # actor's success jitters between evaluations. null = the actor itself, as in the paper.
    policy_average: float | None = 0.005
    # The mean the online exploration samples around: "policy" (the evaluated policy: the averaged actor when
    # policy_average is set) or "actor" (the paper's: the actor being trained, which jitters far below its
    # average), always with the actor's learned std.
    explore_mean: str = "policy"
    # Multiples of the actor's std the exploration noise is drawn with, one per online episode (explore_choice
    # says which); the paper's is (1.0,). Several, because how much noise a task tolerates is not known ahead.
    explore_noise: tuple[float, ...] = (0.1, 0.3, 1.0)
    # How each online episode picks its multiple from explore_noise: "cycle" (in turn), "bandit" (Thompson
    # sampling on the success of earlier episodes explored with each, climbing from the smallest) or "fallback"
    # (the largest unless it solves under half as often as a smaller one); train/noise_choice.py says why.
    explore_choice: str = "fallback"
    # Episodes over which the evidence of bandit and fallback fades (an arm ruled out early is tried again later).
    explore_memory: int = 50
    # The offline weights the online phase starts from: "best" (the learner as it was at the offline evaluation
    # with the highest success, earliest of equals) or "last" (after offline_steps updates, the paper's), since
    # offline success often peaks early and then falls.
    handover: str = "best"

    # data: the store sources pretrained on (train/sources.py); default every demonstration, no online episodes
    sources: tuple[str, ...] = DEMONSTRATIONS

    # schedule
    offline_steps: int = 25_000  # gradient updates on the store before any interaction
    online_steps: int = 100_000  # env steps of finetuning
    # Paper: 1, kept as an exact ratio; 2 learned worse on door.
    updates_per_step: int = 1
    # Offline share of each online batch; None = uniform over everything, as in the paper (0.5 did not remove
    # the early online dip, and redraws the first few online episodes for half of every batch).
    offline_fraction: float | None = None

    # evaluation, logging, checkpoints
    # Evaluations of the learning curve, on selection seeds (train/evaluation.py): they choose the handover and
    # best.pt. Few enough to be cheap, enough for a standard error of ~7 points near 80%.
    eval_episodes: int = 30
    # The handed-over and the final policy are each scored once more on this many report seeds, never used to choose
    # (0: not at all): at 100 the standard error is 5 points or less, where a difference of two 30-episode scores
    # has 12, and that is what comparing two configs rests on (bench/suite.py).
    report_episodes: int = 100
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
        self._require(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}] (env seeds are derived from it)")
        self._require(self.threads >= 0, "threads", "must be >= 0 (0 = every core)")
        self._require(1 <= self.worker_timeout <= 3600, "worker_timeout", "must be in [1, 3600] seconds")
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
        self._require(0 < self.target_ess <= 1, "target_ess", "must be in (0, 1] (a share of the batch)")
        self._require(self.imitate_online in IMITATE_ONLINE, "imitate_online", f"must be one of {IMITATE_ONLINE}")
        self._require(self.target_floor in TARGET_FLOORS, "target_floor", f"must be one of {TARGET_FLOORS}")
        self._require(
            self.target_floor == "none" or self.discount < 1,
            "target_floor",
            "needs discount < 1 (a truncated episode's return would be infinite): set discount below 1 or use none",
        )
        self._require(self.n_step >= 1, "n_step", "must be >= 1 (1 = one-step targets, the paper's)")
        self._require(self.target_clip in TARGET_CLIPS, "target_clip", f"must be one of {TARGET_CLIPS}")
        self._require(
            self.target_clip == "none" or self.discount < 1,
            "target_clip",
            "needs discount < 1 (at 1 the range of returns is unbounded): set discount below 1 or use none",
        )
        self._require(self.value_action in VALUE_ACTIONS, "value_action", f"must be one of {VALUE_ACTIONS}")
        self._require(self.explore_mean in EXPLORE_MEANS, "explore_mean", f"must be one of {EXPLORE_MEANS}")
        noise = self.explore_noise
        self._require(
            len(noise) > 0 and all(math.isfinite(x) and 0 <= x <= 10 for x in noise),
            "explore_noise",
            "needs one or more finite multiples in [0, 10]",
        )
        self._require(self.explore_choice in RULES, "explore_choice", f"must be one of {RULES}")
        self._require(self.explore_memory >= 1, "explore_memory", "must be >= 1 (episodes)")
        self._require(self.handover in HANDOVERS, "handover", f"must be one of {HANDOVERS}")
        # upper bounds: a value past them is a typo, and would fail as an allocation deep inside the first update
        self._require(2 <= self.batch_size <= MAX_BATCH, "batch_size", f"must be in [2, {MAX_BATCH}]")
        for name in ("actor_hidden", "critic_hidden"):
            sizes = getattr(self, name)
            self._require(max(sizes, default=0) <= MAX_WIDTH, name, f"needs layer sizes <= {MAX_WIDTH}")
        self._require(self.critic_members <= 64, "critic_members", "must be <= 64")
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
        self._require(
            self.eval_episodes <= MAX_SELECT_EPISODES, "eval_episodes", f"must be <= {MAX_SELECT_EPISODES} (seed sets)"
        )
        self._require(
            0 <= self.report_episodes <= MAX_REPORT_EPISODES,
            "report_episodes",
            f"must be in [0, {MAX_REPORT_EPISODES}] (0: no report evaluations)",
        )
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
            target_ess=self.target_ess,
            imitate_online=self.imitate_online,
            target_floor=self.target_floor,
            n_step=self.n_step,
            target_clip=self.target_clip,
            value_action=self.value_action,
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


#: Keys whose default has changed, with the value a run saved before the key existed was trained with.
EARLIER_DEFAULTS: dict[str, Any] = {"imitate_online": "all"}


def from_saved(data: dict[str, Any], where: str) -> TrainConfig:
    """The config a run saved (checkpoint): a key it predates means the value it ran with, not today's default."""
    return from_dict({**EARLIER_DEFAULTS, **data}, where)


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
