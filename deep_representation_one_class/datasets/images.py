"""Pillow image decoding and resizing shared by the dataset loaders.

Everything returns uint8 arrays at a requested (H, W, C) with C in {1, 3}: palette, RGBA,
16-bit and other modes are normalised first, so that the loaders never see odd channel
layouts. Decoding errors become a :class:`DataError` naming the file. Decoding runs in a thread
pool because Pillow releases the GIL inside its codecs.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from deep_representation_one_class.datasets.base import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "decode_image",
    "map_threaded",
    "open_image",
    "pil_to_array",
    "resize_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


def open_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Fully decodes an image file into an 'L' or 'RGB' PIL image.

    Args:
      source: a path or the encoded bytes.
      name: how to name the file in error messages (defaults to the path).

    Raises:
      DataError: the file cannot be opened or decoded (truncated, not an image, too large).
    """
    label = name if name is not None else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(fp) as img:
            img.load()  # Image.open is lazy; load() is where truncated data fails.
            return _normalise_mode(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot decode image {label}: {e}; fix or delete the file, or pass skip_corrupt=True"
        ) from None


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Maps any Pillow mode onto 'L' or 'RGB' (alpha is dropped, not composited)."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own I;16 -> L conversion clips at 255 instead of rescaling, which turns a
        # 16-bit scan white; rescale the full 16-bit range instead.
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0.0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode == "P":
        # Palette images may carry transparency; go through RGBA so that Pillow applies it,
        # then drop alpha like any RGBA image.
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def pil_to_array(
    img: Image.Image, input_shape: Sequence[int], resample: str = "bilinear"
) -> np.ndarray:
    """Converts an 'L'/'RGB' PIL image to a [H, W, C] uint8 array at ``input_shape``.

    Grayscale is tiled to 3 channels when C = 3; RGB becomes luma (ITU-R 601-2) when C = 1.
    """
    h, w, c = (int(v) for v in input_shape)
    target_mode = "L" if c == 1 else "RGB"
    if img.mode != target_mode:
        img = img.convert(target_mode)
    if img.size != (w, h):
        img = img.resize((w, h), resample=RESAMPLE[resample])
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(h, w, c)


def decode_image(
    source: str | os.PathLike | bytes,
    input_shape: Sequence[int],
    *,
    name: str | None = None,
    resample: str = "bilinear",
    transform: Callable[[Image.Image], Image.Image] | None = None,
) -> np.ndarray:
    """Decodes one image file into a [H, W, C] uint8 array.

    Args:
      source: a path or the encoded bytes.
      input_shape: (H, W, C), C in {1, 3}.
      name: the file name used in error messages.
      resample: the Pillow filter used when the size differs ('bilinear', 'bicubic', 'box').
      transform: optional dataset-specific step (e.g. a crop) applied before the final resize.

    Raises:
      DataError: the file cannot be decoded.
    """
    img = open_image(source, name)
    if transform is not None:
        img = transform(img)
    return pil_to_array(img, input_shape, resample)


def resize_images(
    x: np.ndarray, input_shape: Sequence[int], resample: str = "bilinear"
) -> np.ndarray:
    """Brings a [N, h, w, c] uint8 batch to [N, H, W, C]; returns ``x`` itself if it already is.

    Channel changes: 1 -> 3 tiles the gray channel; 3 -> 1 uses Pillow's integer luma formula
    (L = (19595 R + 38470 G + 7471 B + 2^15) >> 16); 4 -> 3 drops alpha.
    """
    h, w, c = (int(v) for v in input_shape)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"expected [N, H, W, C] images, got shape {x.shape}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if x.shape[-1] == 3 and c == 1:
        r, g, b = (x[..., i].astype(np.uint32) for i in range(3))
        x = ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)[..., None]
    if x.shape[1:3] != (h, w):
        filt = RESAMPLE[resample]
        out = np.empty((x.shape[0], h, w, x.shape[-1]), np.uint8)
        for i, img in enumerate(x):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            out[i] = np.asarray(pil.resize((w, h), resample=filt)).reshape(h, w, -1)
        x = out
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[-1] != c:
        raise DataError(f"cannot convert {x.shape[-1]}-channel images to {c} channels")
    return np.ascontiguousarray(x, dtype=np.uint8)


def map_threaded(fn: Callable[[Any], Any], items: Iterable[Any], workers: int | None = None):
    """``map(fn, items)`` over a thread pool, in order; the first exception propagates."""
    items = list(items)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(items) < 64:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
