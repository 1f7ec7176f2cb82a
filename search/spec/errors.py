"""Spec problems, one line each: ``<field path>: <what is wrong> (got …); allowed: …``.

Validators report a problem with :func:`problem` (a pydantic error of type ``spec`` that
carries its own wording) and raise many at once with :func:`raise_problems`; pydantic's own
errors (a missing key, a wrong type, a literal not allowed, an unknown key) are worded here
too, so :func:`error_lines` turns any ValidationError of a spec into the lines a user reads.
"""

from __future__ import annotations

import itertools
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from hpsearch.trainables.errors import MAX_SHOWN, closest, cut, shown

__all__ = [
    "Loc",
    "did_you_mean",
    "error_lines",
    "listed",
    "loc_of",
    "problem",
    "raise_problems",
    "reraised",
    "unknown",
]

Loc = tuple[str | int, ...]
SPEC = "spec"  # the error type of a problem worded by a validator
_PATH_PART = re.compile(r"\[(\d+)\]|\.([^.\[\]]+)")


# --------------------------------------------------------------------------- raising

def problem(loc: Sequence[str | int], message: str) -> InitErrorDetails:
    """One problem at ``loc`` (relative to the value being validated), worded in full."""
    return InitErrorDetails(type=PydanticCustomError(SPEC, message), loc=tuple(loc), input=None)


def raise_problems(problems: Sequence[InitErrorDetails], title: str = "spec") -> None:
    """Raise every problem at once as one ValidationError; nothing when there is none.

    Raised inside a validator, pydantic puts each problem under that validator's field path.
    """
    if problems:
        raise ValidationError.from_exception_data(title, list(problems))


def reraised(err: ValidationError, under: Sequence[str | int] = ()) -> list[InitErrorDetails]:
    """The errors of ``err`` as problems to raise again (type, context and value kept)."""
    return [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                             loc=(*under, *e["loc"]), input=e["input"]) for e in err.errors()]


def loc_of(path: str) -> Loc:
    """``"[1]"`` -> ``(1,)``, ``".a.b"`` -> ``("a", "b")``: a path suffix as a location."""
    if "".join(m[0] for m in _PATH_PART.finditer(path)) != path:
        return (path.lstrip("."),) if path else ()
    return tuple(int(i) if i else name for i, name in _PATH_PART.findall(path))


# --------------------------------------------------------------------------- wording

def did_you_mean(name: Any, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to ``name``, else ``""``."""
    text = str(name)
    hint = closest(text, allowed) if len(text) <= MAX_SHOWN else None
    return f" (did you mean '{hint}'?)" if hint else ""


def unknown(name: Any, allowed: Sequence[str], what: str = "value") -> str:
    """``unknown <what> <name> (did you mean …); allowed: …``."""
    return f"unknown {what} {shown(name)}{did_you_mean(name, allowed)}; allowed: " \
           f"{', '.join(allowed)}"


def listed(values: Iterable[Any], most: int = 20) -> str:
    """The first ``most`` of ``values`` as JSON, comma-separated, cut short for an error line."""
    head = list(itertools.islice(values, most + 1))
    more = ", …" if len(head) > most else ""
    return cut(", ".join(json.dumps(v, default=str) for v in head[:most]) + more)


def error_lines(err: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem in ``err`` (raised validating ``root``), each once, in order."""
    return list(dict.fromkeys(_line(e, root) for e in err.errors()))


def _line(e: ErrorDetails, root: type[BaseModel]) -> str:
    loc, kind, ctx, got = e["loc"], e["type"], e.get("ctx") or {}, e["input"]
    path, here = _resolve(root, loc)
    path = path or "spec"
    if kind == SPEC:
        return f"{path}: {e['msg']}"
    if kind in ("extra_forbidden", "invalid_key") and _is_model(_resolve(root, loc[:-1])[1]):
        return _unknown_key(root, loc)
    if kind == "missing":
        return f"{path}: required but missing"
    if kind == "too_short":
        return f"{path}: needs at least {ctx['min_length']} value(s) (got {shown(got)})"
    if kind == "too_long":
        return f"{path}: at most {ctx['max_length']} values are allowed, but got " \
               f"{ctx['actual_length']}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", ctx["expected"])
        return f"{path}: {unknown(got, allowed)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_line(path, here, ctx, got)
    if kind == "value_error" and "error" in ctx:
        return f"{path}: {ctx['error']}"
    msg = e["msg"][:1].lower() + e["msg"][1:]
    return f"{path}: {msg} (got {shown(got)})"


def _unknown_key(root: type[BaseModel], loc: Loc) -> str:
    """A key the section at ``loc[:-1]`` does not have (or one that is not even a string)."""
    *parent, key = loc
    fields = list(_resolve(root, parent)[1].model_fields)
    path = _resolve(root, (*parent, str(key)))[0]
    return f"{path}: unknown key{did_you_mean(key, fields)}; allowed: {', '.join(fields)}"


def _tag_line(path: str, union: Any, ctx: dict[str, Any], got: Any) -> str:
    """A tagged union (the distributions) given no tag or one it does not know."""
    key = str(ctx.get("discriminator", "")).strip("'")
    tags = [str(t) for t in _tagged(union)]
    if isinstance(got, dict) and got.get(key) is not None:
        return f"{path}.{key}: {unknown(got[key], tags, 'distribution')}"
    typo = closest(key, [str(k) for k in got if k != key]) if isinstance(got, dict) else None
    hint = f" (is '{typo}' a typo?)" if typo else ""
    return f"{path}.{key}: required but missing{hint}; allowed: {', '.join(tags)}"


# --------------------------------------------------------------------------- field paths

def _resolve(root: Any, loc: Sequence[str | int]) -> tuple[str, Any]:
    """(``loc`` as a user writes the path, the type found there or None).

    A tagged union puts the tag in pydantic's location (``space.lr.loguniform.low``); it is
    left out of the path (``space.lr.low``) and used to find the member's type.
    """
    path, node = "", root
    for part in loc:
        node = _plain(node)
        members = _tagged(node)
        if isinstance(part, str) and part in members:
            node = members[part]
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        node = _child(node, part)
    return path, _plain(node)


def _plain(tp: Any) -> Any:
    """``tp`` without Optional; Annotated kept only where it marks a tagged union."""
    while True:
        if typing.get_origin(tp) is Annotated and not _tag_field(tp):
            tp = typing.get_args(tp)[0]
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if _is_union(tp) and len(args) == 1:
            tp = args[0]
            continue
        return tp


def _tag_field(tp: Any) -> str | None:
    """The discriminator of an ``Annotated[A | B, Field(discriminator=...)]``, else None."""
    if typing.get_origin(tp) is not Annotated:
        return None
    return next((m.discriminator for m in typing.get_args(tp)[1:]
                 if isinstance(m, FieldInfo) and isinstance(m.discriminator, str)), None)


def _tagged(tp: Any) -> dict[Any, Any]:
    """Tag -> member type of a tagged union; ``{}`` for any other type."""
    key = _tag_field(tp)
    if key is None:
        return {}
    members = typing.get_args(typing.get_args(tp)[0])
    return {m.model_fields[key].default: m for m in members
            if _is_model(m) and key in m.model_fields}


def _child(tp: Any, part: str | int) -> Any:
    if _is_model(tp):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
