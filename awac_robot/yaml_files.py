"""Reading the project's declarative YAML files (tasks, training configs, safety limits) one way.

Every such file is a mapping whose errors must name the file and the field, and whose
unknown keys are mistakes (a misspelt limit silently falling back to its default is the
kind of error that reaches a robot), so the three readers share these two functions.

Numbers follow YAML 1.2 as people write them: PyYAML implements YAML 1.1, where `1e-3` and
`1.0e3` are strings (1.1 wants a dot and a signed exponent), so a config saying `lr: 1e-3`
would be refused as "not a number". The loader adds exactly those exponent forms as floats;
every other scalar resolves as in PyYAML's safe loader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 exponent floats (`1e-3`, `2E5`, `1.0e3`, `.5e-2`), and a key given
    twice in one mapping is an error (PyYAML keeps the last silently: which one did the author mean?)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"field '{key}' is given twice (line {key_node.start_mark.line + 1})", None
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_mapping(path: str | Path, kind: str, error: type[Exception], hint: str = "") -> dict[str, Any]:
    """The mapping in `path`; an empty file is an empty mapping. `kind` names the file in errors."""
    where = str(path)
    try:
        data = yaml.load(Path(path).read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise error(f"{where}: no such {kind}{hint}") from None
    except UnicodeDecodeError:
        raise error(f"{where}: not a text file, so not a {kind}{hint}") from None
    except OSError as exc:
        raise error(f"{where}: cannot read the {kind} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        problem = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())
        raise error(f"{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{where}: a {kind} must be a mapping of fields")
    return data


def reject_unknown(
    data: dict[str, Any], allowed: Iterable[str], where: str, error: type[Exception], prefix: str = ""
) -> None:
    """Raise `error` naming the first field of `data` (shown under `prefix`) not in `allowed`, and the allowed ones."""
    allowed = set(allowed)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise error(f"{where}: unknown field '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
