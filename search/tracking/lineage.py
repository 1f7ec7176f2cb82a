"""A trial's lineage in MLflow (population-based training): the copies of another trial's
weights it trained on, and the settings it has now where they differ from its params.

MLflow params are immutable, so a trial's params stay the settings it started with; tags say
the rest:

* ``hpsearch.copied_from`` / ``hpsearch.copied_epoch`` / ``hpsearch.copied_changes``: its
  latest copy: which trial, at which epoch, and the settings mutated
  (``lr: 0.1 → 0.12, momentum: 0.9 → 0.72``: the other trial's value, then its own);
* ``hpsearch.lineage``: every copy it made, oldest first, as JSON ``[{"epoch", "from",
  "changes": {setting: [old, new]}}]``;
* ``hpsearch.settings_now``: JSON ``{setting: value}`` of each setting whose value now
  differs from its param (what the trial ended with, with the copies' settings).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["COPIED_CHANGES_TAG", "COPIED_EPOCH_TAG", "COPIED_FROM_TAG", "LINEAGE_TAG",
           "SETTINGS_NOW_TAG", "changes_text", "copy_tags", "lineage_of", "settings_now",
           "settings_now_of"]

COPIED_FROM_TAG = "hpsearch.copied_from"
COPIED_EPOCH_TAG = "hpsearch.copied_epoch"
COPIED_CHANGES_TAG = "hpsearch.copied_changes"
LINEAGE_TAG = "hpsearch.lineage"
SETTINGS_NOW_TAG = "hpsearch.settings_now"


def changes_text(changes: Mapping[str, Any]) -> str:
    """``lr: 0.1 → 0.12, momentum: 0.9 → 0.72`` (each setting's old, then new value)."""
    def shown(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else json.dumps(v)

    return ", ".join(f"{k}: {shown(old)} → {shown(new)}" for k, (old, new) in changes.items())


def lineage_of(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The copies a run's :data:`LINEAGE_TAG` lists (none when absent or unreadable)."""
    try:
        events = json.loads(tags.get(LINEAGE_TAG) or "[]")
    except ValueError:
        return []
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def copy_tags(tags: Mapping[str, str], copy: Mapping[str, Any]) -> dict[str, str]:
    """The tags that record ``copy`` (a result's :data:`~trainables.vocab.COPIED`) on a run
    whose tags are ``tags``: the latest copy, and the lineage with it added once."""
    event = {"epoch": int(copy["epoch"]), "from": str(copy["from"]),
             "changes": dict(copy.get("changes") or {})}
    lineage = [e for e in lineage_of(tags) if e.get("epoch") != event["epoch"]]
    lineage = sorted([*lineage, event], key=lambda e: int(e.get("epoch", 0)))
    return {COPIED_FROM_TAG: event["from"], COPIED_EPOCH_TAG: str(event["epoch"]),
            COPIED_CHANGES_TAG: changes_text(event["changes"]),
            LINEAGE_TAG: json.dumps(lineage)}


def settings_now(params: Mapping[str, str], logged: Callable[[str], str | None],
                 had_tag: bool) -> dict[str, str]:
    """The :data:`SETTINGS_NOW_TAG` for a trial whose config is ``params`` (as MLflow param
    text) and whose run holds ``logged(key)``: empty when nothing differs (and no tag said
    otherwise before)."""
    now = {k: v for k, v in params.items() if logged(k) is not None and logged(k) != v}
    if not now and not had_tag:
        return {}
    return {SETTINGS_NOW_TAG: json.dumps({k: json.loads(v) if _is_json(v) else v
                                          for k, v in sorted(now.items())})}


def settings_now_of(tags: Mapping[str, str]) -> dict[str, Any]:
    """The settings a run's :data:`SETTINGS_NOW_TAG` says it has now (none when absent)."""
    try:
        now = json.loads(tags.get(SETTINGS_NOW_TAG) or "{}")
    except ValueError:
        return {}
    return now if isinstance(now, dict) else {}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
