"""Synthetic anomalies on held-out normal images: a validation score without real defects.

A defect run's real anomalies are its test set, which must not choose the recipe. Instead the
patch task holds out a few normal training images (seeded; never trained on, never in the
classifiers' bank), makes one corrupted copy of each per kind below, and scores the normals and
the copies with the run's own fitted classifiers, exactly like test images. The image AUROC of
normal vs corrupted (``synthetic.<feature>.<scorer>`` in ``summary.json``) is then a label-free
score to compare methods, patch sizes and training lengths on the same data.

Kinds (each a local region inside the image content, side ``U[0.06, 0.16]`` of the content's
shorter side, numpy with a seeded generator):

* ``paste``: a rectangle of ANOTHER held-out image pasted in (a foreign part of the surface);
* ``scar``: a thin rotated strip of the same image, shifted and brightened or darkened by 0.25;
* ``noise``: Gaussian pixel noise (sigma 0.15) inside an ellipse;
* ``blur``: a Gaussian blur (sigma 3 px) of a rectangle;
* ``stain``: a soft-edged ellipse 0.15-0.3 brighter or darker, slightly tinted (contamination,
  uneven patches);
* ``hole``: an ellipse filled with one dark or bright flat value (a blowhole, a missing piece).

A method trained to DETECT a kind would be judged on its own training task: CutPaste's views
paste rectangles and scars (on bottle its ``paste``/``scar`` AUROCs were 86-99 while its real
image AUROC ranked mid-field). So the headline ``synthetic.<feature>.<scorer>``, the number to
compare recipes by, pools the normals with the anomalies of the ``HEADLINE_KINDS`` that no
method here trains on (noise, blur, stain, hole): the same set for every recipe, so scores are
comparable. ``synthetic.<feature>.<scorer>.<kind>`` are reported for every kind, paste and scar
included.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from deep_representation_one_class.registry import Option

logger = logging.getLogger(__name__)

__all__ = [
    "HEADLINE_KINDS",
    "KINDS",
    "SYNTHETIC_OPTION",
    "SyntheticSet",
    "hold_out",
    "hold_out_data",
    "synthesize",
]

# Declared once, shared by the image and patch tasks; the mvtec and folder datasets set 16.
SYNTHETIC_OPTION = Option(
    "synthetic_holdout",
    0,
    "Normal training images held out (seeded; at most 1/5) for the synthetic-anomaly "
    "validation score; 0 = none (16 for the defect datasets mvtec and folder).",
)

KINDS = ("paste", "scar", "noise", "blur", "stain", "hole")
# The kinds of the headline score: none is a training target of a method in this package
# (CutPaste's views are pastes and scars).
HEADLINE_KINDS = ("noise", "blur", "stain", "hole")
_STREAM_HOLDOUT = 0x5E1D
_STREAM_SYNTH = 0x5A17
_SIDE = (0.06, 0.16)


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
    """Held-out normals followed by their corrupted copies.

    Attributes:
      x: [M, H, W, C] uint8 images (the ``n`` normals first).
      sizes: [M, 2] int64 content sizes (h, w).
      y: [M] int64, 1 = synthetic anomaly.
      kind: [M] str, 'normal' or one of ``KINDS``.
      masks: [M, H, W] uint8, the corrupted pixels.
    """

    x: np.ndarray
    sizes: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    masks: np.ndarray


def hold_out(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted row indices: ``min(count, n // 5)`` rows held out, or none if < 2."""
    k = min(int(count), int(n) // 5)
    if k < 2:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM_HOLDOUT])
    out = np.sort(rng.choice(n, size=k, replace=False))
    return np.setdiff1d(np.arange(n), out), out


def hold_out_data(data, count: int, seed: int):
    """``data`` without ``count`` seeded normal training images, which become ``holdout_x``.

    They leave the training set and the classifier set (when that is the training set; a set
    capped at ``--max_cls`` is a copy drawn before, which may contain some: a warning says so).
    """
    kept, out = hold_out(len(data.train_x), count, seed)
    if not len(out):
        return data
    same = data.cls_x is data.train_x or len(data.cls_x) == len(data.train_x)
    if not same:
        logger.warning(
            "Classifier set capped at --max_cls: it may contain some of the %d held-out "
            "images of the synthetic check.",
            len(out),
        )
    sizes = data.train_sizes
    train_x = data.train_x[kept]
    logger.info(
        "Synthetic-anomaly validation: %d of %d normal training images held out.",
        len(out),
        len(data.train_x),
    )
    return dataclasses.replace(
        data,
        train_x=train_x,
        cls_x=train_x if same else data.cls_x,
        train_sizes=None if sizes is None else sizes[kept],
        holdout_x=data.train_x[out],
        holdout_sizes=None if sizes is None else sizes[out],
    )


