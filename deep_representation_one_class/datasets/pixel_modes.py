"""How any Pillow image mode becomes 8-bit 'L' or 'RGB', upright: the one reading rule.

Every loader and ``serving`` decode through ``images._decode``, which applies these, so that
the same file gives the same array everywhere (docs/failure_and_resume.md):

* EXIF orientation (``ORIENTATION``, ``orientation``): the image as every viewer shows it;
* 16-bit by bit depth (``value >> 8``), float as intensities in [0, 1] (``to_gray8``), never
  by the image's own maximum;
* masks: every non-zero pixel is defect (``nonzero_mask``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["ORIENTATION", "nonzero_mask", "normalise_mode", "orientation", "to_gray8"]

# Row strips of 16-bit/float images are converted 256 K pixels (2 MB as float64) at a time.
_STRIP_PIXELS = 1 << 18
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# EXIF orientation (tag 0x0112) -> the transpose that shows the image upright, the mapping of
# Pillow's ImageOps.exif_transpose (applied here after any reduction, without a copy of the
# full-size image when there is nothing to turn).
ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return 1  # an unreadable EXIF block: the pixels are still the image
    return value if isinstance(value, int) else 1


def nonzero_mask(img: Image.Image) -> Image.Image:
    """Any mode -> 'L' 0/255 with 255 wherever a colour channel is non-zero (alpha ignored)."""
    if img.mode == "P":
        img = img.convert("RGBA")  # palette index 0 need not be black
    arr = np.asarray(img)
    if arr.ndim == 3:
        if img.mode.endswith(("A", "a")):
            arr = arr[..., :-1]
        arr = arr.any(axis=-1)
    return Image.fromarray(np.where(arr != 0, 255, 0).astype(np.uint8))


def to_gray8(img: Image.Image) -> Image.Image:
    """16-bit/32-bit/float image -> 'L' by its bit depth, in row strips (never a whole float64
    copy).

    The rule is the same for every image, whatever its content: 16-bit values (I;16 modes, and
    the 32-bit integer mode 'I' that some readers use for 16-bit files, clipped to 0..65535)
    keep their high byte (``value >> 8``, so 0..255 -> 0, 65535 -> 255); float images ('F')
    are intensities in [0, 1] (clipped, times 255, rounded). Pillow's own I;16 -> L conversion
    clips at 255, which turns a 16-bit scan white; rescaling by the image's own maximum would
    make a dark image bright and a value of 256 black.
    """
    w, h = img.size
    out = np.empty((h, w), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        strip = np.asarray(img.crop((0, top, w, bottom)))
        if img.mode == "F":
            out[top:bottom] = np.rint(np.clip(np.nan_to_num(strip), 0.0, 1.0) * 255.0)
        else:
            out[top:bottom] = np.clip(strip.astype(np.int64), 0, 65535) >> 8
    return Image.fromarray(out)


def normalise_mode(img: Image.Image) -> Image.Image:
    """Maps any Pillow mode onto 'L' or 'RGB' (alpha is dropped, not composited); an 'L' or
    'RGB' image is returned as it is."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode in _HIGH_DEPTH:
        return to_gray8(img)
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode == "P":
        # Palette images may carry transparency; go through RGBA so that Pillow applies it,
        # then drop alpha like any RGBA image.
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")
