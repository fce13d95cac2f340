"""Safety limits and controller settings: `deploy/<task>.yaml`, with every default derived from the TaskSpec.

A limits file only needs to say what differs from the defaults, so a reviewer reads the
deviations and the task spec, not a wall of numbers. Every value is checked here, once,
against a range the task itself sets (`check_config`): a limit that is NaN, infinite or
merely huge would switch its check off without a word, and the safety layer and the robot
process rely on never seeing one. The files ship inside the package (`awac_robot.limit_files`,
from the repository's deploy/ folder) like the task YAMLs, so `deploy` finds the same
limits from any working directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from awac_robot.spec import TaskSpec
from awac_robot.yaml_files import read_mapping, reject_unknown

#: end-effector position entries of the observation (tabletop tasks); the workspace box needs all three
WORKSPACE_OBS_NAMES = ("grip_pos_x", "grip_pos_y", "grip_pos_z")
#: action entries that move the end effector along x, y, z (a delta per task step)
WORKSPACE_ACT_NAMES = ("dx", "dy", "dz")
#: Fetch: metres moved per task step by a delta action of 1.0 (gymnasium-robotics fetch_env.py)
FETCH_DELTA_SCALE = 0.05
#: a box around the Fetch table the gripper never needs to leave (x, y, z in metres): no limits file may widen it
FETCH_WORKSPACE = ((1.0, 0.35, 0.40), (1.65, 1.15, 0.95))
#: the fastest controller rate a limits file may ask for (Hz)
MAX_RATE = 5000.0
#: SCHED_FIFO priorities Linux accepts (0: normal scheduling)
MAX_PRIORITY = 99
#: the most deadline misses in a row a limits file may tolerate before the safe stop
MAX_CONSECUTIVE_MISSES = 20


class LimitsError(ValueError):
    """A limits file the controller cannot use; the message names the file and the field."""


@dataclass(frozen=True)
class SafetyLimits:
    """What the safety layer and the robot process enforce; all per-dimension tuples have act_dim entries."""

    act_low: tuple[float, ...]
    act_high: tuple[float, ...]
    #: max change of a command per second, per dimension (the rate limit per period is this times the period)
    max_rate: tuple[float, ...]
    #: dimensions that command a motion (a delta or a velocity): holding means sending 0 there
    rate_dims: tuple[int, ...] = ()
    #: dexterous: position targets are kept this far (in normalised units) inside the action bounds
    joint_margin: float = 0.0
    #: tabletop: observation indices of the end-effector x, y, z, the action dims moving it, and the box
    workspace_obs: tuple[int, ...] = ()
    workspace_act: tuple[int, ...] = ()
    workspace_low: tuple[float, ...] = ()
    workspace_high: tuple[float, ...] = ()
    #: metres moved per task step by a workspace delta of 1.0
    workspace_scale: float = FETCH_DELTA_SCALE
    #: an observation older than this (seconds) is a safe stop
    stale_after: float = 0.05
    #: more than this many deadline misses in a row is a safe stop
    max_consecutive_misses: int = 5
    #: the robot process holds by itself once no fresh command arrived for this long (seconds)
    command_timeout: float = 0.03

    @property
    def act_dim(self) -> int:
        return len(self.act_low)


@dataclass(frozen=True)
class DeployConfig:
    """One `deploy/<task>.yaml`: the controller's rate and the safety limits it runs behind."""

    task: str
    rate: float
    limits: SafetyLimits
    #: creating this file is an e-stop (checked every period)
    estop_file: str | None = None
    #: the last part of each sleep is a busy-wait, because a plain sleep can wake up this late
    spin: float = 0.0002
    #: seconds before each boundary to dry-run the step (read, infer, filter; nothing sent) so the
    #: real step finds everything in cache: measured 190 -> 24 us inference at 100 Hz; 0 disables
    prewarm: float = 0.00015
    #: SCHED_FIFO priority of the controller (the robot process gets one less); 0 = normal scheduling
    priority: int = 10
    #: where these values came from (a file, or the task's built-in defaults), for errors and the run log
    source: str = ""

    @property
    def period(self) -> float:
        return 1.0 / self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployConfig:
        limits: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["limits"].items()}
        return cls(**{**data, "limits": SafetyLimits(**limits)})


def motion_dims(spec: TaskSpec) -> tuple[int, ...]:
    """Action dims that command a motion rather than a pose (Fetch deltas, kitchen joint velocities): 0 stops them."""
    return tuple(i for i, name in enumerate(spec.act_names) if name in WORKSPACE_ACT_NAMES or name.endswith("_vel"))


