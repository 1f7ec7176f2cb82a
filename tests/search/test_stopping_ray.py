"""Study-level stopping on real Ray, as a user runs it (``hpsearch sweep``): Optuna's Terminator
ends a sweep of a cheap plugin training function once its regret bound is below the noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hpsearch.search.spec import TERMINATOR_MIN_TRIALS
from tests.driver import hpsearch
from tests.plugin_pkg import write_plugin

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_db")]


def test_optunas_terminator_ends_the_sweep_and_the_summary_says_so(tmp_path: Path) -> None:
    root = write_plugin(tmp_path / "lab")
    spec = {
        "name": "term",
        "plugins": ["my_lab.loops"],
        "fixed": {"trainable": "line_fit", "line_points": 16},
        "space": {"line_lr": {"type": "loguniform", "low": 0.01, "high": 0.5}},
        "objective": {"metric": "mse"},
        "search": {"algorithm": "random", "seed": 0},
        "scheduler": "none",
        # a noise far above any mse gap: the Terminator ends it at its first judgement
        "budget": {"trials": 40, "max_epochs": 1, "terminator": 100.0},
        "resources": {"cpu": 1},
        "storage": str(root / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    (root / "term.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = hpsearch("sweep", "term.yaml", cwd=root, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    ended = [line for line in out.stdout.splitlines() if line.startswith("sweep ended early: ")]
    assert len(ended) == 1, out.stdout
    assert ended[0].startswith(f"sweep ended early: Optuna's Terminator: after "
                               f"{TERMINATOR_MIN_TRIALS} completed trials the best mse (")
    assert ended[0].endswith("(regret bound), less than its noise 100")
    trials = sorted((root / "runs" / "term").glob("trial_*"))
    # the 20th completed trial ended it; the one running beside it stopped, none started after
    assert TERMINATOR_MIN_TRIALS <= len(trials) <= TERMINATOR_MIN_TRIALS + 2 < 40
    meta = json.loads((root / "runs" / "term" / "hpsearch.json").read_text())
    assert meta["spec"]["budget"]["terminator"] == 100.0
