"""Dataset registry and the one-class split protocol (the decoded-image cache is in ``cache.py``).

A dataset is one file: its ``PLUGIN`` description (``catalog.py``: name, categories, class
names, default shape, defaults, preprocessing, ...) and a loader function, which returns the
full labelled train and test arrays (:class:`SourceArrays`). ``DATASETS`` imports the file the
first time the dataset is looked up and makes its :class:`DatasetSpec` from both; categories are
checked from the description alone (no import). :func:`load_one_class` then applies the
reference's one-class protocol (spec 7.1) in pure numpy: the training inliers are the training
images of the chosen category, the test set is the whole test split relabelled 0 = inlier,
1 = outlier, and the classifier-fitting set is the inliers capped by a seeded subsample. The
validation mode (spec 7.2) draws from an explicit ``np.random.Generator`` derived from the seed.
Fix of reference bug: the reference reseeds the *global* numpy RNG (``np.random.seed(1)``) for
the validation split; here the global RNG state is never touched.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from deep_representation_one_class import catalog
from deep_representation_one_class.datasets.split import DataError, SplitIndices, one_class_indices
from deep_representation_one_class.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "OneClassData",
    "SourceArrays",
    "SplitIndices",
    "load_one_class",
    "one_class_indices",
    "register_dataset",
    "validate_category",
    "validate_input_shape",
]


@dataclasses.dataclass(frozen=True)
class OneClassData:
    """One one-class task: the inliers to learn from and a labelled test set.

    Attributes:
      name: canonical dataset key, e.g. 'cifar10ood'.
      category: canonical inlier category, e.g. '0', 'airplane' (folder) or 'Eyeglasses'.
      train_x: [N, H, W, C] uint8 inliers for representation learning (before distribution
        augmentation).
      cls_x: [M, H, W, C] uint8 inliers for fitting the one-class classifiers: ``train_x``, or a
        seeded subsample of ``max_cls`` rows of it when N is larger (M <= N).
      test_x: [T, H, W, C] uint8 test images.
      test_y: [T] int64, 1 = outlier, 0 = inlier.
      test_class: [T] int64 original class ids (attribute flag for CelebA) for per-class
        analysis; index into ``class_names``.
      class_names: the names of the original classes.
      test_paths: the source file of each test image for folder datasets, else None.
      test_masks: [T, H, W] uint8 in {0, 1} pixel-level ground truth (1 = defect) for datasets
        with masks (MVTec AD layout), else None.
      train_sizes, test_sizes: [N, 2] / [T, 2] int64 (h, w) of each image's content at the
        top-left of the H x W canvas (``--resize_policy`` fit or same_scale: the rest is
        padding), or None when every image fills the canvas.
      holdout_x, holdout_sizes: normal training images a task held out of training and of the
        classifiers (the patch task's synthetic-anomaly validation), else None.
      scale: the one resize factor of ``--resize_policy=same_scale`` (recorded in the run's
        preprocessing spec so that new images are brought to the same scale), else None.
    """

    name: str
    category: str
    train_x: np.ndarray
    cls_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_class: np.ndarray
    class_names: tuple[str, ...]
    test_paths: tuple[str, ...] | None = None
    test_masks: np.ndarray | None = None
    train_sizes: np.ndarray | None = None
    test_sizes: np.ndarray | None = None
    holdout_x: np.ndarray | None = None
    holdout_sizes: np.ndarray | None = None
    scale: float | None = None


@dataclasses.dataclass(frozen=True)
class SourceArrays:
    """What a loader returns: labelled arrays of the whole dataset (or of what the task needs).

    ``train_y``/``test_y`` are original class ids (int64, index into ``class_names``) and
    ``inlier`` is the id of the requested category. A loader may omit the training images of
    the other classes when ``need_outliers`` is False (they only serve the validation mode).
    ``test_masks`` ([T, H, W] uint8 {0, 1}) are pixel-level ground truth where the data has it.
    ``train_sizes``/``test_sizes`` ([N, 2] int64) are the content sizes of padded canvases;
    ``scale`` the ``same_scale`` factor the loader chose (None for the other policies).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]
    inlier: int
    category: str
    test_paths: tuple[str, ...] | None = None
    train_paths: tuple[str, ...] | None = None
    test_masks: np.ndarray | None = None
    train_sizes: np.ndarray | None = None
    test_sizes: np.ndarray | None = None
    scale: float | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
      name: canonical key.
      categories: the valid canonical categories, or None for an open set (folder datasets,
        where any subfolder name is a category; names registered as ``category_aliases`` are
        still canonicalised, e.g. MVTec AD's 'Metal Nut' -> 'metal_nut').
      default_input_shape: (H, W, C) used when the caller gives none.
      loader: ``loader(root, *, category, input_shape, need_outliers, cache_dir, skip_corrupt,
        seed, resize_policy) -> SourceArrays``; ``category`` is already canonical.
      description: one line for help texts.
      task: the registered task that trains and evaluates on it (``image`` or ``patches``).
      defaults: quick defaults of ``Config`` fields (or task options) for this dataset; they
        override the method's defaults and are overridden by the user's flags.
      label: the column label in result tables (the paper's name), '' for the key itself.
      preprocessing: how the loader prepares one image beyond the plain resize, as fields of
        ``datasets.preprocessing.PreprocessingSpec`` (``native_pad``, ``crop``, ``cover_crop``,
        ``resample``, and ``resize_policy: True`` when it honours ``--resize_policy``); the
        run records it so that served images are prepared the same way.
      method: the method a run uses when the user names none ('' = the global default).
      method_defaults: method name -> further defaults when the run uses that method.
    """

    name: str
    categories: tuple[str, ...] | None
    default_input_shape: tuple[int, int, int]
    loader: Callable[..., SourceArrays]
    description: str
    task: str = "image"
    defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    label: str = ""
    preprocessing: Mapping[str, object] = dataclasses.field(default_factory=dict)
    method: str = ""
    method_defaults: Mapping[str, Mapping[str, object]] = dataclasses.field(default_factory=dict)


# Normalised alternative spellings of categories (class names), per canonical dataset key, and
# the readable name shown next to each category in error messages.
_CATEGORY_ALIASES: dict[str, dict[str, str]] = {}
_CATEGORY_DISPLAY: dict[str, dict[str, str]] = {}


def _norm(text: str) -> str:
    """Case-, space- and punctuation-insensitive form of a class name ('T-shirt/top')."""
    return re.sub(r"[^0-9a-z]", "", str(text).lower().replace("&", "and"))


def _index_categories(
    name: str,
    categories: Sequence[str] | None,
    class_names: Sequence[str] | None,
    category_aliases: Mapping[str, str] | None,
) -> None:
    cats = tuple(categories or ())
    table = {_norm(c): c for c in cats}
    display: dict[str, str] = {}
    if class_names is not None and categories is None:
        # An open set with known names (MVTec AD's objects): canonicalise their spellings.
        table.update({_norm(c): c for c in class_names})
    elif class_names is not None:
        if len(class_names) != len(cats):
            raise ValueError(f"{name}: {len(class_names)} class names for {len(cats)} ids")
        for cat, cname in zip(cats, class_names):
            table.setdefault(_norm(cname), cat)
            if cname != cat:
                display[cat] = cname
    table.update({_norm(k): v for k, v in (category_aliases or {}).items()})
    _CATEGORY_ALIASES[name] = table
    _CATEGORY_DISPLAY[name] = display


def spec_from_entry(entry: catalog.Entry, loader: Callable[..., SourceArrays]) -> DatasetSpec:
    """The registered spec of a catalog entry whose implementation is ``loader``."""
    _index_categories(entry.name, entry.categories, entry.class_names, entry.category_aliases)
    return DatasetSpec(
        name=entry.name,
        categories=entry.categories,
        default_input_shape=tuple(entry.input_shape),
        loader=loader,
        description=entry.description,
        task=entry.task,
        defaults=entry.defaults,
        label=entry.label,
        preprocessing=entry.preprocessing,
        method=entry.method,
        method_defaults=entry.method_defaults,
    )


DATASETS: Registry[DatasetSpec] = Registry("dataset", kind="dataset", bind=spec_from_entry)


def register_dataset(
    spec: DatasetSpec,
    *aliases: str,
    class_names: Sequence[str] | None = None,
    category_aliases: Mapping[str, str] | None = None,
) -> DatasetSpec:
    """Adds ``spec`` to :data:`DATASETS` under its name and ``aliases``.

    Args:
      spec: the dataset.
      aliases: other dataset keys (e.g. the reference's 'fashion_mnistood').
      class_names: names parallel to ``spec.categories``, accepted as categories too.
      category_aliases: further spellings, mapped to canonical categories.
    """
    DATASETS.add(spec.name, spec, *aliases)
    if class_names is not None and spec.categories is None:
        raise ValueError(f"{spec.name}: class names need categories")
    _index_categories(spec.name, spec.categories, class_names, category_aliases)
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The spec registered under ``name`` (or an alias); DataError listing the valid names."""
    try:
        return DATASETS.get(name)
    except KeyError as e:
        raise DataError(str(e.args[0])) from None


def validate_category(name: str, category: str | int) -> str:
    """Returns the canonical category of dataset ``name``; fast, loads no data.

    Accepts the canonical id ('3'), the reference's ``int(float())`` spellings ('3.0', 3) and
    class names in any case/punctuation ('T-shirt/top', 'airplane', 'eyeglasses'). For open-set
    datasets (``categories is None``) any non-empty string is returned stripped; it is checked
    against the data at load time.

    Raises:
      DataError: unknown dataset or category; the message lists the valid values.
    """
    entry = catalog.find("dataset", name)
    if entry is not None and entry.name not in _CATEGORY_ALIASES:
        # From the description alone: checking a category imports no loader.
        _index_categories(entry.name, entry.categories, entry.class_names, entry.category_aliases)
    spec = entry if entry is not None else get_spec(name)
    text = str(category).strip()
    table = _CATEGORY_ALIASES.get(spec.name, {})
    if spec.categories is None:
        if not text:
            raise DataError(
                f"dataset '{spec.name}' needs a category: the name (or sorted index) of a "
                "subfolder of <root>/train (folder), or a category folder under the root (mvtec)"
            )
        return table.get(_norm(text), text)
    if text in spec.categories:
        return text
    try:
        as_float = float(text)
    except ValueError:
        as_float = None
    if as_float is not None and as_float.is_integer() and str(int(as_float)) in spec.categories:
        return str(int(as_float))
    if text and _norm(text) in table:
        return table[_norm(text)]
    named = _CATEGORY_DISPLAY.get(spec.name, {})
    shown = [f"{c} ({named[c]})" if c in named else c for c in spec.categories]
    raise DataError(
        f"unknown category '{category}' for dataset '{spec.name}'; valid: {', '.join(shown)}"
    )


def validate_input_shape(
    input_shape: Sequence[int] | str | None, default: Sequence[int]
) -> tuple[int, int, int]:
    """(H, W, C) as ints with H, W >= 1 and C in {1, 3}; ``default`` when None.

    A reference-style string '32,32,3' is accepted too.
    """
    if isinstance(input_shape, str):
        input_shape = input_shape.split(",")
    shape = tuple(default if input_shape is None else input_shape)
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise DataError(f"input_shape must be three integers H,W,C, got {input_shape}") from None
    if len(shape) != 3 or shape[0] < 1 or shape[1] < 1 or shape[2] not in (1, 3):
        raise DataError(f"input_shape must be H,W,C with H,W >= 1 and C in {{1,3}}, got {shape}")
    return shape


def load_one_class(
    name: str,
    *,
    root: str | None,
    category: str,
    input_shape: tuple[int, int, int] | None = None,
    is_validation: bool = False,
    seed: int = 0,
    cache_dir: str | None = None,
    skip_corrupt: bool = False,
    max_cls: int = 20000,
    resize_policy: str = "squash",
) -> OneClassData:
    """Loads dataset ``name`` and splits it for the one-class task of ``category``.

    Args:
      name: a registered dataset key or alias (see ``DATASETS.names()``).
      root: where the data lives (dataset-specific layouts; None = the dataset's default).
      category: the inlier category (see :func:`validate_category`).
      input_shape: (H, W, C) of the returned images; None = the dataset's default.
      is_validation: return the 90/10 validation split as the test set (spec 7.2).
      seed: seeds the validation split and the classifier-set cap (never the global RNG).
      cache_dir: where decoded images are cached (None = ``DROC_CACHE_DIR`` or
        ``~/.cache/deep_representation_one_class``; '' disables the cache).
      skip_corrupt: skip undecodable image files with a warning instead of failing.
      max_cls: cap of the classifier-fitting set.
      resize_policy: how images of another size or aspect become ``input_shape``
        (``images.RESIZE_POLICIES``; read by the folder and MVTec AD loaders).

    Returns:
      A :class:`OneClassData` with uint8 images at ``input_shape``.

    Raises:
      DataError: unknown dataset/category, missing or malformed data.
    """
    spec = get_spec(name)
    canonical = validate_category(spec.name, category)
    shape = validate_input_shape(input_shape, spec.default_input_shape)
    src = spec.loader(
        root,
        category=canonical,
        input_shape=shape,
        need_outliers=is_validation,
        cache_dir=cache_dir,
        skip_corrupt=skip_corrupt,
        seed=seed,
        resize_policy=resize_policy,
    )
    split = one_class_indices(
        src.train_y,
        src.test_y,
        src.inlier,
        is_validation=is_validation,
        seed=seed,
        max_cls=max_cls,
    )
    train_x = np.ascontiguousarray(src.train_x[split.train])
    same = split.cls.size == split.train.size
    cls_x = train_x if same else np.ascontiguousarray(src.train_x[split.cls])
    if split.test_from_train:
        test_x, test_class = src.train_x[split.test], src.train_y[split.test]
        paths = src.train_paths
    else:
        test_x, test_class = src.test_x[split.test], src.test_y[split.test]
        paths = src.test_paths
    test_paths = tuple(paths[i] for i in split.test) if paths is not None else None
    masks = None
    if src.test_masks is not None and not split.test_from_train:
        masks = np.ascontiguousarray(src.test_masks[split.test])
    train_sizes = test_sizes = None
    if src.train_sizes is not None:
        train_sizes = np.asarray(src.train_sizes, np.int64)[split.train]
        if split.test_from_train:
            test_sizes = np.asarray(src.train_sizes, np.int64)[split.test]
    if src.test_sizes is not None and not split.test_from_train:
        test_sizes = np.asarray(src.test_sizes, np.int64)[split.test]
    return OneClassData(
        name=spec.name,
        category=src.category,
        train_x=train_x,
        cls_x=cls_x,
        test_x=np.ascontiguousarray(test_x),
        test_y=split.test_y,
        test_class=np.asarray(test_class, dtype=np.int64).reshape(-1),
        class_names=tuple(src.class_names),
        test_paths=test_paths,
        test_masks=masks,
        train_sizes=train_sizes,
        test_sizes=test_sizes,
        scale=src.scale,
    )
