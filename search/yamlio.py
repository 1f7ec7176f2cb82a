"""YAML in, plain dicts out; syntax errors become one line naming the file, line and column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from trainables.errors import UserError

__all__ = ["load_yaml", "parse_overrides", "read_source"]


ENV_PREFIX = "env:"


def read_source(path: str | Path) -> str:
    """The text of a YAML file, or of environment variable NAME for ``env:NAME`` (how a
    submitted Ray Job receives its spec without uploading a working directory)."""
    if str(path).startswith(ENV_PREFIX):
        name = str(path)[len(ENV_PREFIX):]
        if name not in os.environ:
            raise UserError(f"{path}: environment variable {name} is not set")
        return os.environ[name]
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    return p.read_text()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file (or ``env:NAME``)."""
    p = Path(path)
    text = read_source(path)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise UserError(f"{where}: invalid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{p}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level must be a mapping of settings, "
                        f"but got a {type(data).__name__}")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.01"]`` -> ``{"lr": 0.01}``: each value parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected key=value, e.g. --set lr=0.01")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {pair!r}: the value is not valid YAML") from None
    return out
