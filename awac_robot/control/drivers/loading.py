"""`--robot` and `--robot-config`: from what a person typed to the driver the robot process constructs.

`--robot` is `PACKAGE.MODULE:CLASS` or a name registered in the entry-point group
`awac_robot.robots` (the built-in `sim` and `network` are registered in pyproject.toml like any
other package's). Either way it becomes a `DriverDefinition`: the class's import path and its
settings as plain values, checked here against the class's `Settings` dataclass the way limits
files are checked (unknown fields and non-finite numbers refused, naming file and field). The
definition is what crosses into the robot process, which imports the class from that path and
checks the settings again; no name is looked up a second time in another process.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from awac_robot.control.drivers import RobotDriver
from awac_robot.spec import TaskSpec
from awac_robot.yaml_files import read_mapping, reject_unknown

#: the entry-point group an installed package registers its drivers under (name = "package.module:Class")
ENTRY_POINT_GROUP = "awac_robot.robots"


class DriverError(ValueError):
    """A --robot that names no usable driver class, or driver settings it does not take; says which and why."""


@dataclass(frozen=True)
class DriverDefinition:
    """A driver class by import path, and its settings (plain values, already checked against `Settings`)."""

    target: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: where the settings came from, for errors and the run log
    source: str = "defaults"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriverDefinition:
        return cls(**data)


def registered_robots() -> dict[str, str]:
    """Names registered in the `awac_robot.robots` entry-point group, with their targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve(robot: str) -> str:
    """The `package.module:Class` that `robot` (a registered name or such a path) stands for."""
    if ":" in robot:
        return robot
    known = registered_robots()
    if robot not in known:
        names = ", ".join(sorted(known)) or "none"
        raise DriverError(
            f"--robot {robot!r}: no driver of that name (registered: {names}); give PACKAGE.MODULE:CLASS, or "
            f"register the name in the entry-point group '{ENTRY_POINT_GROUP}' of your package"
        )
    return known[robot]


def driver_class(target: str) -> type[RobotDriver]:
    """Import `package.module:Class` and check that it is a RobotDriver."""
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise DriverError(f"--robot {target!r}: expected PACKAGE.MODULE:CLASS")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DriverError(
            f"--robot {target}: cannot import {module_name} ({exc}); is it installed or on PYTHONPATH?"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, RobotDriver)):
        raise DriverError(
            f"--robot {target}: {module_name} has no class {class_name} deriving from "
            "awac_robot.control.drivers.RobotDriver"
        )
    if not dataclasses.is_dataclass(cls.Settings):
        raise DriverError(f"--robot {target}: {class_name}.Settings must be a dataclass")
    return cls


def define(robot: str, config: Path | None) -> DriverDefinition:
    """The checked definition of `--robot ROBOT [--robot-config CONFIG]`."""
    target = resolve(robot)
    cls = driver_class(target)
    where = str(config) if config is not None else f"settings of {target}"
    data = read_mapping(config, "robot config", DriverError) if config is not None else {}
    settings = build_settings(cls, data, where)
    return DriverDefinition(target, dataclasses.asdict(settings), where)


def build_settings(cls: type[RobotDriver], data: dict[str, Any], where: str) -> Any:
    """An instance of `cls.Settings` from `data`: unknown fields, missing required ones, values of the wrong
    type and non-finite numbers are refused in one line naming `where` and the field."""
    settings_cls = cls.Settings
    known = {f.name: f for f in dataclasses.fields(settings_cls)}
    reject_unknown(data, known, where, DriverError)
    hints = typing.get_type_hints(settings_cls)
    values: dict[str, Any] = {}
    for name, spec_field in known.items():
        required = spec_field.default is dataclasses.MISSING and spec_field.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                raise DriverError(f"{where}: field '{name}' is required by {cls.__name__} (no default)")
            continue
        values[name] = _checked(data[name], hints[name], where, name)
    return settings_cls(**values)


def _checked(value: Any, kind: Any, where: str, name: str) -> Any:
    """`value` if it is of the annotated `kind` (int, float, str, bool, or one of them | None); floats finite."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise DriverError(f"{where}: field '{name}' must be a finite number, got {value!r}")
            return float(value)
        if option is str and isinstance(value, str):
            return value
    wanted = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise DriverError(f"{where}: field '{name}' must be {wanted}, got {value!r}")


def build_driver(definition: DriverDefinition, spec: TaskSpec, seed: int | None) -> RobotDriver:
    """Construct the driver of `definition` (in the robot process), its settings checked again there."""
    cls = driver_class(definition.target)
    settings = build_settings(cls, definition.settings, definition.source)
    return cls(spec, settings, seed)  # type: ignore[call-arg]
