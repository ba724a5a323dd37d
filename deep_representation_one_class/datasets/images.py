"""Pillow image decoding and resizing shared by the dataset loaders and the detector.

Everything returns uint8 arrays at a requested (H, W, C) with C in {1, 3}: palette, RGBA,
16-bit and other modes are normalised first, so that the loaders never see odd channel
layouts. Decoding errors become a :class:`DataError` naming the file. Decoding runs in a thread
pool because Pillow releases the GIL inside its codecs.

The one reading rule (docs/failure_and_resume.md): every loader and ``serving`` decode through
``_decode``, so that the same file gives the same array everywhere: the EXIF orientation is
applied (the image as every viewer shows it); 16-bit images are converted by their bit depth
(``value >> 8``, the same for every image, never by the image's own maximum); 32-bit float
images are read as intensities in [0, 1]; masks (``open_mask``) mark every non-zero pixel as
defect.

Memory bounds (docs/failure_and_resume.md): only regular files are opened (a named pipe
would block forever); an image whose decoded size exceeds the pixel cap (default 100
megapixels, ``$DROC_MAX_IMAGE_PIXELS``) is refused from its header, before any pixel is
decoded. Images above ``REDUCE_ABOVE`` pixels without a dataset-specific transform are decoded
at a reduced scale (JPEG ``draft``) or reduced by an integer factor right after decoding, so the
mode conversion runs near the target size; 16-bit and float images are converted in row
strips, never as a whole float64 copy.
"""

from __future__ import annotations

import concurrent.futures
import errno
import io
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