def _region(rng, h: int, w: int) -> tuple[int, int, int, int]:
    """(y, x, rh, rw): a rectangle inside the h x w content."""
    side = min(h, w)
    rh = max(2, round(rng.uniform(*_SIDE) * side))
    rw = max(2, round(rng.uniform(*_SIDE) * side * np.exp(rng.uniform(-0.5, 0.5))))
    rh, rw = min(rh, h - 1), min(rw, w - 1)
    return int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1)), rh, rw


def _corrupt(rng, img: np.ndarray, size, other: np.ndarray, other_size, kind: str):
    """(corrupted float image, [H, W] bool mask) for one kind."""
    h, w = (int(v) for v in size)
    out = img.copy()
    mask = np.zeros(img.shape[:2], bool)
    y, x, rh, rw = _region(rng, h, w)
    if kind == "paste":
        oh, ow = (int(v) for v in other_size)
        rh, rw = min(rh, oh), min(rw, ow)
        sy, sx = int(rng.integers(0, oh - rh + 1)), int(rng.integers(0, ow - rw + 1))
        out[y : y + rh, x : x + rw] = other[sy : sy + rh, sx : sx + rw]
        mask[y : y + rh, x : x + rw] = True
    elif kind == "scar":
        length, width = max(rh, rw) * 1.5, max(1.5, min(rh, rw) / 4)
        theta = rng.uniform(0, np.pi)
        cy, cx = y + rh / 2, x + rw / 2
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
        along = (yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        across = (yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta)
        mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        mask[h:, :] = False
        mask[:, w:] = False
        shift = (int(rng.integers(-h // 4, h // 4 + 1)), int(rng.integers(-w // 4, w // 4 + 1)))
        source = np.roll(img, shift, axis=(0, 1))
        delta = 0.25 if rng.uniform() < 0.5 else -0.25
        out[mask] = np.clip(source[mask] + delta, 0.0, 1.0)
    elif kind == "noise":
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        mask = ((yy - y - rh / 2) / (rh / 2)) ** 2 + ((xx - x - rw / 2) / (rw / 2)) ** 2 <= 1.0
        noise = rng.normal(0.0, 0.15, size=img.shape)
        out[mask] = np.clip(img[mask] + noise[mask], 0.0, 1.0)
    elif kind in ("stain", "hole"):
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        d2 = ((yy - y - rh / 2) / (rh / 2)) ** 2 + ((xx - x - rw / 2) / (rw / 2)) ** 2
        mask = d2 <= 1.0
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        if kind == "stain":
            weight = np.clip(1.5 * (1.0 - d2), 0.0, 1.0)[..., None]
            shift = sign * rng.uniform(0.15, 0.3) + rng.uniform(-0.1, 0.1, size=img.shape[-1])
            out = np.clip(img + weight * shift, 0.0, 1.0)
        else:
            fill = rng.uniform(0.8, 0.95) if sign > 0 else rng.uniform(0.02, 0.15)
            out[mask] = fill
    elif kind == "blur":
        blurred = ndimage.gaussian_filter(img, sigma=(3.0, 3.0, 0.0), mode="reflect")
        mask[y : y + rh, x : x + rw] = True
        out[mask] = blurred[mask]
    else:
        raise ValueError(f"unknown synthetic anomaly kind '{kind}'; valid: {', '.join(KINDS)}")
    return out, mask


def synthesize(
    images: np.ndarray, sizes: np.ndarray | None, seed: int, kinds: tuple[str, ...] = KINDS
) -> SyntheticSet:
    """The held-out normals plus one corrupted copy of each per kind.

    Args:
      images: [n, H, W, C] uint8 held-out normal images (n >= 2: ``paste`` takes a region of
        the next image).
      sizes: [n, 2] content sizes, or None when the images fill the canvas.
      seed: the run's seed (the corruptions are a deterministic function of it).
      kinds: which corruptions.

    Returns:
      A ``SyntheticSet`` of n · (1 + len(kinds)) images.
    """
    n = len(images)
    if sizes is None:
        sizes = np.tile(np.asarray(images.shape[1:3], np.int64), (n, 1))
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM_SYNTH])
    floats = images.astype(np.float32) / 255.0
    xs, ss, ys, ks, ms = [images], [sizes], [np.zeros(n, np.int64)], ["normal"] * n, []
    ms.append(np.zeros(images.shape[:3], np.uint8))
    for kind in kinds:
        for i in range(n):
            j = (i + 1) % n
            out, mask = _corrupt(rng, floats[i], sizes[i], floats[j], sizes[j], kind)
            xs.append(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)[None])
            ms.append(mask.astype(np.uint8)[None])
            ss.append(sizes[i : i + 1])
            ys.append(np.ones(1, np.int64))
            ks.append(kind)
    return SyntheticSet(
        x=np.concatenate(xs),
        sizes=np.concatenate(ss).astype(np.int64),
        y=np.concatenate(ys),
        kind=np.array(ks),
        masks=np.concatenate(ms),
    )
