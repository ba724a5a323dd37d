"""Figures drawn with Pillow: evaluation plots of a run and explanation grids.

matplotlib is not a dependency of the package, so a small axes helper draws the frame, ticks,
tick labels and axis titles, which is all the two evaluation plots need: ``write_run_plots``
writes ``<run>/plots/roc_<feature>_<classifier>.png`` (ROC curve) and
``hist_<feature>_<classifier>.png`` (inlier vs. outlier score histogram) for every score key
such as ``pool.kde`` or ``dscore.auc``. ``explanation_grid`` lays out images with their
attribution heatmaps (``explain.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.utils import io

SIZE = (480, 400)
_MARGIN = (70, 40, 20, 55)  # left, top, right, bottom (pixels)
_BLUE = (31, 119, 180)
_ORANGE = (255, 127, 14)
_GRAY = (150, 150, 150)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(v) < 1e-12 * step else v)
        v += step
    return ticks


class _Axes:
    """A plotting area with data-to-pixel mapping on a Pillow canvas."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim, ylim):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", SIZE, (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.x0, self.y0 = _MARGIN[0], _MARGIN[1]
        self.x1, self.y1 = SIZE[0] - _MARGIN[2], SIZE[1] - _MARGIN[3]
        self.xlim, self.ylim = xlim, ylim
        font, small = _font(14), _font(11)
        self.draw.text((self.x0, 10), title, fill=(0, 0, 0), font=font)
        for t in _nice_ticks(*xlim):
            px = self.px(t, ylim[0])[0]
            self.draw.line([(px, self.y1), (px, self.y1 + 4)], fill=(0, 0, 0))
            self.draw.text((px, self.y1 + 6), _fmt(t), fill=(0, 0, 0), font=small, anchor="ma")
        for t in _nice_ticks(*ylim):
            py = self.px(xlim[0], t)[1]
            self.draw.line([(self.x0 - 4, py), (self.x0, py)], fill=(0, 0, 0))
            self.draw.text((self.x0 - 6, py), _fmt(t), fill=(0, 0, 0), font=small, anchor="rm")
        self.draw.text(
            ((self.x0 + self.x1) // 2, SIZE[1] - 18),
            xlabel,
            fill=(0, 0, 0),
            font=small,
            anchor="mm",
        )
        # Pillow cannot draw rotated text directly: draw it on a strip and rotate the strip.
        strip = Image.new("RGB", (self.y1 - self.y0, 16), (255, 255, 255))
        ImageDraw.Draw(strip).text(
            (strip.width // 2, 8), ylabel, fill=(0, 0, 0), font=small, anchor="mm"
        )
        self.image.paste(strip.rotate(90, expand=True), (4, self.y0))

    def px(self, x: float, y: float) -> tuple[float, float]:
        (a, b), (c, d) = self.xlim, self.ylim
        fx = (x - a) / (b - a) if b > a else 0.5
        fy = (y - c) / (d - c) if d > c else 0.5
        return self.x0 + fx * (self.x1 - self.x0), self.y1 - fy * (self.y1 - self.y0)

    def frame(self) -> None:
        self.draw.rectangle([self.x0, self.y0, self.x1, self.y1], outline=(0, 0, 0))

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]], corner: str) -> None:
        small = _font(11)
        for i, (text, color) in enumerate(entries):
            y = self.y0 + 8 + 16 * i if corner == "top" else self.y1 - 16 * (len(entries) - i)
            x = self.x1 - 150
            self.draw.rectangle([x, y + 2, x + 10, y + 12], fill=color)
            self.draw.text((x + 15, y), text, fill=(0, 0, 0), font=small)

    def array(self) -> np.ndarray:
        return np.asarray(self.image)


def roc_image(labels: Any, scores: Any, title: str) -> np.ndarray:
    """A ROC curve (outliers positive) as a ``[H, W, 3]`` uint8 image."""
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).reshape(-1) == 1
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    fpr, tpr, _ = roc_curve(y, s)
    auc = metrics_lib.auroc(y, s)
    ax = _Axes(
        f"ROC {title} (AUROC {auc:.2f})",
        "false positive rate (inliers flagged)",
        "true positive rate (outliers flagged)",
        (0.0, 1.0),
        (0.0, 1.0),
    )
    # Dashed chance diagonal.
    for i in range(0, 20, 2):
        ax.draw.line([ax.px(i / 20, i / 20), ax.px((i + 1) / 20, (i + 1) / 20)], fill=_GRAY)
    ax.draw.line([ax.px(a, b) for a, b in zip(fpr, tpr)], fill=_BLUE, width=2)
    ax.frame()
    return ax.array()


