"""A run's report.html in a real browser: headless Chromium (Debian's ``chromium`` package, which
``.ci/run`` installs before the slow tests) loads it from disk, every image must have decoded
(non-zero natural width), the AUROC table must be on the page, and a screenshot is saved."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class.reports import report as report_lib

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Appended to a copy of the page only: the report itself carries no script. On "load" (every
# image has finished loading or failed) it writes what it found into the DOM, which
# --dump-dom prints.
_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.getAttribute("src"); });
  var h = document.getElementById("auroc");
  var table = h ? h.nextElementSibling : null;
  var pre = document.createElement("pre");
  pre.id = "droc-check";
  pre.textContent = JSON.stringify({
    images: imgs.length,
    broken: broken,
    auroc_table: table && table.tagName === "TABLE" ? table.innerText : null,
    auroc_height: table ? table.getBoundingClientRect().height : 0
  });
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no headless browser: install Debian's chromium package (apt-get install chromium); "
        ".ci/run installs it before the slow tests"
    )


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _check(browser: str, page: Path, profile: Path) -> dict:
    probe = page.with_name("browser_check.html")
    probe.write_text(page.read_text().replace("</body>", _CHECK + "\n</body>"))
    try:
        out = _chromium(
            browser, profile, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()
        )
    finally:
        probe.unlink()
    found = re.search(r'<pre id="droc-check">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the page did not finish loading in Chromium: {out.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
def test_report_renders_in_headless_chromium(fake_run, tmp_path):
    browser = _browser()
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    page = Path(report_lib.write_run_report(str(run)))
    summary = json.loads((run / "summary.json").read_text())

    result = _check(browser, page, tmp_path / "profile")
    assert result["images"] >= 40, result  # figures + 32 thumbnails
    assert result["broken"] == [], result
    assert result["auroc_height"] > 0, result
    table = result["auroc_table"]
    assert table and table.startswith("AUROC x100")
    assert f"{summary['metrics']['pool.kde']:.2f}" in table

    # The check can fail: a missing image file is reported as broken.
    (run / "report_files" / "roc_pool.png").unlink()
    assert _check(browser, page, tmp_path / "profile")["broken"] == ["report_files/roc_pool.png"]

    shot = Path(os.environ.get("DROC_SCREENSHOT_DIR", tmp_path)) / "report_fake_run.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page = Path(report_lib.write_run_report(str(run)))
    size, target = "--window-size=1280,2400", f"--screenshot={shot}"
    out = _chromium(browser, tmp_path / "profile", size, target, page.as_uri())
    assert shot.is_file(), out.stderr[-2000:]
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.shape == (2400, 1280)
    assert (pixels < 128).mean() > 0.005  # text, tables and figures, not a blank page
