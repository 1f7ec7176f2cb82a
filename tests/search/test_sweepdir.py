"""A sweep's folder: hpsearch.json, the run map and the pending marker read back as written."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from hpsearch.search.sweepdir import (
    MARKER_FILE,
    RUNS_FILE,
    TRIAL_GLOB,
    find_sweep,
    has_marker,
    load_meta,
    pending_reason,
    read_run_map,
    remove_marker,
    sweep_names,
    touch_marker,
    trial_dirname,
    write_meta,
    write_run_map,
)
from hpsearch.trainables.errors import UserError


def test_meta_round_trip_and_a_missing_sweep_names_the_others(tmp_path: Path) -> None:
    write_meta(tmp_path / "a", {"name": "a", "tracking_uri": "sqlite:///x.db"})
    write_meta(tmp_path / "b", {"name": "b"})
    assert load_meta("a", str(tmp_path))["tracking_uri"] == "sqlite:///x.db"
    assert find_sweep(str(tmp_path / "b"))[1] == {"name": "b"}  # by path as well as by name
    assert sweep_names(tmp_path) == ["a", "b"]
    with pytest.raises(UserError, match="no sweep named 'c' .*; found: a, b"):
        load_meta("c", str(tmp_path))


def test_run_map_keeps_one_entry_per_tracking_uri(tmp_path: Path) -> None:
    assert read_run_map(tmp_path, "sqlite:///a.db") == {}
    write_run_map(tmp_path, "sqlite:///a.db", {"parent_run_id": "p1", "trials": {"t": "r"}})
    write_run_map(tmp_path, "http://mlflow:5000", {"parent_run_id": "p2"})
    assert read_run_map(tmp_path, "sqlite:///a.db")["trials"] == {"t": "r"}
    assert read_run_map(tmp_path, "http://mlflow:5000")["parent_run_id"] == "p2"
    (tmp_path / RUNS_FILE).write_text('{"sqlite:///a.db": ')  # torn: read as no map
    assert read_run_map(tmp_path, "sqlite:///a.db") == {}
    write_run_map(tmp_path, "sqlite:///a.db", {"parent_run_id": "p3"})
    assert json.loads((tmp_path / RUNS_FILE).read_text()) == {
        "sqlite:///a.db": {"parent_run_id": "p3"}}


def test_marker_says_why_until_removed(tmp_path: Path) -> None:
    assert not has_marker(tmp_path) and pending_reason(tmp_path) is None
    touch_marker(tmp_path / "sweep", "MLflow error: boom")
    assert has_marker(tmp_path / "sweep")
    assert pending_reason(tmp_path / "sweep") == "MLflow error: boom"
    (tmp_path / "sweep" / MARKER_FILE).write_text("")
    assert pending_reason(tmp_path / "sweep") == "reason not recorded"
    remove_marker(tmp_path / "sweep")
    remove_marker(tmp_path / "sweep")  # gone already: fine
    assert not has_marker(tmp_path / "sweep")


def test_trial_folders_are_named_as_they_are_found() -> None:
    assert fnmatch.fnmatch(trial_dirname("a1b2_00003"), TRIAL_GLOB)
