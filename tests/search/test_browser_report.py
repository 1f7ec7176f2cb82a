"""The report as a person sees it: ``report.html`` of a committed sweep with ASHA-stopped trials,
opened from disk in Debian's chromium (driven by playwright): every table has rows, every image
loads, and the page says how it compares trials.

``HPSEARCH_SCREENSHOTS=1`` also writes the screenshot the README shows (docs/img/report.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hpsearch.search.report import from_ray_dir, write_report

CHROMIUM = Path("/usr/bin/chromium")
GOLDEN = Path(__file__).resolve().parent / "golden" / "sweeps"
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "report.png"



@pytest.mark.integration
def test_the_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # CI installs it (.ci/run); a skip would hide a broken page
        pytest.fail(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")

    copy = tmp_path / "golden_search"
    shutil.copytree(GOLDEN / "golden_search", copy)
    files = write_report(from_ray_dir(copy), tmp_path / "report", max_params=15_000)
    tables = sorted(n for n in files if n.endswith(".tex"))
    images = sorted(n for n in files if n.endswith(".png"))
    assert len(tables) >= 6 and len(images) >= 3

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(files["report.html"].as_uri())
            page.wait_for_load_state("load")
            rows = page.eval_on_selector_all(
                "table", "ts => ts.map(t => t.querySelectorAll('tbody tr').length)")
            loaded = page.eval_on_selector_all(
                "img", "is => is.map(i => i.complete && i.naturalWidth > 0)")
            text = page.inner_text("body")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("HPSEARCH_SCREENSHOTS") == "1":  # the README's: the first screen
                README_SHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(README_SHOT), full_page=True,
                                clip={"x": 0, "y": 0, "width": 1280, "height": 1450})
        finally:
            browser.close()

    assert len(rows) == len(tables) and all(n > 0 for n in rows), rows
    assert len(loaded) == len(images) and all(loaded), loaded
    # what a reader needs to read the numbers: definitions and the comparison method
    assert "Definitions" in text
    assert "Val acc: val top-1 accuracy at the trial's best epoch" in text
    assert "best and mean are over these only" in text and "Reached epoch 1" in text
    assert str(copy) not in text  # no machine path
    assert shot.stat().st_size > 10_000
