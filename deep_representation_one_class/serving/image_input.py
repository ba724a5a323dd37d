"""Image input of the detector: file expansion, decoding and fitting images to a run's input.

Files are taken from a file, a folder (recursive), a glob or a list of those; only regular files
(or symlinks to them) are opened, so a named pipe among the images cannot block scoring, and
with ``skip_corrupt`` unusable files are left out and reported instead of failing the batch.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import ImageOps

from deep_representation_one_class.datasets import images as images_lib
from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.datasets.folder import scan_images
from deep_representation_one_class.errors import UserError

# Reference behaviour: the Fashion-MNIST loader zero-pads the native 28x28 images by 2 px to
# 32x32 instead of resizing them; images of exactly the native size get the same padding here,
# so that a raw Fashion-MNIST PNG is scored as the run saw its training data.
_NATIVE_PADDING: dict[str, tuple[int, int, int]] = {"fmnistood": (28, 28, 2)}

PathSource = str | os.PathLike | Sequence[str | os.PathLike]


class DetectorError(UserError, ValueError):
    """A run folder, image source or request cannot be used; the message says what to do."""


# ----------------------------------------------------------------------------- image input
def _expand_source(source: PathSource) -> list[tuple[str, str | None]]:
    """(path, None) for each image file of a file, a folder (recursive), a glob pattern or a
    list of those, in order; (path, why) for image-named entries that are not regular files
    (named pipes, dangling symlinks, symlink loops), which are never opened."""
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    else:
        items = list(source)
    found: list[tuple[str, str | None]] = []

    def add(path: str) -> None:
        try:
            images_lib.check_regular_file(path)
        except DataError as e:
            found.append((path, str(e)))
        else:
            found.append((path, None))

    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            good, bad = scan_images(Path(text))
            reasons = dict(bad)
            for p in sorted([*good, *reasons], key=lambda p: p.relative_to(text).as_posix()):
                found.append((str(p), reasons.get(p)))
        elif os.path.lexists(text):
            add(text)
        elif glob.has_magic(text):
            for p in sorted(glob.glob(text, recursive=True)):
                if p.lower().endswith(images_lib.IMAGE_EXTENSIONS) and not os.path.isdir(p):
                    add(p)
        else:
            raise DetectorError(f"no such image file or folder: {text}")
    if not found:
        raise DetectorError(
            f"no image files ({', '.join(images_lib.IMAGE_EXTENSIONS)}) found in "
            f"{', '.join(os.fspath(i) for i in items)}"
        )
    return found


def load_images(
    source: PathSource,
    input_shape: Sequence[int] | None = None,
    *,
    transform: Callable[[Any], Any] | None = None,
    skip_corrupt: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decodes image files (PNG/JPEG/BMP in any mode: grayscale, RGBA, palette, 16-bit).

    Args:
      source: a file, a folder (searched recursively, sorted), a glob pattern (``**`` allowed)
        or a list of those.
      input_shape: (H, W, C), C in {1, 3}: every image is converted to C channels (alpha is
        dropped) and resized bilinearly to H x W. None keeps the native size, which must then be
        the same for every file (channels: 1 if all are grayscale, else 3).
      transform: optional PIL-image step applied after decoding (e.g. a padding).
      skip_corrupt: leave out files that cannot be used (undecodable, above the pixel cap,
        not regular files) instead of failing on the first one.
      skipped: if given, receives ``(path, reason)`` for every file left out.

    Returns:
      ``(images, paths)``: ``[N, H, W, C]`` uint8 and the N source paths in that order.

    Raises:
      DetectorError: nothing found (or nothing usable), or mismatched native sizes.
      DataError: an unusable file (unless ``skip_corrupt``).
    """
    entries = _expand_source(source)

    def decode(entry: tuple[str, str | None]):
        path, why = entry
        try:
            if why is not None:
                raise DataError(why)
            if transform is None and input_shape is not None:
                return images_lib.decode_image(path, input_shape)
            img = images_lib.open_image(path)
            if transform is not None:
                img = transform(img)
            if input_shape is not None:
                return images_lib.pil_to_array(img, input_shape)
            arr = np.asarray(img, dtype=np.uint8)
            return arr[..., None] if arr.ndim == 2 else arr
        except DataError as e:
            if not skip_corrupt:
                raise
            return e

    results = images_lib.map_threaded(decode, entries)
    arrays, paths = [], []
    for (path, _), result in zip(entries, results):
        if isinstance(result, DataError):
            if skipped is not None:
                skipped.append((path, str(result)))
        else:
            arrays.append(result)
            paths.append(path)
    if not arrays:
        raise DetectorError(
            f"none of the {len(entries)} image file(s) could be decoded, e.g. "
            f"{next(str(r) for r in results if isinstance(r, DataError))}"
        )
    if input_shape is None:
        sizes = {a.shape[:2] for a in arrays}
        if len(sizes) > 1:
            raise DetectorError(
                f"images have different sizes {sorted(sizes)[:4]}; pass input_shape to resize them"
            )
        if any(a.shape[-1] == 3 for a in arrays):
            arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    return np.stack(arrays), paths


def pad_transform(dataset: str) -> Callable[[Any], Any] | None:
    """The PIL version of ``_NATIVE_PADDING`` for ``dataset`` (None when it has none)."""
    if dataset not in _NATIVE_PADDING:
        return None
    h, w, pad = _NATIVE_PADDING[dataset]

    def pad_native(img):
        return ImageOps.expand(img, border=pad, fill=0) if img.size == (w, h) else img

    return pad_native


def fit_to_input(images: Any, input_shape: Sequence[int], dataset: str = "") -> np.ndarray:
    """Brings an image batch to the run's input shape and channels.

    Args:
      images: ``[N, H, W, C]`` or ``[N, H, W]``: uint8 in [0, 255] or float in [0, 1];
        C in {1, 3, 4} (alpha is dropped).
      input_shape: the run's (H, W, C).
      dataset: the run's dataset key (applies its native-size padding, e.g. Fashion-MNIST).

    Returns:
      ``[N, H, W, C]`` uint8 (uint8 input) or float32 in [0, 1] (float input). uint8 input is
      resized with Pillow like the dataset loaders; float input with ``tf.image.resize``
      (bilinear, antialiased).
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or 0 in x.shape[:3] or x.shape[-1] not in (1, 3, 4):
        raise DetectorError(
            f"images must be a non-empty [N, H, W, C] (C = 1, 3 or 4, H and W at least 1) or "
            f"[N, H, W] array, got shape {x.shape}"
        )
    h, w, c = (int(v) for v in input_shape)
    if dataset in _NATIVE_PADDING:
        nh, nw, pad = _NATIVE_PADDING[dataset]
        if x.shape[1:3] == (nh, nw):
            x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    if x.dtype == np.uint8:
        return images_lib.resize_images(x, (h, w, c))
    if not np.issubdtype(x.dtype, np.floating):
        raise DetectorError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)) or x.min() < -1e-6 or x.max() > 1.0 + 1e-6:
        raise DetectorError(
            "float images must be finite and in [0, 1] (divide 0..255 data by 255 or pass uint8)"
        )
    x = x[..., :3]
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and c == 1:
        # ITU-R 601-2 luma, the weights Pillow's 'L' conversion uses for uint8 images.
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if x.shape[1:3] != (h, w):
        x = tf.image.resize(x, (h, w), method="bilinear", antialias=True).numpy()
    return np.clip(x, 0.0, 1.0)


__all__ = [
    "DataError",
    "DetectorError",
    "PathSource",
    "fit_to_input",
    "load_images",
    "pad_transform",
]