def workspace_indices(spec: TaskSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(observation indices of the end effector, action dims moving it), or ((), ()) for a task without them."""
    if all(n in spec.obs_names for n in WORKSPACE_OBS_NAMES) and all(n in spec.act_names for n in WORKSPACE_ACT_NAMES):
        obs = tuple(spec.obs_names.index(n) for n in WORKSPACE_OBS_NAMES)
        return obs, tuple(spec.act_names.index(n) for n in WORKSPACE_ACT_NAMES)
    return (), ()


def default_limits(spec: TaskSpec) -> SafetyLimits:
    """Limits that fit any policy for `spec`: bounds from the spec, a rate limit of one full span in
    five task periods, the tabletop workspace or the dexterous joint margin, stale after five periods,
    and a robot-side watchdog of three task periods."""
    span = np.subtract(spec.act_high, spec.act_low)
    ws_obs, ws_act = workspace_indices(spec)
    workspace: dict[str, Any] = {}
    if ws_obs:
        workspace = dict(
            workspace_obs=ws_obs,
            workspace_act=ws_act,
            workspace_low=FETCH_WORKSPACE[0],
            workspace_high=FETCH_WORKSPACE[1],
        )
    return SafetyLimits(
        act_low=tuple(float(v) for v in spec.act_low),
        act_high=tuple(float(v) for v in spec.act_high),
        max_rate=tuple(float(v) for v in span / (5 * spec.control_period)),
        rate_dims=motion_dims(spec),
        joint_margin=0.02 if spec.domain == "dexterous" else 0.0,
        stale_after=5 * spec.control_period,
        command_timeout=3 * spec.control_period,
        **workspace,
    )


def default_config(spec: TaskSpec) -> DeployConfig:
    config = DeployConfig(
        task=spec.name, rate=spec.control_rate, limits=default_limits(spec), source=f"built-in limits of {spec.name}"
    )
    check_config(config, spec)
    return config


def shipped_limits_file(task: str) -> Path | None:
    """The limits file for `task` shipped with awac-robot (deploy/<task>.yaml), if there is one."""
    path = Path(str(resources.files("awac_robot.limit_files").joinpath(f"{task}.yaml")))
    return path if path.is_file() else None


def shipped_tasks() -> list[str]:
    root = resources.files("awac_robot.limit_files")
    return sorted(Path(str(p)).stem for p in root.iterdir() if str(p).endswith(".yaml"))


# ---------------------------------------------------------------- reading a file

_TOP_FIELDS = {"task", "rate", "estop_file", "spin", "prewarm", "priority", "safety"}
_PER_DIM = ("act_low", "act_high", "max_rate")
_INDEX_LISTS = ("rate_dims", "workspace_obs", "workspace_act")
_BOXES = ("workspace_low", "workspace_high")
_INTS = ("max_consecutive_misses",)


def load_config(path: str | Path, spec: TaskSpec) -> DeployConfig:
    """Read `deploy/<task>.yaml`; fields left out keep the defaults of `spec`, a scalar fans out to every dimension."""
    where = str(path)
    data = read_mapping(path, "limits file", LimitsError, hint=" (see deploy/door.yaml for the format)")
    reject_unknown(data, _TOP_FIELDS, where, LimitsError)
    if data.get("task", spec.name) != spec.name:
        raise LimitsError(f"{where}: limits are for task '{data['task']}', the policy is for '{spec.name}'")
    base = default_config(spec)
    safety = data.get("safety") or {}
    if not isinstance(safety, dict):
        raise LimitsError(f"{where}: field 'safety' must be a mapping of limits")
    reject_unknown(safety, (f.name for f in fields(SafetyLimits)), where, LimitsError, "safety.")
    changes: dict[str, Any] = {}
    for key, value in safety.items():
        field = f"safety.{key}"
        if key in _PER_DIM:
            changes[key] = _numbers(value, spec.act_dim, where, field, fan_out=True)
        elif key in _BOXES:
            changes[key] = _numbers(value, len(value) if isinstance(value, list) else 3, where, field)
        elif key in _INDEX_LISTS:
            changes[key] = _integers(value, where, field)
        elif key in _INTS:
            changes[key] = _integer(value, where, field)
        else:
            changes[key] = _number(value, where, field)
    estop = data.get("estop_file", base.estop_file)
    if estop is not None and not isinstance(estop, str):
        raise LimitsError(f"{where}: field 'estop_file' must be a path or null, got {estop!r}")
    config = DeployConfig(
        task=spec.name,
        rate=_number(data["rate"], where, "rate") if "rate" in data else base.rate,
        limits=replace(base.limits, **changes),
        estop_file=estop,
        spin=_number(data["spin"], where, "spin") if "spin" in data else base.spin,
        prewarm=_number(data["prewarm"], where, "prewarm") if "prewarm" in data else base.prewarm,
        priority=_integer(data["priority"], where, "priority") if "priority" in data else base.priority,
        source=where,
    )
    check_config(config, spec)
    return config


def with_overrides(config: DeployConfig, spec: TaskSpec, **changes: Any) -> DeployConfig:
    """The config with command-line overrides (None means 'not given'), checked again."""
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        return config
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
    updated = replace(config, **given, source=f"{config.source} with {flags}")
    check_config(updated, spec)
    return updated


def _shown(value: object) -> str:
    hint = " (a string: write the number without quotes)"
    return f"{value!r}{hint}" if isinstance(value, str) else repr(value)


def _number(value: object, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LimitsError(f"{where}: field '{field}' must be a number, got {_shown(value)}")
    return float(value)


def _integer(value: object, where: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LimitsError(f"{where}: field '{field}' must be an integer, got {_shown(value)}")
    return value


def _numbers(value: object, count: int, where: str, field: str, fan_out: bool = False) -> tuple[float, ...]:
    if fan_out and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * count
    if not isinstance(value, list) or len(value) != count:
        scalar = "a number or " if fan_out else ""
        raise LimitsError(f"{where}: field '{field}' must be {scalar}a list of {count} numbers, got {_shown(value)}")
    return tuple(_number(v, where, f"{field}[{i}]") for i, v in enumerate(value))


def _integers(value: object, where: str, field: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise LimitsError(f"{where}: field '{field}' must be a list of integers, got {_shown(value)}")
    return tuple(_integer(v, where, f"{field}[{i}]") for i, v in enumerate(value))


# ---------------------------------------------------------------- the ranges a task allows


def _fail(where: str, field: str, allowed: str, got: object) -> LimitsError:
    return LimitsError(f"{where}: field '{field}' must be {allowed}, got {got!r}")


def _in_range(value: float, low: float, high: float, where: str, field: str, open_low: bool = False) -> None:
    """`value` finite and in [low, high] (or (low, high] with open_low); NaN fails every comparison."""
    ok = math.isfinite(value) and (low < value if open_low else low <= value) and value <= high
    if not ok:
        raise _fail(where, field, f"a finite number in {'(' if open_low else '['}{low:g}, {high:g}]", value)


def check_config(config: DeployConfig, spec: TaskSpec) -> None:
    """Raise LimitsError (one line naming the source and the field, and the allowed range) unless every
    value is finite and inside what `spec` allows. Run wherever a config enters: file, flags, each process."""
    where = config.source or "deploy config"
    if config.task != spec.name:
        raise LimitsError(f"{where}: limits are for task '{config.task}', the policy is for '{spec.name}'")
    _in_range(config.rate, spec.control_rate, MAX_RATE, where, "rate")
    for name in ("spin", "prewarm"):
        value = getattr(config, name)
        if not (math.isfinite(value) and 0.0 <= value < config.period):
            allowed = f"a finite number in [0, {config.period:g}) (seconds, below the period at {config.rate:g} Hz)"
            raise _fail(where, name, allowed, value)
    if not 0 <= config.priority <= MAX_PRIORITY:
        raise _fail(where, "priority", f"an integer in [0, {MAX_PRIORITY}] (0: normal scheduling)", config.priority)
    if config.estop_file is not None and not config.estop_file.strip():
        # what a script passing an unset "$ESTOP" gives: an e-stop that could never be pressed
        raise _fail(where, "estop_file", "a file path (or no e-stop file at all)", config.estop_file)
    _check_limits(config.limits, spec, where)


def check_estop_file(config: DeployConfig) -> None:
    """Raise LimitsError unless creating the e-stop file can work now: its folder exists, the path is no
    dangling link, and the file is not there already (an e-stop pressed before the start).

    Run once by the supervisor before anything starts, not by every process: a file created
    after the start is an e-stop, not a wrong config.
    """
    if config.estop_file is None:
        return
    path, where = Path(config.estop_file), config.source or "deploy config"
    if path.is_symlink() and not path.exists():
        raise LimitsError(
            f"{where}: the e-stop file {path} is a link to {os.readlink(path)}, which does not exist: "
            "give a path whose creation can be seen"
        )
    if not path.parent.is_dir():
        raise LimitsError(
            f"{where}: the folder of the e-stop file {path} does not exist (or is a dangling link): "
            "create it, or give another --estop-file"
        )
    if path.exists():
        raise LimitsError(f"{where}: the e-stop file {path} exists already (the e-stop is pressed): remove it to start")


def _check_limits(lim: SafetyLimits, spec: TaskSpec, where: str) -> None:
    n, period = spec.act_dim, spec.control_period
    for name in _PER_DIM:
        if len(getattr(lim, name)) != n:
            allowed = f"{n} numbers (one per action of task {spec.name})"
            raise _fail(where, f"safety.{name}", allowed, list(getattr(lim, name)))
    for i in range(n):
        lo, hi = spec.act_low[i], spec.act_high[i]
        _in_range(lim.act_low[i], lo, hi, where, f"safety.act_low[{i}]")
        if not (math.isfinite(lim.act_high[i]) and lim.act_low[i] < lim.act_high[i] <= hi):
            allowed = f"a finite number in ({lim.act_low[i]:g}, {hi:g}]"
            raise _fail(where, f"safety.act_high[{i}]", allowed, lim.act_high[i])
        span = lim.act_high[i] - lim.act_low[i]
        _in_range(lim.max_rate[i], 0.0, span / (2 * period), where, f"safety.max_rate[{i}]", open_low=True)
    motion = motion_dims(spec)
    if tuple(lim.rate_dims) != motion:
        allowed = f"{list(motion)} (the motion dims of task {spec.name})"
        raise _fail(where, "safety.rate_dims", allowed, list(lim.rate_dims))
    for d in motion:
        if not lim.act_low[d] <= 0.0 <= lim.act_high[d]:
            raise _fail(where, f"safety.act_low[{d}]", "<= 0 <= act_high on a motion dim (0 is 'stop')", lim.act_low[d])
    quarter = min(h - lo for lo, h in zip(lim.act_low, lim.act_high, strict=True)) / 4
    _in_range(lim.joint_margin, 0.0, quarter, where, "safety.joint_margin")
    ws_obs, ws_act = workspace_indices(spec)
    if tuple(lim.workspace_obs) != ws_obs or tuple(lim.workspace_act) != ws_act:
        allowed = f"{list(ws_obs)} and {list(ws_act)} (the end effector of task {spec.name})"
        raise _fail(where, "safety.workspace_obs/_act", allowed, [list(lim.workspace_obs), list(lim.workspace_act)])
    if ws_obs:
        for name, values in (("workspace_low", lim.workspace_low), ("workspace_high", lim.workspace_high)):
            if len(values) != 3:
                raise _fail(where, f"safety.{name}", "3 numbers (x, y, z in metres)", list(values))
        for i in range(3):
            low, high = FETCH_WORKSPACE[0][i], FETCH_WORKSPACE[1][i]
            _in_range(lim.workspace_low[i], low, high, where, f"safety.workspace_low[{i}]")
            box_low = lim.workspace_low[i]
            if not (math.isfinite(lim.workspace_high[i]) and box_low < lim.workspace_high[i] <= high):
                allowed = f"a finite number in ({box_low:g}, {high:g}] (inside the table box)"
                raise _fail(where, f"safety.workspace_high[{i}]", allowed, lim.workspace_high[i])
        _in_range(lim.workspace_scale, FETCH_DELTA_SCALE, 1.0, where, "safety.workspace_scale")
    elif lim.workspace_low or lim.workspace_high:
        raise _fail(where, "safety.workspace_low/_high", f"empty (task {spec.name} has no workspace box)", "a box")
    _in_range(lim.stale_after, period, 10 * period, where, "safety.stale_after")
    _in_range(lim.command_timeout, 2 * period, 10 * period, where, "safety.command_timeout")
    misses = lim.max_consecutive_misses
    if isinstance(misses, bool) or not isinstance(misses, int) or not 0 <= misses <= MAX_CONSECUTIVE_MISSES:
        raise _fail(where, "safety.max_consecutive_misses", f"an integer in [0, {MAX_CONSECUTIVE_MISSES}]", misses)
