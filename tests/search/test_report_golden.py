"""``hpsearch report`` on two small committed sweeps writes the same tables as when the golden
files were made: the terminal leaderboard, ``report.md``, every ``.tex`` table, ``trials.csv``,
``history.csv``, the list of files (plots included, not their pixels), and the hyperparameter
importances the importance plot shows.

The sweeps in ``golden/sweeps/`` are real ones cut down to what the report reads (see
``golden/make_sweeps.py``). After an intended change to the report, refresh the expected files
with ``HPSEARCH_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from hpsearch.search.cli import main
from hpsearch.search.report import from_ray_dir, param_importances

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("HPSEARCH_UPDATE_GOLDEN") == "1"
# Sweep -> the report's options: a budget and a top-N on the search, none on the OFAT sweep.
CASES = {"golden_search": ["--top", "8", "--max-params", "15K"], "golden_ofat": []}
# Lines that say when and where the report was made, not what it found.
_VOLATILE = [(re.compile(r"^report machine: .*$", re.M), "report machine: <machine>"),
             (re.compile(r"^report written: .*$", re.M), "report written: <date>")]


def _normalised(text: str, paths: dict[str, Path]) -> str:
    for placeholder, path in paths.items():
        text = text.replace(str(path), placeholder)
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def _outputs(sweep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``hpsearch report`` on a copy of the sweep: each compared file's normalised text."""
    copy = tmp_path / sweep
    shutil.copytree(GOLDEN / "sweeps" / sweep, copy)
    out = tmp_path / "results"
    assert main(["report", str(copy), "--out", str(out), *CASES[sweep]]) == 0
    folder = out / sweep
    paths = {"<sweep>": copy, "<out>": out}
    texts = {"stdout.txt": capsys.readouterr().out,
             "files.txt": "".join(f"{p.name}\n" for p in sorted(folder.iterdir()))}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".md", ".tex", ".csv"):
            texts[path.name] = path.read_text(encoding="utf-8")
    importances, note = param_importances(from_ray_dir(copy))
    texts["importances.json"] = json.dumps(
        {"importances": {k: round(v, 6) for k, v in (importances or {}).items()}, "note": note},
        indent=1) + "\n"
    return {name: _normalised(text, paths) for name, text in texts.items()}


@pytest.mark.parametrize("sweep", list(CASES))
def test_the_report_of_a_committed_sweep_is_unchanged(sweep: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    got = _outputs(sweep, tmp_path, capsys)
    expected_dir = GOLDEN / "expected" / sweep
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for name, text in got.items():
            (expected_dir / name).write_text(text, encoding="utf-8")
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(expected_dir.iterdir())}
    assert sorted(got) == sorted(expected)
    for name, text in expected.items():
        assert got[name] == text, f"{sweep}/{name} differs from the golden file"
    # the report names no path of the machine it was read on, nor of the one the sweep ran on
    assert "<sweep>" not in got["report.md"] and "<machine>" in got["report.md"]
    for name in ("report.md", "trials.csv"):
        assert "/golden/" not in got[name], name
