"""YAML in, plain dicts out; syntax errors become one line naming the file, line and column.

Reading is bounded: a file over MAX_BYTES, text that is not UTF-8, and YAML whose aliases
expand past MAX_VALUES values or MAX_DEPTH levels are refused in one line before anything is
built, so a small hostile file cannot make validation run for minutes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import Reader

from hpsearch.trainables.errors import UserError, shown

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "load_yaml", "parse_overrides",
           "parse_yaml", "read_source"]


ENV_PREFIX = "env:"
MAX_BYTES = 256 * 1024  # a sweep spec is a few KiB
MAX_VALUES = 10_000  # scalars, lists and mappings, every alias expanded
MAX_DEPTH = 32  # levels of nesting, every alias expanded
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels; a spec may nest at most {MAX_DEPTH}"


class _TooBig(yaml.YAMLError):
    """A document over MAX_VALUES values or MAX_DEPTH levels once aliases are expanded."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _extent(node: yaml.Node, depth: int, seen: dict[int, tuple[float, float]],
            ) -> tuple[float, float]:
    """(values, levels) of ``node`` with every alias expanded; raises _TooBig past a limit."""
    if depth > MAX_DEPTH:
        raise _TooBig(_TOO_DEEP)
    if id(node) not in seen:
        seen[id(node)] = (math.inf, math.inf)  # an alias to it from inside it repeats forever
        parts = [_extent(child, depth + 1, seen) for child in _children(node)]
        seen[id(node)] = (1 + sum(v for v, _ in parts), 1 + max((d for _, d in parts), default=0))
    values, levels = seen[id(node)]
    if values > MAX_VALUES:
        raise _TooBig(f"more than {MAX_VALUES:,} values with aliases expanded; a spec may hold "
                      f"at most {MAX_VALUES:,}")
    if depth + levels > MAX_DEPTH:
        raise _TooBig(_TOO_DEEP)
    return values, levels


class _BoundedLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A SafeLoader (libyaml's when there) that measures the composed document before
    building it."""

    def construct_document(self, node: yaml.Node) -> Any:
        _extent(node, 0, {})
        return super().construct_document(node)


def _not_text(text: str) -> str | None:
    """What makes ``text`` unfit for YAML (its first unprintable character), or None."""
    bad = Reader.NON_PRINTABLE.search(text)
    if bad is None:
        return None
    offset = len(text[:bad.start()].encode("utf-8", "surrogateescape"))
    code = ord(bad[0])
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape keeps it
        code -= 0xDC00
    what = f"byte 0x{code:02x}" if code < 0x100 else f"character U+{code:04X}"
    return f"{what} at offset {offset}"


def _load(text: str) -> Any:
    """``text`` as YAML, within the limits (a nesting too deep for PyYAML's own parser too)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise _TooBig(_TOO_DEEP) from None


def _read_bytes(path: str | Path) -> bytes:
    """The bytes of a file, or of environment variable NAME for ``env:NAME``; at most
    MAX_BYTES + 1 of a file are read."""
    if str(path).startswith(ENV_PREFIX):
        name = str(path)[len(ENV_PREFIX):]
        if name not in os.environ:
            raise UserError(f"{path}: environment variable {name} is not set")
        return os.environ[name].encode("utf-8", "surrogateescape")
    p = Path(path)
    try:
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        with p.open("rb") as f:
            return f.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"{shown(str(p))}: cannot be read ({err.strerror})") from None


def read_source(path: str | Path) -> str:
    """The text of a YAML file, or of environment variable NAME for ``env:NAME`` (how a
    submitted Ray Job receives its spec without uploading a working directory)."""
    data = _read_bytes(path)
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES // 1024} KiB, the most a spec file "
                        f"may be")
    text = data.decode("utf-8", "surrogateescape")
    problem = _not_text(text)
    if problem:
        raise UserError(f"{path}: not a UTF-8 text file ({problem})")
    return text


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in ``text`` (e.g. a spec kept by a tracking server), bounded as a spec
    file is: over MAX_BYTES, not text, or too big with aliases expanded is one UserError line
    starting with ``where``, as is a syntax error (``where:line:column``)."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise UserError(f"{where}: larger than {MAX_BYTES // 1024} KiB, the most a spec may be")
    problem = _not_text(text)
    if problem:
        raise UserError(f"{where}: not UTF-8 text ({problem})")
    try:
        return _load(text)
    except _TooBig as err:
        raise UserError(f"{where}: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise UserError(f"{at}: invalid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: invalid YAML: {str(err).splitlines()[0]}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file (or ``env:NAME``)."""
    p = Path(path)
    data = parse_yaml(read_source(path), str(p))
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
            raise UserError(f"--set {shown(pair)}: expected key=value, e.g. --set lr=0.01")
        problem = _not_text(pair)
        if problem:
            raise UserError(f"--set {shown(pair)}: not UTF-8 text ({problem})")
        try:
            out[key.strip()] = _load(raw)
        except _TooBig as err:
            raise UserError(f"--set {shown(key.strip())}: {err}") from None
        except yaml.YAMLError:
            raise UserError(f"--set {shown(pair)}: the value is not valid YAML") from None
    return out