def histogram_image(labels: Any, scores: Any, title: str, bins: int = 30) -> np.ndarray:
    """Overlaid inlier/outlier score histograms (each normalised to its class size).

    The range is the 0.5-99.5 percentile range of all scores so that a few extreme scores (GDE
    scores of far outliers can be orders of magnitude larger) do not squash the rest; scores
    outside it are counted in the first/last bin.
    """
    from PIL import Image, ImageDraw

    y = np.asarray(labels).reshape(-1) == 1
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = (float(v) for v in np.percentile(s, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    clipped = np.clip(s, lo, hi)
    hists = {}
    for name, mask in (("inliers", ~y), ("outliers", y)):
        counts, _ = np.histogram(clipped[mask], bins=edges)
        hists[name] = counts / max(1, int(mask.sum()))
    top = max(float(max(h.max() for h in hists.values())) * 1.1, 1e-6)
    ax = _Axes(
        f"Scores {title}",
        "anomaly score (higher = more anomalous)",
        "fraction of class",
        (lo, hi),
        (0.0, top),
    )
    for name, color in (("inliers", _BLUE), ("outliers", _ORANGE)):
        layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        for i, h in enumerate(hists[name]):
            if h <= 0:
                continue
            (xa, ya), (xb, _) = ax.px(edges[i], h), ax.px(edges[i + 1], 0.0)
            d.rectangle([xa, ya, xb, ax.y1], fill=(*color, 110), outline=(*color, 255))
        ax.image.paste(Image.alpha_composite(ax.image.convert("RGBA"), layer).convert("RGB"))
    ax.draw = ImageDraw.Draw(ax.image)
    ax.frame()
    ax.legend(
        [(f"inliers (n={int((~y).sum())})", _BLUE), (f"outliers (n={int(y.sum())})", _ORANGE)],
        "top",
    )
    return ax.array()


def write_run_plots(
    run_dir: str,
    test_labels: Any,
    scores: Mapping[str, Any],
    thresholds: Mapping[str, Any] | None = None,
    out_dir: str | None = None,
) -> list[str]:
    """Writes a ROC curve and a score histogram PNG for every score of a run.

    Args:
      run_dir: the run folder (PNGs go to ``<run_dir>/plots`` unless ``out_dir`` is given).
      test_labels: ``[M]`` 0/1, 1 = outlier.
      scores: ``"{feature}.{classifier}"`` -> ``[M]`` anomaly scores (e.g. the second value of
        ``metrics.evaluate_features(..., return_scores=True)``, plus ``dscore.auc`` etc.).
        Keys whose scores are not all finite (a failed scorer) are skipped.
      thresholds: the run's ``thresholds.json`` dict (marks the q95 threshold), or None.
      out_dir: optional output folder.

    Returns:
      The paths written, sorted.
    """
    del thresholds
    y = np.asarray(test_labels).reshape(-1)
    out_dir = out_dir or os.path.join(run_dir, "plots")
    if y.size == 0 or y.min() == y.max():
        return []  # ROC and class histograms need both classes.
    written = []
    for key, value in sorted(scores.items()):
        s = np.asarray(value, dtype=np.float64).reshape(-1)
        if s.shape != y.shape or not np.all(np.isfinite(s)):
            continue
        stem = key.replace(".", "_").replace(os.sep, "_")
        for kind, fn in (("roc", roc_image), ("hist", histogram_image)):
            path = os.path.join(out_dir, f"{kind}_{stem}.png")
            save_png(path, fn(y, s, key))
            written.append(path)
    return sorted(written)


# ----------------------------------------------------------------------------- explanation grids
# Anchor colours of a perceptually ordered dark-to-bright map (close to matplotlib's inferno).
_COLORMAP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32
)


def colorize(heat: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 colours."""
    t = np.clip(heat, 0.0, 1.0) * (len(_COLORMAP) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_COLORMAP) - 2)
    frac = (t - lo)[..., None]
    rgb = _COLORMAP[lo] * (1 - frac) + _COLORMAP[lo + 1] * frac
    return np.rint(rgb).astype(np.uint8)


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
      cell: side of each upscaled cell in pixels.

    Returns:
      ``[height, width, 3]`` uint8.
    """
    from PIL import Image, ImageDraw

    k = images.shape[0]
    pad, top, left = 4, 56, 70
    width = left + k * (cell + pad) + pad
    height = top + 3 * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), title, fill=(0, 0, 0), font=_font(14))
    small = _font(11)
    for r, row in enumerate(("image", "heatmap", "overlay")):
        draw.text((pad, top + r * (cell + pad) + cell // 2 - 6), row, fill=(0, 0, 0), font=small)
    for i in range(k):
        img = np.clip(images[i], 0.0, 1.0)
        rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
        rgb8 = np.rint(rgb * 255).astype(np.uint8)
        heat = colorize(heatmaps[i])
        a = 0.65 * heatmaps[i][..., None]
        gray = rgb.mean(axis=-1, keepdims=True) * 255
        overlay = np.rint((1 - a) * gray + a * heat).astype(np.uint8)
        x0 = left + i * (cell + pad)
        for j, line in enumerate(labels[i].split("\n")[:2]):
            draw.text((x0, top - 30 + 13 * j), line[:17], fill=(0, 0, 0), font=small)
        for r, arr in enumerate((rgb8, heat, overlay)):
            tile = Image.fromarray(arr).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (x0, top + r * (cell + pad)))
    return np.asarray(canvas)


def save_png(path: str, array: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, 3]`` array as PNG atomically."""
    from PIL import Image

    with io.atomic_path(path, ".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
