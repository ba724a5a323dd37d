"""Image input of the detector: file expansion, decoding and fitting images to a run's input.

Images are prepared by the run's preprocessing spec (``datasets.preprocessing``): the dataset's
own steps, then the run's resize policy onto its canvas, exactly as its loaders did.

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
from PIL import Image

from deep_representation_one_class.datasets import images as images_lib
from deep_representation_one_class.datasets import preprocessing as prep_lib
from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.datasets.folder import scan_images
from deep_representation_one_class.errors import UserError

PathSource = str | os.PathLike | Sequence[str | os.PathLike]


class DetectorError(UserError, ValueError):
    """A run folder, image source or request cannot be used; the message says what to do."""


# ----------------------------------------------------------------------------- image input
def expand_source(source: PathSource) -> list[tuple[str, str | None]]:
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


Prep = prep_lib.PreprocessingSpec


def load_images(
    source: PathSource,
    input_shape: Prep | Sequence[int] | None = None,
    *,
    transform: Callable[[Any], Any] | None = None,
    skip_corrupt: bool = False,
    skipped: list[tuple[str, str]] | None = None,
    geometry: list[tuple[tuple[int, int], tuple[int, int]]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decodes image files (PNG/JPEG/BMP in any mode: grayscale, RGBA, palette, 16-bit).

    Args:
      source: a file, a folder (searched recursively, sorted), a glob pattern (``**`` allowed)
        or a list of those.
      input_shape: a run's ``PreprocessingSpec`` (every image is prepared as the run prepared
        its images: the dataset's own steps, then its resize policy onto its canvas); or
        (H, W, C), C in {1, 3}: converted to C channels (alpha dropped) and resized bilinearly
        to H x W; or None: the native size, which must then be the same for every file
        (channels: 1 if all are grayscale, else 3).
      transform: optional PIL-image step applied after decoding (with an (H, W, C) shape).
      skip_corrupt: leave out files that cannot be used (undecodable, above the pixel cap,
        not regular files) instead of failing on the first one.
      skipped: if given, receives ``(path, reason)`` for every file left out.
      geometry: if given (with a spec), receives ``((H, W) of the file, (h, w) of its content
        on the canvas)`` per returned image.

    Returns:
      ``(images, paths)``: ``[N, H, W, C]`` uint8 and the N source paths in that order.

    Raises:
      DetectorError: nothing found (or nothing usable), or mismatched native sizes.
      DataError: an unusable file (unless ``skip_corrupt``).
    """
    entries = expand_source(source)
    spec = input_shape if isinstance(input_shape, Prep) else None

    def decode(entry: tuple[str, str | None]):
        path, why = entry
        try:
            if why is not None:
                raise DataError(why)
            if spec is not None:
                img = images_lib.open_image(path)
                canvas, content = prep_lib.prepare_image(img, spec)
                return canvas, ((img.height, img.width), content)
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
            continue
        if spec is not None:
            result, geo = result
            if geometry is not None:
                geometry.append(geo)
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


def _as_images(images: Any) -> list[np.ndarray]:
    """A batch array or a list of single images -> list of [H, W, C] arrays (C in 1, 3, 4)."""
    if isinstance(images, (list, tuple)):
        items = [np.asarray(a) for a in images]
        items = [a[..., None] if a.ndim == 2 else a for a in items]
        bad = [a.shape for a in items if a.ndim != 3 or a.shape[-1] not in (1, 3, 4)]
        if not items or bad:
            raise DetectorError(
                f"a list of images must hold [H, W, C] (C = 1, 3 or 4) or [H, W] arrays, got "
                f"{bad[:3] or 'none'}"
            )
        return items
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or 0 in x.shape[:3] or x.shape[-1] not in (1, 3, 4):
        raise DetectorError(
            f"images must be a non-empty [N, H, W, C] (C = 1, 3 or 4, H and W at least 1) or "
            f"[N, H, W] array, got shape {x.shape}"
        )
    return list(x)


