"""report.html of runs and sweeps: written by the run and by the command, self-contained,
showing the run's own numbers; a report failure never fails a run."""

from __future__ import annotations

import html.parser
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from deep_representation_one_class.config import Config
from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.reports import report as report_lib
from deep_representation_one_class.reports import run_artifacts
from deep_representation_one_class.training import build, rescore, run_dir, runner


class _Page(html.parser.HTMLParser):
    """Collects image sources, link targets, table cells and headings of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.cells, self.headings, self.scripts = [], [], [], [], 0
        self._cell = self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag in ("h1", "h2", "h3"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data


def read_page(path: str | Path) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text())
    return page


def assert_self_contained(page_path: Path, page: _Page) -> None:
    """Every image is a relative file next to the page; nothing refers to the network."""
    text = page_path.read_text()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert page.scripts == 0
    assert page.images
    for src in page.images:
        assert not os.path.isabs(src) and ".." not in src, src
        target = page_path.parent / src
        assert target.is_file(), src
        with Image.open(target) as img:
            assert img.size[0] > 0 and img.size[1] > 0


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory) -> Path:
    """A tiny finished run that wrote its own report at the end of training."""
    path = tmp_path_factory.mktemp("reported") / "run"
    cfg = tiny_config(strategy="default", model_dir=str(path), report=True)
    assert runner.run(cfg).status == "complete"
    return path


def test_the_run_writes_a_self_contained_report(reported_run):
    page_path = reported_run / "report.html"
    assert page_path.is_file()
    assert {"report.html", "report_files"} <= set(run_dir.RUN_FILES)
    page = read_page(page_path)
    assert_self_contained(page_path, page)
    assert {"AUROC", "Thresholds", "ROC curves", "Training", "Test images", "Config"} <= set(
        page.headings
    )
    # The AUROC table shows the run's own numbers.
    summary = json.loads((reported_run / "summary.json").read_text())
    for key, value in summary["metrics"].items():
        assert f"{value:.2f}" in page.cells, key
    # The thresholds table shows the TPR/FPR of thresholds.json.
    stored = json.loads((reported_run / "thresholds.json").read_text())["test_report"]
    assert f"{stored['pool.kde']['tpr']:.3f}" in page.cells
    assert f"{stored['pool.kde']['fpr']:.3f}" in page.cells
    names = {os.path.basename(s) for s in page.images}
    assert {"roc_pool.png", "roc_embed.png", "hist_pool_kde.png", "curves.png"} <= names
    # 4 groups x k=8 thumbnails out of 32 test images, at the test images' own size.
    thumbs = sorted(n for n in names if n.startswith("img_"))
    assert len(thumbs) == 32
    with Image.open(reported_run / "report_files" / "img_0_0.png") as img:
        assert img.size == (32, 32)
    # The run no longer draws a separate plots/ folder: the report holds the figures.
    assert not (reported_run / "plots").exists()


def test_most_anomalous_images_follow_the_saved_classifiers(reported_run):
    run = run_artifacts.load_run(str(reported_run))
    key = run_artifacts.default_key(run)
    assert run.metrics[key] == max(
        v for k, v in run.metrics.items() if k in run.scores and np.isfinite(v)
    )
    # Scores are the saved fit's, not a refit: equal to ClassifierSet.load(...).score.
    arrays = np.load(reported_run / "embeddings.npz")
    cset = classifiers_lib.ClassifierSet.load(str(reported_run))
    np.testing.assert_allclose(
        run.scores["pool.kde"], cset.score({"pool": arrays["test_pool"]})["pool.kde"]
    )
    data = build.load_data(build_config(reported_run))
    order = np.argsort(-run.scores[key], kind="stable")
    with Image.open(reported_run / "report_files" / "img_0_0.png") as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), data.test_x[order[0]])
    with Image.open(reported_run / "report_files" / "img_1_0.png") as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), data.test_x[order[-1]])


def build_config(path: Path) -> Config:
    return Config.from_dict(json.loads((path / "config.json").read_text()))


def test_report_without_the_data_says_so(fake_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)

    def no_data(cfg):
        raise DataError("dataset root /gone is not a directory")

    monkeypatch.setattr(build, "load_data", no_data)
    page_path = Path(report_lib.write_run_report(str(run), k=3))
    text = page_path.read_text()
    assert "No thumbnails: the test images could not be loaded (dataset root /gone" in text
    page = read_page(page_path)
    assert_self_contained(page_path, page)
    assert not any(os.path.basename(s).startswith("img_") for s in page.images)


def test_report_command_and_bad_input(fake_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    assert report_lib.main([f"--model_dir={run}", "--k=2", "--key=pool.gde"]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    assert "Ranked by pool.gde" in (run / "report.html").read_text()
    for bad, message in (
        ([f"--model_dir={tmp_path / 'nothing'}"], "does not exist"),
        ([f"--model_dir={(tmp_path / 'empty').mkdir() or tmp_path / 'empty'}"], "no finished"),
        ([f"--model_dir={run}", "--key=pool.nope"], "no scores for 'pool.nope'"),
        ([f"--model_dir={run}", "--k=0"], "--k must be >= 1"),
    ):
        assert report_lib.main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_a_report_failure_is_a_warning(fake_run, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # The runner writes the report through this function, after summary.json.
    monkeypatch.setattr(report_lib, "write_run_report", broken)
    with caplog.at_level(logging.WARNING):
        assert report_lib.try_write_run_report(str(tmp_path)) is None
    assert "report.html was not written (RuntimeError: disk on fire)" in caplog.text
    assert "deep_representation_one_class.report --model_dir=" in caplog.text


def test_sweep_report_aggregates_and_links_runs(fake_run, tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (1, 2):
        run = sweep / "contrastive" / "fake" / "c0" / f"s{seed}"
        shutil.copytree(fake_run, run)
        summary = json.loads((run / "summary.json").read_text())
        summary["config"]["seed"] = seed
        summary["metrics"]["pool.kde"] = 80.0 + seed  # mean 81.5, SD 0.71 over the two seeds
        (run / "summary.json").write_text(json.dumps(summary))
    report_lib.write_run_report(str(sweep / "contrastive" / "fake" / "c0" / "s1"), k=1)
    page_path = Path(report_lib.write_report(str(sweep)))
    assert page_path == sweep / "report.html"
    page = read_page(page_path)
    assert_self_contained(page_path, page)
    assert any("81.5" in c for c in page.cells), page.cells
    assert "./contrastive/fake/c0/s1/report.html" in page.links  # always ./-relative
    assert any(os.path.basename(s).startswith("per_class_") for s in page.images)
    assert 'c0/s2 <span class="muted">(no report.html)</span>' in page_path.read_text()


def test_evaluate_rewrites_an_existing_report(fake_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    report_lib.write_run_report(str(run), k=1)
    assert rescore.main([f"--model_dir={run}", "--classifiers=kde"]) == 0
    assert f"rewrote {run / 'report.html'}" in capsys.readouterr().out
    page = read_page(run / "report.html")
    # Re-scored with KDE only: the thresholds table lists the new fit and nothing else.
    assert "pool.kde" in page.cells and "pool.gde" not in page.cells


def test_patch_table_shows_pr_metrics_and_defect_types():
    from deep_representation_one_class.reports import report as report_lib

    metrics = {
        "pool.gde": 90.0,
        "pool.gde.image_auroc": 90.0,
        "pool.gde.pixel_auroc": 95.5,
        "pool.gde.pro": 80.25,
        "pool.gde.image_aupr": 97.0,
        "pool.gde.pixel_f1_max": 41.0,
        "pool.gde.image_auroc.crack": 99.0,
        "pool.gde.image_auroc.hole": 81.0,
        "synthetic.pool.gde.image_auroc.hole": 1.0,  # not a defect type of the test set
    }
    html = report_lib._patch_tables(metrics)
    for header in ("image AUPR", "pixel F1-max", "AU-PRO (FPR &lt;= 0.3)", "crack", "hole"):
        assert header in html, header
    assert "pixel AUPR" not in html  # no run has it: no empty column
    assert "80.25" in html and "99.00" in html and "81.00" in html and ">1.00<" not in html
