"""Safety limits and controller settings: `deploy/<task>.yaml`, with every default derived from the TaskSpec.

A limits file only needs to say what differs from the defaults, so a reviewer reads the
deviations and the task spec, not a wall of numbers. Values are checked here, once, so the
safety layer itself never has to handle a malformed limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
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
#: a box around the Fetch table the gripper never needs to leave (x, y, z in metres)
FETCH_WORKSPACE = ((1.0, 0.35, 0.40), (1.65, 1.15, 0.95))


class LimitsError(ValueError):
    """A limits file the controller cannot use; the message names the file and the field."""


@dataclass(frozen=True)
class SafetyLimits:
    """What the safety layer enforces; all per-dimension tuples have act_dim entries."""

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

    def __post_init__(self) -> None:
        n = len(self.act_low)
        for name in ("act_high", "max_rate"):
            if len(getattr(self, name)) != n:
                raise LimitsError(f"safety limit '{name}' needs {n} entries, got {len(getattr(self, name))}")
        if any(lo >= hi for lo, hi in zip(self.act_low, self.act_high, strict=True)):
            raise LimitsError("safety limits: every act_low must be below act_high")
        if any(r <= 0 for r in self.max_rate):
            raise LimitsError("safety limit 'max_rate' must be positive in every dimension")
        if any(not 0 <= d < n for d in self.rate_dims):
            raise LimitsError(f"safety limit 'rate_dims' must be action indices in [0, {n})")
        if any(not self.act_low[d] <= 0.0 <= self.act_high[d] for d in self.rate_dims):
            raise LimitsError("safety limits: the bounds of every rate_dims entry must include 0 (0 is 'stop')")
        half_span = min(hi - lo for lo, hi in zip(self.act_low, self.act_high, strict=True)) / 2
        if not 0 <= self.joint_margin < half_span:
            raise LimitsError(f"safety limit 'joint_margin' must be in [0, {half_span:g})")
        box = (self.workspace_obs, self.workspace_act, self.workspace_low, self.workspace_high)
        if len({len(part) for part in box}) != 1:
            raise LimitsError("safety limits: workspace_obs, _act, _low and _high must have the same length")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise LimitsError("safety limits: every workspace_low must be below workspace_high")
        if self.stale_after <= 0 or self.max_consecutive_misses < 0 or self.workspace_scale <= 0:
            raise LimitsError("safety limits: stale_after and workspace_scale must be > 0, max_consecutive_misses >= 0")

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
    source: str = ""

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise LimitsError(f"{self.source or 'deploy config'}: field 'rate' must be positive")
        if not 0 <= self.prewarm < self.period or not 0 <= self.spin < self.period:
            raise LimitsError(
                f"{self.source or 'deploy config'}: rate {self.rate:g} Hz leaves a {self.period * 1e6:.0f} us period; "
                f"'prewarm' ({self.prewarm * 1e6:.0f} us) and 'spin' ({self.spin * 1e6:.0f} us) must be shorter"
            )

    @property
    def period(self) -> float:
        return 1.0 / self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployConfig:
        limits = {k: tuple(v) if isinstance(v, list) else v for k, v in data["limits"].items()}
        return cls(**{**data, "limits": SafetyLimits(**limits)})


def motion_dims(spec: TaskSpec) -> tuple[int, ...]:
    """Action dims that command a motion rather than a pose (Fetch deltas, kitchen joint velocities): 0 stops them."""
    return tuple(i for i, name in enumerate(spec.act_names) if name in WORKSPACE_ACT_NAMES or name.endswith("_vel"))


def default_limits(spec: TaskSpec) -> SafetyLimits:
    """Limits that fit any policy for `spec`: bounds from the spec, a rate limit of one full span in
    five task periods, the tabletop workspace or the dexterous joint margin, stale after five periods."""
    span = np.subtract(spec.act_high, spec.act_low)
    workspace: dict[str, Any] = {}
    if all(n in spec.obs_names for n in WORKSPACE_OBS_NAMES) and all(n in spec.act_names for n in WORKSPACE_ACT_NAMES):
        workspace = dict(
            workspace_obs=tuple(spec.obs_names.index(n) for n in WORKSPACE_OBS_NAMES),
            workspace_act=tuple(spec.act_names.index(n) for n in WORKSPACE_ACT_NAMES),
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
        **workspace,
    )


def default_config(spec: TaskSpec) -> DeployConfig:
    return DeployConfig(task=spec.name, rate=spec.control_rate, limits=default_limits(spec))


_TOP_FIELDS = {"task", "rate", "estop_file", "spin", "prewarm", "priority", "safety"}


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
        raise LimitsError(f"{where}: field 'safety' must be a mapping")
    reject_unknown(safety, (f.name for f in fields(SafetyLimits)), where, LimitsError, "safety.")
    per_dim = {"act_low", "act_high", "max_rate"}
    changes: dict[str, Any] = {}
    for key, value in safety.items():
        if key in per_dim and isinstance(value, (int, float)):
            value = (float(value),) * spec.act_dim
        changes[key] = tuple(value) if isinstance(value, list) else value
    try:
        limits = replace(base.limits, **changes)
        return DeployConfig(
            task=spec.name,
            rate=float(data.get("rate", base.rate)),
            limits=limits,
            estop_file=data.get("estop_file"),
            spin=float(data.get("spin", base.spin)),
            prewarm=float(data.get("prewarm", base.prewarm)),
            priority=int(data.get("priority", base.priority)),
            source=where,
        )
    except (LimitsError, TypeError, ValueError) as exc:
        raise LimitsError(f"{where}: {exc}") from None


def with_overrides(config: DeployConfig, **changes: Any) -> DeployConfig:
    """The config with command-line overrides (None means 'not given')."""
    given = {k: v for k, v in changes.items() if v is not None}
    return replace(config, **given) if given else config
