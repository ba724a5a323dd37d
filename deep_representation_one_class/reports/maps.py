"""Anomaly-map panels (image | ground truth | heat map | overlay | colour bar) as pixel arrays.

The tiles keep the images' own resolution (one image pixel = one panel pixel), so they are
assembled in numpy, coloured with matplotlib's "jet" map and labelled with Pillow's bitmap
font rather than drawn as a matplotlib figure. Every panel of one run shares a fixed colour
scale ``[vmin, vmax]`` (stated in the title and on the colour bar), so that colours can be
compared across images: a uniform red means "as anomalous as the worst pixels of the test
set", not "the maximum of this image".
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from deep_representation_one_class.utils import run_folder as rf
from deep_representation_one_class.utils.io import atomic_path

__all__ = ["apply_colormap", "mask_outline", "render_panel", "save_png", "write_panels"]

_HEADER = 14  # pixels of title text above the tiles
_BAR = 16  # width of the colour bar


def apply_colormap(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Maps values to colours on the fixed scale [vmin, vmax] (clipped outside).

    Args:
      values: [...] real array.
      vmin, vmax: the scale; equal values map everything to the bottom colour.

    Returns:
      [..., 3] uint8 RGB.
    """
    span = float(vmax) - float(vmin)
    t = (np.asarray(values, np.float64) - float(vmin)) / span if span > 0 else np.zeros_like(values)
    t = np.clip(t, 0.0, 1.0)
    return np.rint(matplotlib.colormaps["jet"](t)[..., :3] * 255.0).astype(np.uint8)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: the defect pixels that touch a normal pixel (the region borders)."""
    m = np.asarray(mask).astype(bool)
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return img


def render_panel(
    image: np.ndarray,
    mask: np.ndarray,
    anomaly_map: np.ndarray,
    vmin: float,
    vmax: float,
    title: str = "",
    alpha: float = 0.5,
) -> np.ndarray:
    """One row: image | ground truth | heat map | overlay (with the mask outline) | colour bar.

    Args:
      image: [H, W, C] uint8 (or float in [0, 1]), C in {1, 3}.
      mask: [H, W] 0/1 ground truth.
      anomaly_map: [H, W] float anomaly map.
      vmin, vmax: the fixed colour scale shared by all panels of a run.
      title: text drawn above the tiles (the scale is appended).
      alpha: heat-map weight in the overlay.

    Returns:
      [H + header, 4 W + bar, 3] uint8 RGB.
    """
    img = _rgb(image)
    h, w = img.shape[:2]
    heat = apply_colormap(anomaly_map, vmin, vmax)
    gt = np.repeat((np.asarray(mask) > 0)[..., None] * np.uint8(255), 3, axis=-1)
    over = np.rint((1 - alpha) * img + alpha * heat).astype(np.uint8)
    over[mask_outline(mask)] = (0, 255, 0)
    bar_values = np.linspace(vmax, vmin, h)[:, None] * np.ones((1, _BAR))
    bar = apply_colormap(bar_values, vmin, vmax)
    canvas = np.zeros((h + _HEADER, 4 * w + _BAR + 2, 3), np.uint8)
    for k, tile in enumerate((img, gt, heat, over)):
        canvas[_HEADER:, k * w : (k + 1) * w] = tile
    canvas[_HEADER:, 4 * w + 2 :] = bar
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    text = f"{title}  scale [{vmin:.3g}, {vmax:.3g}] (fixed for all images)".strip()
    draw.text((2, 1), text, fill=(255, 255, 255), font=font)
    draw.text((4 * w + 3, _HEADER), "hi", fill=(255, 255, 255), font=font)
    draw.text((4 * w + 3, h + _HEADER - 12), "lo", fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Writes an [H, W, 3] uint8 array as PNG atomically (temporary file + ``os.replace``)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    with atomic_path(os.fspath(path), ".png") as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())


def _panel_name(data, i: int) -> str:
    """``<class>_<file stem>`` (e.g. ``broken_large_003``), unique within one category."""
    if data.test_paths is not None:
        p = Path(data.test_paths[i])
        return f"{p.parent.name}_{p.stem}"
    return f"{data.class_names[data.test_class[i]]}_{i:04d}"


def write_panels(
    data,
    masks: np.ndarray,
    maps: np.ndarray,
    image_scores: np.ndarray,
    label: str,
    run_dir: str | None,
    writer=None,
    step: int | None = None,
    tag: str = "mvtec/anomaly_maps",
    max_tb_images: int = 6,
) -> None:
    """Writes one panel per test image to ``<run_dir>/maps/<class>_<stem>.png`` and a few to TB.

    Args:
      data: the task (``test_x``, ``test_class``, ``class_names``, ``test_paths``).
      masks: [T, H, W] 0/1 ground truth.
      maps: [T, H, W] anomaly maps; one colour scale, the 1st..99.9th percentile of all of them.
      image_scores: [T] image scores, printed in the titles.
      label: what produced the scores, e.g. ``"pool.gde max"``.
      run_dir: the run folder (None: no PNG files).
      writer: a ``tf.summary`` writer (None: no TensorBoard images); it receives the first image
        of each test class (good first), at most ``max_tb_images``.
      step: TensorBoard step (default: the current summary step, else 0).
      tag: TensorBoard image tag.
    """
    if run_dir is None and writer is None:
        return
    # Percentiles keep a few extreme pixels from washing every other map out.
    vmin, vmax = (float(v) for v in np.percentile(maps, [1.0, 99.9]))
    folder = rf.path(run_dir, rf.MAPS) if run_dir is not None else None
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
    firsts = [int(np.flatnonzero(data.test_class == k)[0]) for k in np.unique(data.test_class)]
    tb_pick = set(firsts[:max_tb_images]) if writer is not None else set()
    tb_panels = []
    sizes = getattr(data, "test_sizes", None)
    for i in range(len(maps)):
        if folder is None and i not in tb_pick:
            continue
        name = _panel_name(data, i)
        title = f"{name}: {label} score {image_scores[i]:.4g}"
        panel = render_panel(data.test_x[i], masks[i], maps[i], vmin, vmax, title)
        if folder is not None:
            png = panel
            if sizes is not None:  # PNGs show the image content only, not the canvas padding
                h, w = (int(v) for v in sizes[i])
                crop = (slice(0, h), slice(0, w))
                png = render_panel(
                    data.test_x[i][crop], masks[i][crop], maps[i][crop], vmin, vmax, title
                )
            save_png(os.path.join(folder, f"{name}.png"), png)
        if i in tb_pick:
            tb_panels.append(panel)
    if tb_panels:
        import tensorflow as tf  # only for TensorBoard output; the panels need no TensorFlow

        if step is None:
            current = tf.summary.experimental.get_step()
            step = int(current) if current is not None else 0
        with writer.as_default():
            tf.summary.image(
                tag,
                np.stack(tb_panels),
                step=step,
                max_outputs=len(tb_panels),
                description=(
                    "image | ground truth | anomaly map | overlay; the colour scale is fixed "
                    f"for all images: [{vmin:.4g}, {vmax:.4g}]"
                ),
            )
        writer.flush()
