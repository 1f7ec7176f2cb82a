"""MLflow's UI as a reviewer meets it, in a real browser: Debian's chromium driven by playwright
(its own browser download cannot work here).

A finished tiny sweep (3 trials, ASHA, 2 epochs, one at a time so ASHA's decision is
deterministic: the middle trial, a learning rate too small to learn, is stopped after epoch 1),
then ``hpsearch ui`` on it, the printed link opened as a user would. What the pages show is
checked against Ray's own record of the sweep (the trial folders), not against MLflow's API.

Set ``HPSEARCH_SCREENSHOTS=docs/img`` to refresh the README's screenshot of the runs table.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.tracking import read_trial_dirs, trial_status, tune_states
from hpsearch.search.tracking.finish import run_name
from hpsearch.search.tracking.store import BEST_PREFIX
from hpsearch.trainables.vocab import Status
from tests.driver import hpsearch
from tests.fakedata import write_mnist
from tests.mlflow_server import free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
NAME = "browse"
EPOCHS = 2
WAIT_MS = 180_000  # MLflow's React app on a busy 2-core machine: first paint can take a minute
OBJECTIVE = "val_top1"
BEST = f"{BEST_PREFIX}{OBJECTIVE}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep's root folder (``runs/``, ``mlflow.db``): two trials completed, one
    stopped early by ASHA."""
    root = tmp_path_factory.mktemp("browse")
    data = write_mnist(root / "data", n_train=600, n_test=200)
    spec = {"name": NAME,
            "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                      "channels": [8], "fc_width": 32, "batch_size": 32, "device": "cpu"},
            "space": {"lr": [0.01, 1.0e-5, 0.003]},
            "search": {"algorithm": "grid"},
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
            "budget": {"max_epochs": EPOCHS},
            "resources": {"cpu": 1, "max_concurrent": 1},
            "storage": str(root / "runs"),
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db"}}
    (root / f"{NAME}.yaml").write_text(yaml.safe_dump(spec))
    # a Ray of its own, never one another process runs on this machine
    out = hpsearch("sweep", str(root / f"{NAME}.yaml"), cwd=root, timeout=600,
                   env={**os.environ, "RAY_ADDRESS": "local"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def trials(sweep: Path) -> dict[str, dict[str, Any]]:
    """Ray's record, per trial id: its status, epochs and last ``val_top1``."""
    run_dir = sweep / "runs" / NAME
    states = tune_states(run_dir)
    record = {}
    for t in read_trial_dirs(run_dir, states):
        status = trial_status(t.rows, states.get(t.trial_id, (None, None))[0], t.error)
        record[t.trial_id] = {"status": status, "epochs": [r["epoch"] for r in t.rows],
                              OBJECTIVE: t.rows[-1][OBJECTIVE]}
    assert sorted(r["status"] for r in record.values()) == sorted(
        [Status.COMPLETED, Status.COMPLETED, Status.STOPPED_EARLY]), record
    return record


@pytest.fixture(scope="module")
def link(sweep: Path) -> Iterator[str]:
    """``hpsearch ui NAME``'s printed link; the UI is stopped (SIGTERM) afterwards."""
    ui = subprocess.Popen([sys.executable, "-m", "hpsearch", "ui", NAME, "--storage",
                           str(sweep / "runs"), "--port", str(free_port())], cwd=sweep,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ui.stdout.readline()  # printed once the server answers
        found = re.search(r"http://\S+", line)
        assert found, f"no link in {line!r}"
        yield found.group(0)
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(ui.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM} (Debian's chromium: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1500, "height": 700})
    page.set_default_timeout(60_000)
    yield page
    page.close()


def _runs_table(page: Any, link: str) -> None:
    """The link's runs table with the parent expanded, columns ``val_top1`` and the parent's
    best so far shown, as a user sets it up."""
    page.goto(link)
    page.wait_for_selector(f"[role=row] a >> text={NAME}", timeout=WAIT_MS)
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.click()  # MLflow's assistant panel: not ours, and it hides half the table
    page.click("[role=row] button[data-component-id*=runnamecellrenderer]")  # expand parent
    page.click("[data-testid=column-selection-dropdown][data-component-id*=columnselector]")
    for column in ("Description", "Source", "Models", OBJECTIVE, BEST):  # on, off, off, on, on
        page.fill("input[placeholder='Search columns']", column)
        exact = page.locator(".du-bois-light-tree-title", has_text=re.compile(
            rf"^{re.escape(column)}$"))
        page.locator(".du-bois-light-tree-treenode").filter(has=exact).locator(
            ".du-bois-light-tree-checkbox").click()
    page.keyboard.press("Escape")
    page.wait_for_selector(".ag-overlay-loading-wrapper", state="hidden", timeout=WAIT_MS)


def _row_cells(page: Any, name: str) -> dict[str, str]:
    """The runs table's row of the run named ``name``: its cells' text by column id."""
    row = page.locator("[role=row]").filter(
        has=page.get_by_role("link", name=name, exact=True))
    row.first.wait_for()
    row_id = row.first.get_attribute("row-id")
    cells = page.locator(f"[role=row][row-id='{row_id}'] [role=gridcell]")
    return {c.get_attribute("col-id"): c.inner_text().strip() for c in cells.all()}


def _metric_cell(cells: dict[str, str], metric: str) -> str:
    [value] = [v for k, v in cells.items() if k == f"metrics.`{metric}`"]
    return value


def test_the_runs_table_shows_the_sweep_and_each_trial_with_status_and_val_top1(
        page: Any, link: str, trials: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    _runs_table(page, link)
    parent = _row_cells(page, NAME)
    assert float(_metric_cell(parent, BEST)) == pytest.approx(
        max(t[OBJECTIVE] for t in trials.values()))
    for trial_id, trial in trials.items():
        cells = _row_cells(page, run_name(trial_id, trial["status"]))
        assert float(_metric_cell(cells, OBJECTIVE)) == pytest.approx(trial[OBJECTIVE]), \
            (trial_id, cells)
        # the name is cut in the table; the description column shows the status whole
        [note] = [v for k, v in cells.items() if "Description" in k or "note" in k]
        assert note.startswith(f"{trial['status'].label}:"), (trial_id, cells)
    assert page.get_by_text(f"{len(trials) + 1} matching runs").is_visible()

    page.click("button[aria-label='Toggle sidebar']")  # room for the metric columns
    page.wait_for_timeout(1000)
    shot = tmp_path / "mlflow-runs.png"
    page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1500, "height": 420})
    if os.environ.get("HPSEARCH_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["HPSEARCH_SCREENSHOTS"]) / shot.name)


def test_a_trial_run_charts_val_top1_with_one_point_per_epoch(
        page: Any, link: str, trials: dict[str, dict[str, Any]]) -> None:
    for trial_id, trial in trials.items():
        page.goto(link)
        page.wait_for_selector(f"[role=row] a >> text={NAME}", timeout=WAIT_MS)
        page.wait_for_selector(".ag-overlay-loading-wrapper", state="hidden", timeout=WAIT_MS)
        name = run_name(trial_id, trial["status"])
        child = page.get_by_role("link", name=name, exact=True)
        if not child.count():  # the table remembers an expanded parent
            page.click("[role=row] button[data-component-id*=runnamecellrenderer]")
        child.click()
        page.get_by_role("heading", name=name).wait_for(timeout=WAIT_MS)
        status = "Finished" if trial["status"] == Status.COMPLETED else "Killed"
        assert page.get_by_text(status, exact=True).first.is_visible(), (trial_id, status)
        page.get_by_text("Model metrics", exact=True).click()
        page.fill("input[placeholder='Search metric charts']", OBJECTIVE)
        page.get_by_text(OBJECTIVE, exact=True).wait_for(timeout=WAIT_MS)  # the chart's title
        assert _points_of_the_one_chart(page) == len(trial["epochs"]), (trial_id, trial)


def _points_of_the_one_chart(page: Any) -> int:
    """How many points plotly drew in the one chart the filter leaves: its markers' distinct
    positions (a one-point series is drawn twice, by its trace and its highlight)."""
    plots = page.locator(".js-plotly-plot")
    deadline = time.monotonic() + WAIT_MS / 1000
    while plots.count() != 1 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert plots.count() == 1, f"{plots.count()} charts, 1 expected"
    markers = plots.locator(".trace.scatter .points path.point")
    markers.first.wait_for(timeout=WAIT_MS)
    return len({m.get_attribute("transform") for m in markers.all()})
