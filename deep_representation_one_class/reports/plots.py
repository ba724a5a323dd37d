"""Figures of runs and sweeps, drawn with matplotlib's Agg backend (no display needed).

Every figure is a ``matplotlib.figure.Figure`` rendered by ``FigureCanvasAgg`` directly, never
through ``pyplot``: nothing global changes (a user's notebook keeps its own backend) and
nothing tries to open a window. Figures:

* ``roc_figure``: the ROC curves of every classifier of one feature type, with their AUROCs.
* ``histogram_figure``: inlier vs. outlier score histograms with the decision threshold.
* ``training_curves_figure``: loss, accuracy and learning rate over the steps of a run.
* ``per_class_figure``: a sweep's per-class AUROC (mean ± SD over seeds) next to the paper's.
* ``explanation_grid``: images with their attribution heatmaps (``serving/explain_run.py``).

``write_run_plots`` writes a run's ``plots/roc_<feature>.png`` and
``plots/hist_<feature>_<classifier>.png``.
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_curve

from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf

DPI = 100
SIZE = (640, 440)  # pixels of the single-panel figures (width, height)
INLIER, OUTLIER, PAPER = "#1f77b4", "#ff7f0e", "#7f7f7f"
# Score keys of the rotation classifier (one per method, not per feature) share one ROC figure.
FEATURE_GROUPS = ("pool", "embed")
ROTATION_GROUP = "rotation"


def new_figure(
    width: int = SIZE[0],
    height: int = SIZE[1],
    margins: tuple[int, int, int, int] = (70, 36, 15, 50),
) -> Figure:
    """An empty figure of ``width`` x ``height`` pixels on the Agg canvas.

    ``margins`` (left, top, right, bottom; pixels) are fixed rather than computed by a layout
    engine: matplotlib's constrained/tight layout made each figure 2-3x slower to render, and a
    run's report draws a dozen of them.
    """
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    left, top, right, bottom = margins
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height
    )
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def figure_array(fig: Figure) -> np.ndarray:
    """The figure as a ``[H, W, 3]`` uint8 array."""
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str) -> str:
    """Writes the figure as PNG atomically; returns ``path``."""
    io.write_bytes(path, figure_png(fig))
    return path


def save_png(path: str, array: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, 3]`` array as PNG atomically."""
    buf = _io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    io.write_bytes(path, buf.getvalue())


def score_group(key: str) -> str:
    """The ROC figure a score key belongs to: its feature, or ``rotation`` for ``dscore.auc``."""
    feature = key.split(".", 1)[0]
    return feature if feature in FEATURE_GROUPS else ROTATION_GROUP


