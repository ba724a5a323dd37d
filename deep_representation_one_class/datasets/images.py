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
    "RESIZE_POLICIES",
    "common_scale",
    "decode_image",
    "decode_placed",
    "image_size",
    "map_threaded",
    "open_image",
    "pil_to_array",
    "place_image",
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


# How an image of any size and aspect becomes an H x W canvas (``--resize_policy``):
#   squash      resize to H x W (aspect not kept; the historical behaviour);
#   fit         per image, the largest aspect-preserving resize that fits in H x W;
#   same_scale  one factor for the whole dataset (the largest image side -> the canvas side),
#               so that a pixel covers the same physical size in every image (crops of one
#               camera keep their relative scale: a 110 px crop is not blown up 5x next to a
#               620 px one).
# With fit and same_scale the content sits at the top-left corner and the rest of the canvas is
# mirrored content (``np.pad(mode="symmetric")``, so training windows there still look like the
# surface); the content size travels with the arrays and the evaluation ignores the padding.
RESIZE_POLICIES = ("squash", "fit", "same_scale")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file from its header (nothing decoded); DataError if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot decode image {path}: {e}; fix or delete the file, or pass skip_corrupt=True"
        ) from None
    return int(h), int(w)


def common_scale(sizes: Iterable[tuple[int, int]], canvas: Sequence[int]) -> float:
    """The ``same_scale`` factor: the canvas side over the largest side of any image."""
    largest = max((max(h, w) for h, w in sizes), default=0)
    return min(int(canvas[0]), int(canvas[1])) / largest if largest else 1.0


def place_image(
    img: Image.Image,
    input_shape: Sequence[int],
    policy: str = "squash",
    scale: float | None = None,
    resample: str = "bilinear",
    pad: str = "symmetric",
) -> tuple[np.ndarray, tuple[int, int]]:
    """An 'L'/'RGB' image on an H x W canvas under a resize policy (``RESIZE_POLICIES``).

    Args:
      img: the decoded image.
      input_shape: (H, W, C) of the canvas.
      policy: squash, fit or same_scale.
      scale: the factor of ``same_scale`` (``common_scale``); ignored otherwise.
      resample: the Pillow filter ('nearest' for masks).
      pad: ``np.pad`` mode of the padding ('symmetric' for images, 'constant' = 0 for masks).

    Returns:
      ([H, W, C] uint8 canvas, (h, w) size of the content at its top-left corner).
    """
    h_out, w_out, c = (int(v) for v in input_shape)
    if policy == "squash":
        return pil_to_array(img, input_shape, resample), (h_out, w_out)
    if policy not in RESIZE_POLICIES:
        raise DataError(f"unknown resize policy '{policy}'; valid: {', '.join(RESIZE_POLICIES)}")
    w_in, h_in = img.size
    factor = min(h_out / h_in, w_out / w_in) if policy == "fit" or scale is None else scale
    h = int(min(h_out, max(1, round(h_in * factor))))
    w = int(min(w_out, max(1, round(w_in * factor))))
    arr = pil_to_array(img, (h, w, c), resample)
    if (h, w) != (h_out, w_out):
        arr = np.pad(arr, ((0, h_out - h), (0, w_out - w), (0, 0)), mode=pad)
    return np.ascontiguousarray(arr), (h, w)


def decode_placed(
    source: str | os.PathLike,
    input_shape: Sequence[int],
    policy: str = "squash",
    scale: float | None = None,
    *,
    name: str | None = None,
    mask: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """``decode_image`` under a resize policy; masks use nearest resampling and zero padding."""
    img = open_image(source, name)
    return place_image(
        img,
        input_shape,
        policy,
        scale,
        resample="nearest" if mask else "bilinear",
        pad="constant" if mask else "symmetric",
    )


def map_threaded(fn: Callable[[Any], Any], items: Iterable[Any], workers: int | None = None):
    """``map(fn, items)`` over a thread pool, in order; the first exception propagates."""
    items = list(items)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(items) < 64:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