# The policy names are part of the settings schema (the --resize_policy flag's choices).
from deep_representation_one_class.config import RESIZE_POLICIES
from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.datasets.pixel_modes import (
    ORIENTATION,
    nonzero_mask,
    normalise_mode,
    orientation,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "RESIZE_POLICIES",
    "check_regular_file",
    "common_scale",
    "decode_image",
    "decode_placed",
    "image_size",
    "map_threaded",
    "max_pixels",
    "open_image",
    "open_mask",
    "pil_to_array",
    "place_image",
    "resize_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS_ENV = "DROC_MAX_IMAGE_PIXELS"
# 100 megapixels: a 10000x10000 photo still decodes (300 MB as RGB), a crafted 280 KB PNG that
# claims 12000x12000 16-bit pixels (3.7 GB as float64 before) is refused from its header.
DEFAULT_MAX_PIXELS = 100_000_000
# Above this many pixels (16 MP) an image is decoded or reduced close to the target size; the
# benchmark datasets (MVTec AD at 1024x1024 and smaller) never reach it, so their pixels are
# decoded exactly as before.
REDUCE_ABOVE = 16_000_000
# Modes Image.reduce accepts.
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F")
_SKIP_HINT = "fix or delete the file, or pass --skip_corrupt to skip such files"

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


def max_pixels() -> int:
    """The decoded-pixel cap: ``$DROC_MAX_IMAGE_PIXELS`` (e.g. ``2e8``) or 100 megapixels.

    Raises:
      DataError: the variable is set but not a positive number.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise DataError(f"${MAX_PIXELS_ENV} must be a positive number of pixels, got {raw!r}")
    return value


def check_regular_file(path: str | os.PathLike, label: str | None = None) -> None:
    """Raises DataError unless ``path`` is (a symlink to) a regular file.

    Named pipes and devices would block or stream forever when opened; dangling symlinks and
    symlink loops raise OSError from ``stat``. The message names the file and what it is.
    """
    label = label if label is not None else os.fsdecode(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        what = "a dangling symbolic link" if os.path.islink(path) else "missing"
        raise DataError(f"image {label} is {what}; {_SKIP_HINT}") from None
    except OSError as e:
        what = "a symbolic link loop" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
        raise DataError(f"image {label} is {what}; {_SKIP_HINT}") from None
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "not a regular file"
        if stat.S_ISDIR(mode):
            kind = "a folder"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "a device"
        elif stat.S_ISSOCK(mode):
            kind = "a socket"
        raise DataError(f"image {label} is {kind}, not a regular file; {_SKIP_HINT}")


# Pillow warns above Image.MAX_IMAGE_PIXELS (89 MP) and refuses above twice that. The cap below
# replaces its warning (every image above the cap is refused from its header), so the warning
# would only repeat the refusal as noise on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _pillow_limit(cap: int) -> None:
    # Lift Pillow's own limit to the cap, so that a cap raised by the user is honoured.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and limit < cap:
        Image.MAX_IMAGE_PIXELS = cap


def _above_cap(label: str, cap: int, size: str) -> DataError:
    return DataError(
        f"image {label} is {size}, above the decoding cap of {cap / 1e6:g} megapixels; shrink "
        f"it, raise ${MAX_PIXELS_ENV}, or pass --skip_corrupt to skip it"
    )


def _decode(
    source: str | os.PathLike | bytes,
    label: str,
    finish: Callable[[Image.Image], Any],
    target_hw: tuple[int, int] | None = None,
    mask: bool = False,
) -> Any:
    """Opens, checks and decodes one image; returns ``finish(<'L'/'RGB' image>)``, upright
    (EXIF orientation applied).

    ``target_hw`` allows a reduced decode of images above ``REDUCE_ABOVE`` pixels (to no less
    than twice the target size, the final resize does the rest). ``mask``: ``finish`` gets an
    'L' image of 0 (background) and 255 (any non-zero pixel of the file, in any channel).
    """
    if not isinstance(source, bytes):
        check_regular_file(source, label)
    cap = max_pixels()
    _pillow_limit(cap)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(fp) as img:
            large = target_hw is not None and img.width * img.height > REDUCE_ABOVE
            if large and img.format == "JPEG":
                # The JPEG decoder scales by 1/2, 1/4 or 1/8 while decoding (DCT scaling).
                img.draft(None, (2 * target_hw[1], 2 * target_hw[0]))
            w, h = img.size
            if w * h > cap:
                raise _above_cap(label, cap, f"{w}x{h} = {w * h / 1e6:.1f} megapixels")
            img.load()  # Image.open is lazy; load() is where truncated data fails.
            turn = ORIENTATION.get(orientation(img))
            out = img
            if large:
                factor = min(w // (2 * target_hw[1]), h // (2 * target_hw[0]))
                if factor >= 2:
                    if out.mode not in _REDUCIBLE:
                        out = normalise_mode(out)
                    out = out.reduce(factor)
            out = nonzero_mask(out) if mask else normalise_mode(out)
            if turn is not None:
                out = out.transpose(turn)
            return finish(out)
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # refused by Pillow while reading the header
        raise _above_cap(label, cap, str(e).split("(", 1)[-1].split(")")[0]) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot decode image {label}: {why}; {_SKIP_HINT}") from None


def open_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Fully decodes an image file into an 'L' or 'RGB' PIL image at its own size.

    Args:
      source: a path (a regular file, or a symlink to one) or the encoded bytes.
      name: how to name the file in error messages (defaults to the path).

    Raises:
      DataError: not a regular file, above the pixel cap, or undecodable (truncated, not an
        image).
    """
    label = name if name is not None else _label(source)
    return _decode(source, label, lambda img: img.copy())


def open_mask(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """A defect mask as an 'L' image of 0 and 255: every pixel that is non-zero in any colour
    channel of the file is defect (masks drawn as 0/1, 0/255, 16-bit or in colour all work).

    Raises:
      DataError: as ``open_image``.
    """
    label = name if name is not None else _label(source)
    return _decode(source, label, lambda img: img, mask=True)


def _label(source: str | os.PathLike | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else os.fsdecode(source)


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
      source: a path (a regular file, or a symlink to one) or the encoded bytes.
      input_shape: (H, W, C), C in {1, 3}.
      name: the file name used in error messages.
      resample: the Pillow filter used when the size differs ('bilinear', 'bicubic', 'box',
        'nearest').
      transform: optional dataset-specific step (e.g. a crop in pixels) applied before the
        final resize; with one, images are always decoded at full size.

    Raises:
      DataError: not a regular file, above the pixel cap, or undecodable.
    """
    label = name if name is not None else _label(source)
    shape = tuple(int(v) for v in input_shape)

    def finish(img: Image.Image) -> np.ndarray:
        if transform is not None:
            img = transform(img)
        return pil_to_array(img, shape, resample)

    # Masks (nearest) keep their exact values, and pixel crops need the full image.
    reducible = transform is None and resample != "nearest"
    return _decode(source, label, finish, shape[:2] if reducible else None)


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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file, upright (EXIF orientation applied), from its header (nothing
    decoded); DataError if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if orientation(img) in (5, 6, 7, 8):  # turned by 90 degrees
                w, h = h, w
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
    """``decode_image`` under a resize policy; masks (``open_mask``: 0/255) use nearest
    resampling and zero padding."""
    img = open_mask(source, name) if mask else open_image(source, name)
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