def _finite_pairs(labels: Any, scores: Mapping[str, Any]) -> dict[str, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    out = {}
    for key, value in scores.items():
        s = np.asarray(value, dtype=np.float64).reshape(-1)
        if s.shape == y.shape and np.all(np.isfinite(s)):
            out[key] = s
    return out


# ----------------------------------------------------------------------------- run figures
def roc_figure(labels: Any, scores: Mapping[str, Any], title: str) -> Figure:
    """ROC curves (outliers positive) of several classifiers on one test set.

    Args:
      labels: ``[M]`` 0/1, 1 = outlier.
      scores: legend name -> ``[M]`` anomaly scores (higher = more anomalous).
      title: the axes title.
    """
    y = np.asarray(labels).reshape(-1) == 1
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color=PAPER, label="chance")
    for name, s in sorted(scores.items(), key=lambda kv: -metrics_lib.auroc(y, kv[1])):
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} ({metrics_lib.auroc(y, s):.1f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (inliers flagged)",
        ylabel="true positive rate (outliers flagged)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="classifier (AUROC)", title_fontsize=8)
    return fig


def histogram_figure(
    labels: Any,
    scores: Any,
    title: str,
    threshold: float | None = None,
    threshold_note: str = "",
    bins: int = 40,
) -> Figure:
    """Inlier and outlier score histograms (each normalised to its class) and the threshold.

    The x range covers the inliers (0.5-99.5 percentiles) and the threshold, and extends into
    the outliers by at most twice the inliers' span: outlier scores are heavy-tailed (GDE
    scores of far outliers can be orders of magnitude larger), and the region that matters for
    a decision is where the two classes overlap. Scores outside the range are counted in the
    first/last bin (the title says so).

    Args:
      labels: ``[M]`` 0/1, 1 = outlier.
      scores: ``[M]`` anomaly scores.
      title: the axes title.
      threshold: drawn as a vertical line when given (flag ``score >= threshold``).
      threshold_note: the line's legend text, e.g. ``"q95 = 1.2: TPR 0.80, FPR 0.06"``.
      bins: number of bins.
    """
    y = np.asarray(labels).reshape(-1) == 1
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = (float(v) for v in np.percentile(s, [0.5, 99.5]))
    if (~y).any():
        in_lo, in_hi = (float(v) for v in np.percentile(s[~y], [0.5, 99.5]))
        lo, hi = min(lo, in_lo), min(hi, in_hi + 2.0 * (in_hi - in_lo))
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    beyond = int((s > hi).sum())
    if beyond:
        title += f" ({beyond} scores > {hi:.3g} in the last bin)"
    edges = np.linspace(lo, hi, bins + 1)
    clipped = np.clip(s, lo, hi)
    fig = new_figure()
    ax = fig.add_subplot()
    for name, mask, color in (("inliers", ~y, INLIER), ("outliers", y, OUTLIER)):
        if mask.any():
            weights = np.full(int(mask.sum()), 1.0 / mask.sum())
            # One filled outline per class (not one rectangle per bin): several times faster.
            ax.hist(
                clipped[mask],
                bins=edges,
                weights=weights,
                histtype="stepfilled",
                alpha=0.5,
                color=color,
                edgecolor=color,
                label=f"{name} (n={int(mask.sum())})",
            )
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(float(threshold), color="black", ls="--", lw=1.5, label=threshold_note or None)
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="fraction of class")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def training_curves_figure(series: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> Figure:
    """One panel per scalar series (e.g. ``train/loss``, ``train/acc``, ``monitor/lr``).

    Args:
      series: tag -> (steps, values), in step order.
    """
    tags = list(series)
    fig = new_figure(SIZE[0], 200 * max(1, len(tags)) + 60, margins=(80, 36, 15, 50))
    axes = fig.subplots(max(1, len(tags)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, tag in zip(axes, tags):
        steps, values = series[tag]
        ax.plot(steps, values, lw=1.5, color=INLIER)
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    axes[0].set_title("training curves (from the run's TensorBoard events)")
    return fig


def per_class_figure(
    classes: Sequence[str],
    ours: Sequence[tuple[float, float] | None],
    paper: Sequence[float | None],
    title: str,
) -> Figure:
    """Per-class AUROC of a sweep (mean ± SD over seeds) next to the paper's value.

    Args:
      classes: class labels, in the plotted order.
      ours: per class (mean, sd) or None (no finished run).
      paper: per class the paper's number or None.
      title: the axes title.
    """
    n = len(classes)
    fig = new_figure(max(SIZE[0], 60 * n + 120), SIZE[1], margins=(70, 36, 15, 110))
    ax = fig.add_subplot()
    x = np.arange(n)
    width = 0.38
    mean = np.array([o[0] if o else np.nan for o in ours], float)
    sd = np.array([o[1] if o else 0.0 for o in ours], float)
    ref = np.array([p if p is not None else np.nan for p in paper], float)
    ax.bar(x - width / 2, mean, width, yerr=sd, color=INLIER, capsize=3, label="this run (±SD)")
    if np.isfinite(ref).any():
        ax.bar(x + width / 2, ref, width, color=PAPER, label="paper")
    finite = np.r_[mean[np.isfinite(mean)] - sd[np.isfinite(mean)], ref[np.isfinite(ref)]]
    bottom = max(0.0, float(np.floor(finite.min() / 5) * 5) - 5) if finite.size else 0.0
    ax.set(ylim=(bottom, 100), xticks=x, ylabel="AUROC x100", title=title)
    ax.set_xticklabels(classes, rotation=30 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _threshold_of(thresholds: Mapping[str, Any] | None, key: str) -> tuple[float | None, str]:
    """(q95-style threshold, legend text with the test-set TPR/FPR) of one score key."""
    if not thresholds:
        return None, ""
    report = thresholds.get("test_report", {})
    spec = str(report.get("spec", "q95"))
    table = thresholds.get("quantiles", {}).get(key)
    if not table or spec not in table:
        return None, ""
    value = float(table[spec])
    stats = report.get(key)
    note = f"threshold {spec} = {value:.4g}"
    if isinstance(stats, dict):
        where = report.get("evaluated_on", "test")
        note += f": TPR {stats['tpr']:.2f}, FPR {stats['fpr']:.2f} ({where})"
    return value, note


def write_run_plots(
    run_dir: str,
    test_labels: Any,
    scores: Mapping[str, Any],
    thresholds: Mapping[str, Any] | None = None,
    out_dir: str | None = None,
) -> list[str]:
    """Writes ROC and score-histogram PNGs of a run.

    Args:
      run_dir: the run folder (PNGs go to ``<run_dir>/plots`` unless ``out_dir`` is given).
      test_labels: ``[M]`` 0/1, 1 = outlier.
      scores: ``"{feature}.{classifier}"`` -> ``[M]`` anomaly scores (plus ``dscore.auc`` etc.).
        Keys whose scores are not all finite (a failed scorer) are skipped.
      thresholds: the run's ``thresholds.json`` dict (its test-report threshold is marked), or
        None.
      out_dir: optional output folder.

    Returns:
      The paths written, sorted: ``roc_<group>.png`` per feature group (every classifier in
      one figure) and ``hist_<feature>_<classifier>.png`` per key.
    """
    y = np.asarray(test_labels).reshape(-1)
    out_dir = out_dir or rf.path(run_dir, rf.PLOTS)
    if y.size == 0 or y.min() == y.max():
        return []  # ROC and class histograms need both classes.
    finite = _finite_pairs(y, scores)
    written = []
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, s in finite.items():
        groups.setdefault(score_group(key), {})[key] = s
    for group, members in sorted(groups.items()):
        names = {
            k if group == ROTATION_GROUP else k.split(".", 1)[1]: s for k, s in members.items()
        }
        title = "ROC, rotation classifier" if group == ROTATION_GROUP else f"ROC, {group} features"
        fig = roc_figure(y, names, title)
        written.append(save_figure(fig, os.path.join(out_dir, f"roc_{group}.png")))
    for key, s in sorted(finite.items()):
        threshold, note = _threshold_of(thresholds, key)
        fig = histogram_figure(y, s, f"scores {key}", threshold, note)
        stem = key.replace(".", "_").replace(os.sep, "_")
        written.append(save_figure(fig, os.path.join(out_dir, f"hist_{stem}.png")))
    return sorted(written)


# ----------------------------------------------------------------------------- explanation grids
def colorize(heat: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 colours of a matplotlib colour map."""
    rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(heat, np.float64), 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, strength: float = 0.65) -> np.ndarray:
    """The heatmap's colours over a gray version of the image, weighted by the heat.

    Args:
      image: ``[H, W, C]`` float in [0, 1] (C = 1 or 3).
      heat: ``[H, W]`` in [0, 1].
      strength: the colour weight at heat 1.

    Returns:
      ``[H, W, 3]`` uint8.
    """
    gray = np.clip(np.asarray(image, np.float64), 0, 1).mean(axis=-1, keepdims=True) * 255
    a = strength * np.clip(heat, 0, 1)[..., None]
    return np.rint((1 - a) * gray + a * colorize(heat)).astype(np.uint8)


def explanation_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    labels: Sequence[str],
    title: str,
    cell: int = 96,
) -> np.ndarray:
    """A grid with one column per image and rows image | heatmap | overlay.

    Args:
      images: ``[K, H, W, C]`` float in [0, 1] (C = 1 or 3).
      heatmaps: ``[K, H, W]`` in [0, 1].
      labels: K short column captions, up to two lines each (e.g. score and class).
      title: a line above the grid.
      cell: side of each cell in pixels.

    Returns:
      ``[height, width, 3]`` uint8.
    """
    k = images.shape[0]
    fig = new_figure(70 + k * (cell + 6), 70 + 3 * (cell + 6))
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    height, width = fig.bbox.height, fig.bbox.width
    grid = fig.add_gridspec(
        3, k, left=60 / width, right=0.995, top=1 - 52 / height, bottom=0.01, wspace=0.05,
        hspace=0.05,
    )  # fmt: skip
    for i in range(k):
        img = np.clip(images[i], 0.0, 1.0)
        rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
        tiles = (rgb, colorize(heatmaps[i]), overlay(rgb, heatmaps[i]))
        for r, tile in enumerate(tiles):
            ax = fig.add_subplot(grid[r, i])
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(("image", "heatmap", "overlay")[r], fontsize=8)
            if r == 0:
                ax.set_title("\n".join(labels[i].split("\n")[:2]), fontsize=7)
    return figure_array(fig)
