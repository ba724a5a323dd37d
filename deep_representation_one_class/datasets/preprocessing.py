"""The preprocessing spec of a run: how its images were prepared, recorded in the run folder.

A run writes ``<run>/preprocessing.json`` when it starts, next to ``config.json``: the canvas
(input shape and channels), the resize policy and, for ``same_scale``, the one factor the loader
chose for the run's data, the padding of the canvas, the resampling filter, the dataset's own
steps (Fashion-MNIST's zero border, CelebA's face crop, Dogs vs. Cats' cover-and-crop) and the
value range the network sees. Everything that serves a run (``Detector``, ``score``, ``export``,
``explain``) prepares new images with :func:`prepare_image` from this spec, the same steps the
dataset loaders applied, so a served score is the evaluated score.

A run folder written before the spec existed has none; :func:`for_run` derives it from
``config.json`` (exact for every policy but ``same_scale``, whose factor depended on the data),
and otherwise fails with one line naming the command that records it.

TensorFlow-free: Pillow and NumPy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import DATASETS
from deep_representation_one_class.datasets.dogvscat import cover_and_crop
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.utils import run_folder

__all__ = [
    "FILENAME",
    "PreprocessingError",
    "PreprocessingSpec",
    "for_run",
    "from_config",
    "prepare_image",
    "read",
    "write",
]

FILENAME = run_folder.PREPROCESSING
VERSION = 1
_PADDINGS = ("symmetric", "constant", "edge", "reflect")


class PreprocessingError(UserError, ValueError):
    """A preprocessing spec is missing, malformed or does not fit the run; says what to do."""


@dataclasses.dataclass(frozen=True)
class PreprocessingSpec:
    """How one image becomes the run's input canvas.

    Attributes:
      input_shape: (H, W, C) of the canvas; C (1 or 3) is the channel count images are
        converted to ('L' luma or 'RGB'; alpha dropped).
      resize_policy: ``squash`` (resize to H x W), ``fit`` (per-image aspect-preserving) or
        ``same_scale`` (one factor, ``scale``, for every image); see ``images.place_image``.
      scale: the ``same_scale`` factor (canvas side / largest image side of the run's data).
      resample: Pillow filter of the resize (``bilinear``, ``bicubic``, ``box``).
      padding: ``np.pad`` mode filling the canvas around the content (fit/same_scale); the
        content sits at the top-left corner.
      native_pad: (h, w, border): an image of exactly h x w first gets a zero border.
      crop: (left, top, right, bottom) pixels cut off every image before the resize.
      cover_crop: (h, w): the shorter side is resized (box filter) to cover h x w, then the
        centre h x w is cut out, before the resize to the canvas.
      value_range: the network sees float32 = uint8 / 255, i.e. values in this range.
      dataset, task: the run's dataset key and task (for messages and exports).
      source: ``run`` (written by the run) or ``config.json`` (derived for an older folder).
    """

    input_shape: tuple[int, int, int]
    resize_policy: str = "squash"
    scale: float | None = None
    resample: str = "bilinear"
    padding: str = "symmetric"
    native_pad: tuple[int, int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    cover_crop: tuple[int, int] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    dataset: str = ""
    task: str = "image"
    source: str = "run"

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise PreprocessingError(f"input_shape must be (H, W, 1 or 3), got {shape}")
        if self.resize_policy not in images.RESIZE_POLICIES:
            raise PreprocessingError(
                f"unknown resize_policy '{self.resize_policy}'; valid: "
                f"{', '.join(images.RESIZE_POLICIES)}"
            )
        if self.resize_policy == "same_scale" and not (
            self.scale is not None and math.isfinite(self.scale) and self.scale > 0
        ):
            raise PreprocessingError(
                f"resize_policy same_scale needs a positive scale, got {self.scale}"
            )
        if self.resample not in images.RESAMPLE:
            raise PreprocessingError(
                f"unknown resample '{self.resample}'; valid: {', '.join(images.RESAMPLE)}"
            )
        if self.padding not in _PADDINGS:
            raise PreprocessingError(f"unknown padding '{self.padding}'; valid: {_PADDINGS}")
        for name, n in (("native_pad", 3), ("crop", 4), ("cover_crop", 2)):
            value = getattr(self, name)
            if value is not None and (len(value) != n or min(value) < 0):
                raise PreprocessingError(f"{name} must be {n} non-negative integers, got {value}")

    @property
    def channels(self) -> int:
        return int(self.input_shape[2])

    @property
    def native_steps(self) -> bool:
        """Whether the dataset adds steps before the resize (pad, crop, cover-and-crop)."""
        return any(v is not None for v in (self.native_pad, self.crop, self.cover_crop))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["version"] = VERSION
        d["channels"] = self.channels
        d["content"] = "top_left"
        d["value_dtype"] = "float32"
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = FILENAME) -> PreprocessingSpec:
        """Rebuilds a spec from ``to_dict`` output, checking every field's type."""
        if not isinstance(d, Mapping):
            raise PreprocessingError(f"{where} must hold a JSON object")
        if d.get("version") != VERSION:
            raise PreprocessingError(
                f"{where} has version {d.get('version')!r}, this package reads {VERSION}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - fields - {"version", "channels", "content", "value_dtype"}
        if extra:
            raise PreprocessingError(f"{where} has unknown keys {sorted(extra)}")
        kw: dict[str, Any] = {}
        try:
            for name in fields & set(d):
                value = d[name]
                if name in ("input_shape", "native_pad", "crop", "cover_crop"):
                    value = None if value is None else tuple(_int(v) for v in value)
                elif name == "value_range":
                    value = tuple(float(v) for v in value)
                elif name == "scale":
                    value = None if value is None else float(value)
                elif not isinstance(value, str):
                    raise TypeError(f"{name} must be a string")
                kw[name] = value
            if "input_shape" not in kw:
                raise TypeError("input_shape is missing")
            spec = cls(**kw)
        except (TypeError, ValueError) as e:
            raise PreprocessingError(f"{where}: {str(e).splitlines()[0]}") from None
        if d.get("channels", spec.channels) != spec.channels:
            raise PreprocessingError(f"{where}: channels and input_shape disagree")
        return spec


def _int(v: Any) -> int:
    if isinstance(v, bool) or not float(v).is_integer():
        raise TypeError(f"expected an integer, got {v!r}")
    return int(v)


def from_config(cfg: Any, scale: float | None = None, source: str = "run") -> PreprocessingSpec:
    """The spec of a run from its config (and the ``same_scale`` factor of its data).

    Args:
      cfg: a ``Config`` (uses ``dataset``, ``input_shape``, ``resize_policy``).
      scale: ``OneClassData.scale``; required for ``same_scale`` on datasets that honour it.
      source: recorded as is (``run`` or ``config.json``).
    """
    dspec = DATASETS.get(cfg.dataset)
    prep = dict(dspec.preprocessing)
    policy = str(cfg.resize_policy) if prep.pop("resize_policy", False) else "squash"
    return PreprocessingSpec(
        input_shape=tuple(int(v) for v in cfg.input_shape),
        resize_policy=policy,
        scale=scale if policy == "same_scale" else None,
        dataset=dspec.name,
        task=dspec.task,
        source=source,
        **prep,
    )


def write(run_dir: str, spec: PreprocessingSpec) -> None:
    """Writes ``<run_dir>/preprocessing.json`` atomically."""
    run_folder.write_json(run_dir, FILENAME, spec.to_dict())


def read(run_dir: str) -> PreprocessingSpec | None:
    """The run's recorded spec, or None when the folder predates it."""
    raw = run_folder.read_json(run_dir, FILENAME)
    return (
        None
        if raw is None
        else PreprocessingSpec.from_dict(raw, run_folder.path(run_dir, FILENAME))
    )


def for_run(run_dir: str, cfg: Any, raw_config: Mapping[str, Any] | None = None):
    """The spec a run was trained with: the recorded one, else derived from ``config.json``.

    Args:
      run_dir: the run folder.
      cfg: its ``Config``.
      raw_config: the ``config.json`` dict as written (a missing ``resize_policy`` means the
        run predates the flag, i.e. ``squash``); None = use ``cfg`` as is.

    Raises:
      PreprocessingError: a malformed spec, a spec that contradicts ``config.json``, or an
        older ``same_scale`` run whose factor was not recorded (the message says how to
        record it).
    """
    spec = read(run_dir)
    if spec is not None:
        if tuple(spec.input_shape) != tuple(int(v) for v in cfg.input_shape):
            raise PreprocessingError(
                f"{run_folder.path(run_dir, FILENAME)} says input_shape {spec.input_shape}, "
                f"{run_folder.CONFIG} {tuple(cfg.input_shape)}; restore the run's own files"
            )
        return spec
    if raw_config is not None and "resize_policy" not in raw_config:
        cfg = cfg.replace(resize_policy="squash")
    try:
        return from_config(cfg, None, source=run_folder.CONFIG)
    except PreprocessingError:
        raise PreprocessingError(
            f"{run_dir} was trained with --resize_policy=same_scale but predates "
            f"{FILENAME}, which records its scale factor; record it with: "
            f"{run_folder.upgrade_hint(run_dir)}"
        ) from None


# ----------------------------------------------------------------------------- applying it
def _native(img: Image.Image, spec: PreprocessingSpec) -> Image.Image:
    """The dataset's own steps before the resize (Fashion-MNIST pad, CelebA crop, ...)."""
    if spec.native_pad is not None:
        h, w, border = spec.native_pad
        if img.size == (w, h):
            img = ImageOps.expand(img, border=border, fill=0)
    if spec.crop is not None:
        left, top, right, bottom = spec.crop
        if img.width > left + right and img.height > top + bottom:
            img = img.crop((left, top, img.width - right, img.height - bottom))
    if spec.cover_crop is not None:
        img = cover_and_crop(img, tuple(spec.cover_crop))
    return img


def content_size(spec: PreprocessingSpec, hw: Sequence[int]) -> tuple[int, int]:
    """(h, w) of an image of size ``hw`` (after the native steps) on the canvas."""
    h_out, w_out = int(spec.input_shape[0]), int(spec.input_shape[1])
    if spec.resize_policy == "squash":
        return h_out, w_out
    h_in, w_in = int(hw[0]), int(hw[1])
    fit = min(h_out / h_in, w_out / w_in)
    # same_scale: an image larger than any of the run's (which the run's factor never had to
    # clamp) is shrunk to fit, aspect kept, instead of being cut to the canvas side by side.
    factor = fit if spec.resize_policy == "fit" else min(float(spec.scale), fit)
    h = int(min(h_out, max(1, round(h_in * factor))))
    w = int(min(w_out, max(1, round(w_in * factor))))
    return h, w


def prepare_image(img: Image.Image, spec: PreprocessingSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """One decoded 'L'/'RGB' image -> ([H, W, C] uint8 canvas, (h, w) content at top-left).

    The steps of the dataset loaders, in their order: the dataset's native steps, then
    ``images.place_image`` under the run's policy, factor, filter and padding.
    """
    img = _native(img, spec)
    policy, scale = spec.resize_policy, spec.scale
    if policy == "same_scale" and scale is not None:
        fit = min(spec.input_shape[0] / img.height, spec.input_shape[1] / img.width)
        if scale > fit:  # larger than the run's images: shrink to fit, aspect kept
            policy, scale = "fit", None
    return images.place_image(img, spec.input_shape, policy, scale, spec.resample, spec.padding)