def _check_float(x: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise DetectorError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)) or x.min() < -1e-6 or x.max() > 1.0 + 1e-6:
        raise DetectorError(
            "float images must be finite and in [0, 1] (divide 0..255 data by 255 or pass uint8)"
        )
    return x


def _float_image(x: np.ndarray, spec: Prep) -> tuple[np.ndarray, tuple[int, int]]:
    """One float [H, W, C] image in [0, 1] -> (canvas, content) by the spec, in float.

    The geometry is the uint8 path's; the resize is ``tf.image.resize`` (bilinear,
    antialiased), so float input matches uint8 input to about one grey level. The dataset's
    cover-and-crop step goes through uint8.
    """
    h, w, c = (int(v) for v in spec.input_shape)
    x = x[..., :3]
    if spec.cover_crop is not None:
        img = (
            Image.fromarray(np.rint(x[..., 0] * 255).astype(np.uint8))
            if x.shape[-1] == 1
            else (Image.fromarray(np.rint(x * 255).astype(np.uint8)))
        )
        canvas, content = prep_lib.prepare_image(img, spec)
        return canvas.astype(np.float32) / 255.0, content
    if spec.native_pad is not None and x.shape[:2] == tuple(spec.native_pad[:2]):
        b = spec.native_pad[2]
        x = np.pad(x, ((b, b), (b, b), (0, 0)))
    if spec.crop is not None:
        left, top, right, bottom = spec.crop
        if x.shape[1] > left + right and x.shape[0] > top + bottom:
            x = x[top : x.shape[0] - bottom, left : x.shape[1] - right]
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and c == 1:
        # ITU-R 601-2 luma, the weights Pillow's 'L' conversion uses for uint8 images.
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    ch, cw = prep_lib.content_size(spec, x.shape[:2])
    if x.shape[:2] != (ch, cw):
        x = tf.image.resize(x, (ch, cw), method="bilinear", antialias=True).numpy()
    if (ch, cw) != (h, w):
        x = np.pad(x, ((0, h - ch), (0, w - cw), (0, 0)), mode=spec.padding)
    return np.clip(x, 0.0, 1.0), (ch, cw)


def prepare_batch(images: Any, spec: Prep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brings images to the run's canvas as its loaders did.

    Args:
      images: ``[N, H, W, C]``/``[N, H, W]`` or a list of ``[H, W, C]``/``[H, W]`` images
        (sizes may differ): uint8 in [0, 255] or float in [0, 1]; C in {1, 3, 4} (alpha is
        dropped).
      spec: the run's ``PreprocessingSpec``.

    Returns:
      (canvases ``[N, H, W, C]`` uint8 for uint8 input, float32 in [0, 1] for float input;
      content sizes ``[N, 2]`` int64; the images' own sizes ``[N, 2]`` int64).
    """
    items = _as_images(images)
    floating = items[0].dtype != np.uint8
    if any((a.dtype != np.uint8) != floating for a in items):
        raise DetectorError("images must all be uint8 or all be float in [0, 1], not a mix")
    own = np.array([a.shape[:2] for a in items], np.int64)
    out, sizes = [], []
    for a in items:
        if floating:
            canvas, content = _float_image(_check_float(a), spec)
        else:
            a = a[..., :3]
            img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
            canvas, content = prep_lib.prepare_image(img, spec)
        out.append(canvas)
        sizes.append(content)
    return np.stack(out), np.array(sizes, np.int64), own


def fit_to_input(images: Any, spec: Prep | Sequence[int]) -> np.ndarray:
    """Brings an image batch to the run's canvas (see ``prepare_batch``).

    Args:
      images: see ``prepare_batch``.
      spec: the run's ``PreprocessingSpec``, or an (H, W, C) input shape (a plain squash).

    Returns:
      ``[N, H, W, C]`` uint8 (uint8 input) or float32 in [0, 1] (float input).
    """
    if not isinstance(spec, Prep):
        spec = Prep(tuple(int(v) for v in spec))
    return prepare_batch(images, spec)[0]


__all__ = [
    "DataError",
    "DetectorError",
    "PathSource",
    "expand_source",
    "fit_to_input",
    "load_images",
    "prepare_batch",
]
