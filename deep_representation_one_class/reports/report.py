"""``report.html``: one page per finished run (or per sweep folder) to look at or send on.

A run's page shows its AUROC table (image / pixel / PRO for MVTec-style patch runs), the
thresholds with their test-set TPR/FPR, ROC curves per feature with every classifier, inlier
vs. outlier score histograms with the threshold, the training curves from its TensorBoard
events, the k most anomalous and most normal test images with their scores (and the
mistakes: outliers scored most normal, inliers scored most anomalous), attribution grids where
``explain`` was run, anomaly-map panels (image | mask | heat map | overlay) for patch runs, and
the resolved config. Everything it shows sits next to it in ``report_files/`` (relative links,
inline styles, no script, nothing fetched), so ``report.html`` plus ``report_files/`` open from
disk anywhere. Nothing is refitted: scores come from the run's saved classifiers.

Test images are not stored with a run; the report takes them from the training process (the
runner passes its data) or loads the run's data again (``training.build.load_data``), and
keeps only small thumbnails of the images it shows (at most ``_THUMB`` pixels a side, 4 k of
them, plus 2 x ``_PANELS`` map panels). Without the data the page says so and shows the rest.
CLI: ``python -m deep_representation_one_class.report --model_dir=RUN_OR_SWEEP [--k=8]``."""

from __future__ import annotations

import argparse
import datetime
import io as _io
import logging
import math
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from deep_representation_one_class import cli, resolve
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.reports import baseline_rows as rows_lib
from deep_representation_one_class.reports import html_page as H
from deep_representation_one_class.reports import maps, plots, publish, sweep_report
from deep_representation_one_class.reports.run_artifacts import (
    ReportError,
    RunArtifacts,
    default_key,
    explain_grids,
    is_run,
    load_run,
    read_scalars,
)
from deep_representation_one_class.training import build, data_record
from deep_representation_one_class.utils import io, run_folder

logger = logging.getLogger(__name__)

REPORT = publish.REPORT
FILES = publish.FILES
_THUMB = 128  # largest side of a test-image thumbnail (pixels)
_PANELS = 4  # anomaly-map panels per group (patch runs)


def _png(path: str, rgb: np.ndarray, max_side: int | None = None) -> None:
    img = Image.fromarray(np.asarray(rgb, np.uint8).squeeze() if rgb.shape[-1] == 1 else rgb)
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    io.write_bytes(path, buf.getvalue())


def _class_names(run: RunArtifacts, data: Any) -> list[str]:
    if data is not None:
        return list(data.class_names)
    top = int(run.test_class.max()) + 1 if run.test_class.size else 0
    return [str(i) for i in range(top)]


def _load_test_data(run: RunArtifacts, data: Any) -> tuple[Any, str]:
    """(the run's test data or None, why not), checked against the run's labels."""
    if data is None:
        try:
            data = build.load_data(resolve.load(run.config))
        except (UserError, ValueError, OSError, KeyError, TypeError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return None, f"the test images could not be loaded ({reason})"
    if len(data.test_x) != len(run.labels) or not np.array_equal(data.test_y, run.labels):
        return None, "the test data loaded now differ from the run's embeddings.npz"
    try:
        record = data_record.read_data_record(run.run_dir)
    except UserError:
        record = None
    if record and record.get("test_digest") not in (None, data_record.data_digest(data)):
        # Same count and labels, other pixels: thumbnails would show images the run never saw.
        return None, "the test images changed since the run (their content digest differs)"
    return data, ""


# ----------------------------------------------------------------------------- tables
def _auroc_table(run: RunArtifacts) -> str:
    if run.patch:
        return _patch_tables(run.metrics)
    metrics = run.metrics
    flat = {k: v for k, v in metrics.items() if k.count(".") == 1 and not rows_lib.is_baseline(k)}
    feats = sorted({k.split(".")[0] for k in flat}, key=lambda f: (f not in ("pool", "embed"), f))
    clfs = sorted({k.split(".")[1] for k in flat})
    rows = [[f, *(_fmt(flat.get(f"{f}.{c}")) for c in clfs)] for f in feats]
    rows += [  # the baselines (raw pixels, untrained network, from scratch) under the run's own
        [rows_lib.label(n), *(_fmt(metrics.get(f"{p}.{c}")) for c in clfs)]
        for n, p in rows_lib.row_prefixes(metrics)
    ]
    note = "auc = 1-NN cosine distance (the reference's name); dscore/logit = rotation classifier"
    return H.table(["AUROC x100", *clfs], rows, best=_best_cells(rows)) + H.paragraph(note, True)


# Patch runs' columns: (metric kind, header); a column shows when any row has the metric.
_PATCH_KINDS = (
    ("image_auroc", "image AUROC"),
    ("image_aupr", "image AUPR"),
    ("image_f1_max", "image F1-max"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_aupr", "pixel AUPR"),
    ("pixel_f1_max", "pixel F1-max"),
    ("pro", "AU-PRO (FPR <= 0.3)"),
)


def _patch_tables(metrics: dict[str, float]) -> str:
    """Detection/localisation per (feature, classifier), then the image AUROC per defect type."""
    own = [k for k in metrics if not k.startswith("synthetic.") and not rows_lib.is_baseline(k)]
    keys = [(k, k) for k in sorted({k.rsplit(".", 1)[0] for k in own if k.count(".") == 2})]
    keys += rows_lib.scorer_rows(metrics)  # the baselines, one row per scorer
    kinds = [(m, h) for m, h in _PATCH_KINDS if any(f"{k}.{m}" in metrics for _, k in keys)]
    rows = [[name, *(_fmt(metrics.get(f"{k}.{m}")) for m, _ in kinds)] for name, k in keys]
    header = ["feature.classifier", *(h for _, h in kinds)]
    html = H.table(header, rows, best=_best_cells(rows))
    note = (
        "All x100. AUPR = average precision; F1-max = the best F1 over all thresholds (chosen "
        "on the test labels: a comparison number, not a deployable threshold); AU-PRO = area "
        "under the per-region-overlap curve up to 30% FPR, normalised by 0.3."
    )
    html += H.paragraph(note, True)
    per_type = {
        k: v for k, v in metrics.items() if ".image_auroc." in k and not k.startswith("synthetic.")
    }
    if per_type:
        types = sorted({k.rsplit(".", 1)[1] for k in per_type})
        rows = [
            [k, *(_fmt(per_type.get(f"{k}.image_auroc.{t}")) for t in types)]
            for k in sorted({k.split(".image_auroc.")[0] for k in per_type})
        ]
        html += H.paragraph("Image AUROC of each defect type against the good images:")
        html += H.table(["feature.classifier", *types], rows, best=_best_cells(rows))
    return html


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _best_cells(rows: list[list[str]]) -> set[tuple[int, int]]:
    """(row, col) of the largest number in each column after the first."""
    best = set()
    for c in range(1, max((len(r) for r in rows), default=0)):
        values = [(float(r[c]), i) for i, r in enumerate(rows) if c < len(r) and r[c]]
        if values:
            top = max(values)[0]
            best |= {(i, c) for v, i in values if v == top}
    return best


def _threshold_table(run: RunArtifacts) -> str:
    th = run.thresholds
    if not th:
        return H.paragraph("This run has no thresholds (patch runs and old runs have none).", True)
    report = th.get("test_report", {})
    spec = report.get("spec", "q95")
    rows = []
    for key, stats in sorted(report.items()):
        if not isinstance(stats, dict):
            continue
        rates = (_fmt(stats[m], 3) for m in ("tpr", "fpr", "precision", "f1"))
        rows.append([key, spec, f"{stats['threshold']:.4g}", *rates])
    header = ["classifier", "level", "threshold", "TPR", "FPR", "precision", "F1"]
    where = report.get("evaluated_on", "test")
    text = (
        f"Flag an image when its score >= the threshold, the {spec} quantile of held-out inlier "
        f"scores ({th.get('source')}: {th.get('note', '')}). TPR = outliers flagged, FPR = "
        f"inliers flagged, on the {where} set."
    )
    if th.get("level") == "patches":
        # Patch runs: image and pixel thresholds of held-out normal images, what `score`
        # applies by default (its CSV and output name the threshold in force).
        pixel = th.get("pixel_quantiles", {})
        header.insert(3, "pixel threshold (map outline)")
        for row in rows:
            row.insert(3, f"{pixel[row[0]][spec]:.4g}" if row[0] in pixel else "")
        text = (
            f"Thresholds `score` applies by default: an image is flagged when its score >= the "
            f"{spec} quantile of the image scores of {th.get('num_holdout')} held-out normal "
            f"images; map pixels >= the {spec} quantile of their map pixels are outlined. "
            "--threshold=f1 --val_images=DIR picks F1-optimal ones on labelled images instead. "
            f"TPR = defective images flagged, FPR = normal images flagged, on the {where} set."
        )
    return H.paragraph(text) + H.table(header, rows)


def _info_table(run: RunArtifacts) -> str:
    c, r = run.config, run.summary.get("run", {})
    rows = [
        ["method", c.get("method")],
        ["dataset / category", f"{c.get('dataset')} / {c.get('category')}"],
        ["seed", c.get("seed")],
        [
            "steps",
            f"{r.get('global_step')} of {r.get('total_steps')} (batch {c.get('batch_size')})",
        ],
        ["train / eval time", f"{r.get('train_seconds')} s / {r.get('eval_seconds')} s"],
        ["test set", f"{len(run.labels)} images, {int(run.labels.sum())} outliers"],
        ["replicas / precision", f"{r.get('num_replicas')} / {c.get('precision')}"],
    ]
    # What the evaluated (and served) features were computed in; absent before --eval_precision.
    evaluated = run.summary.get("eval_precision")
    if evaluated:
        rows.append(["evaluation precision", evaluated])
    runtime = r.get("runtime") if isinstance(r.get("runtime"), dict) else {}
    if runtime:
        isa = runtime.get("onednn_max_cpu_isa")
        rows.append(
            ["allocator", runtime.get("allocator", "") + (f", oneDNN ISA {isa}" if isa else "")]
        )
    backbone = run.summary.get("backbone")
    if backbone and backbone.get("pretrained"):
        w = backbone.get("weights", {})
        rows.append(
            [
                "backbone",
                f"{backbone.get('name')} ({'frozen' if backbone.get('frozen') else 'fine-tuned'}, "
                f"{backbone.get('input_size')} px, {backbone.get('precision')}); weights: "
                f"{w.get('package')} {w.get('version')}, sha256 {w.get('sha256')}",
            ]
        )
    return H.table(["", ""], [[k, "" if v is None else v] for k, v in rows], left=2)


def _config_table(run: RunArtifacts) -> str:
    rows = [
        [k, ",".join(map(str, v)) if isinstance(v, list) else v]
        for k, v in sorted(run.config.items())
    ]
    inner = H.table(["flag", "value"], rows, 2)
    return f"<details><summary>{len(rows)} settings</summary>{inner}</details>"


# ----------------------------------------------------------------------------- images
def _groups(scores: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[str, np.ndarray]]:
    order = np.argsort(-scores, kind="stable")
    out_idx, in_idx = order[labels[order] == 1], order[labels[order] == 0]
    return [
        (f"{k} most anomalous test images", order[:k]),
        (f"{k} most normal test images", order[::-1][:k]),
        ("outliers scored most normal (missed at any threshold first)", out_idx[::-1][:k]),
        ("inliers scored most anomalous (first false alarms)", in_idx[:k]),
    ]


def _gallery_section(run, data, key, k, folder, why) -> str:
    scores = run.scores[key]
    text = (
        f"Ranked by {key} (the highest test AUROC of this run unless --key was given); red "
        "frame = outlier, blue = inlier."
    )
    parts = [H.paragraph(text, True)]
    if data is None:
        parts.append(H.paragraph(f"No thumbnails: {why}. Scores and classes only.", True))
    names = _class_names(run, data)
    for g, (title, idx) in enumerate(_groups(scores, run.labels, k)):
        items = []
        for rank, i in enumerate(idx):
            c = int(run.test_class[i])
            caption = f"#{rank + 1}  {scores[i]:.4g}\n{names[c] if c < len(names) else c}"
            src = ""
            if data is not None:
                src = f"{FILES}/img_{g}_{rank}.png"
                _png(os.path.join(folder, os.path.basename(src)), data.test_x[i], _THUMB)
            items.append((src, caption, bool(run.labels[i])))
        if data is None:
            rows = [[c.replace("\n", "  "), "outlier" if o else "inlier"] for _, c, o in items]
            parts.append(
                H.section(title, H.table(["rank, score, class", "label"], rows, 2), level=3)
            )
        else:
            parts.append(H.section(title, H.gallery(items), level=3))
    return "\n".join(parts)


def _panel_section(run, data, k, folder, why) -> str:
    key = run.map_key
    scores = run.scores[key]
    vmin, vmax = (float(v) for v in np.percentile(run.maps, [1.0, 99.9]))
    text = (
        f"Image | ground truth | anomaly map ({key}) | overlay with the defect outline; one "
        "colour scale for all panels."
    )
    parts = [H.paragraph(text, True)]
    if data is None:
        parts.append(H.paragraph(f"Panels without the image: {why}.", True))
    names = _class_names(run, data)
    masks = run.masks if run.masks is not None else np.zeros(run.maps.shape, np.uint8)
    for g, (title, idx) in enumerate(_groups(scores, run.labels, k)[:2]):
        figs = []
        for rank, i in enumerate(idx):
            c = int(run.test_class[i])
            name = names[c] if c < len(names) else str(c)
            image = data.test_x[i] if data is not None else np.zeros((*run.maps.shape[1:], 3))
            panel = maps.render_panel(image, masks[i], run.maps[i], vmin, vmax, name)
            src = f"{FILES}/panel_{g}_{rank}.png"
            _png(os.path.join(folder, os.path.basename(src)), panel)
            figs.append((src, f"#{rank + 1} {name}: image score {scores[i]:.4g}"))
        parts.append(H.section(title, H.figures(figs), level=3))
    return "\n".join(parts)


def _figures(run: RunArtifacts, folder: str) -> tuple[str, str]:
    """(ROC + histogram section, training-curve section)."""
    written = plots.write_run_plots(run.run_dir, run.labels, run.scores, run.thresholds, folder)
    rel = [f"{FILES}/{os.path.basename(p)}" for p in written]
    roc = [(p, "ROC curves of every classifier (legend: AUROC)") for p in rel if "/roc_" in p]
    hist = [(p, "inlier vs. outlier scores; dashed: the threshold") for p in rel if "/hist_" in p]
    scores = H.figures(roc, 2) + H.section("Score histograms", H.figures(hist, 3), level=3)
    series = read_scalars(run_folder.path(run.run_dir, run_folder.TENSORBOARD))
    if not series:
        return scores, H.paragraph("No training curves (no tb/ events with train/loss).", True)
    plots.save_figure(plots.training_curves_figure(series), os.path.join(folder, "curves.png"))
    return scores, H.figures([(f"{FILES}/curves.png", "loss, accuracy and learning rate")])


def write_run_report(run_dir: str, data: Any = None, k: int = 8, key: str | None = None) -> str:
    """Writes ``<run_dir>/report.html`` and ``<run_dir>/report_files/``; returns the page path.

    Args:
      run_dir: a finished run folder.
      data: the run's ``OneClassData`` (the runner passes it); None loads it again.
      k: images per group.
      key: score key to rank images by (``pool.kde``); default: the best test AUROC.

    Raises:
      ReportError: not a finished run, or an unknown ``key``.
    """
    if k < 1:
        raise ReportError(f"--k must be >= 1, got {k}")
    run = load_run(run_dir)
    key = key or default_key(run)
    if key is not None and key not in run.scores:
        raise ReportError(f"no scores for '{key}' in {run_dir}; valid: {', '.join(run.scores)}")
    publish.check_owned(run_dir, _our_file_name)
    data, why = _load_test_data(run, data)
    return publish.write_page(
        run_dir, lambda folder: _render(run, run_dir, data, why, k, key, folder)
    )


def _our_file_name(name: str) -> bool:
    return name.endswith(".png")  # every figure of a run's page is a PNG


def _render(run, run_dir, data, why, k, key, folder) -> str:
    """Writes the figures into ``folder`` and returns the page."""
    c = run.config
    title = (
        f"{c.get('method')} on {c.get('dataset')} category {c.get('category')}, "
        f"seed {c.get('seed')}"
    )
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    where = f"Run folder {run_dir}; report written {when}."
    body = [f"<h1>{H.esc(title)}</h1>", H.paragraph(where, True), _info_table(run)]
    body += [H.section("AUROC", _auroc_table(run), anchor="auroc")]
    patch_th = run.patch and (run.thresholds or {}).get("level") == "patches"
    body += [H.section("Thresholds", _threshold_table(run))] if not run.patch or patch_th else []
    # What the engineer came for first: which test images look anomalous; then the curves.
    if key is not None and run.patch and run.maps is not None:
        body.append(
            H.section("Anomaly maps", _panel_section(run, data, min(k, _PANELS), folder, why))
        )
    elif key is not None:
        body.append(H.section("Test images", _gallery_section(run, data, key, k, folder, why)))
    scores_html, curves_html = _figures(run, folder)
    body += [H.section("ROC curves", scores_html), H.section("Training", curves_html)]
    grids = explain_grids(run_dir)
    for p in grids:
        shutil.copyfile(p, os.path.join(folder, "explain_" + os.path.basename(p)))
    if grids:
        figs = [(f"{FILES}/explain_{os.path.basename(p)}", os.path.basename(p)) for p in grids]
        body.append(H.section("Attributions (explain/)", H.figures(figs)))
    for note in run.notes:
        body.append(H.paragraph(note, True))
    body.append(H.section("Config", _config_table(run)))
    return H.page(title, body)


def try_write_run_report(run_dir: str, data: Any = None) -> str | None:
    """``write_run_report`` for the end of a run or a re-evaluation: a failure is logged as a
    warning (with the command that retries) and never fails the caller; returns the page."""
    try:
        path = write_run_report(run_dir, data)
    except Exception as e:  # a report must never fail the run it reports on
        logger.warning(
            "report.html was not written (%s: %s); retry with: python -m "
            "deep_representation_one_class.report --model_dir=%s",
            type(e).__name__,
            str(e).strip().splitlines()[0] if str(e).strip() else "",
            run_dir,
        )
        return None
    logger.info("Report: %s", path)
    return path


def write_report(folder: str, data: Any = None, k: int = 8, key: str | None = None) -> str:
    """A run's report, or a sweep's when ``folder`` holds finished runs below it."""
    if not os.path.isdir(folder):
        raise ReportError(f"{folder} does not exist; pass a run folder or a sweep folder")
    if is_run(folder):
        return write_run_report(folder, data, k, key)
    return sweep_report.write_sweep_report(folder)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.report"),
        description="Write report.html (+ report_files/) for a finished run or a sweep folder.",
    )
    p.add_argument("--model_dir", required=True, help="a finished run folder or a sweep folder")
    p.add_argument("--k", type=int, default=8, help="test images per group (default 8)")
    p.add_argument("--key", help="score to rank test images by, e.g. pool.kde (default: best)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        print(f"wrote {write_report(args.model_dir, k=args.k, key=args.key)}")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    """Console-script entry point."""
    cli.entry_point(main)
