"""User image folders (``folder``): ``root/train/<category>/`` normal, ``root/test/<class>/``.

``root/train/<category>/`` holds the normal training images (nested subfolders allowed);
``root/test/<category>/`` holds the normal test images and every other ``root/test/<name>/``
holds anomalous ones (the MVTec AD layout ``train/good``, ``test/good``, ``test/<defect>`` fits).
Other ``root/train/<name>/`` folders are only read by the validation mode, as outliers.
PNG, JPEG, BMP and TIFF files (any case) in any mode and size are decoded (``images``: EXIF
orientation applied, 16-bit by bit depth), converted to the requested channels and resized
bilinearly; dot-files are ignored; files are sorted for determinism. A class folder that holds
files but no readable image (all of an unsupported type) is refused, naming it; an empty one is
skipped with a warning. Run folders (``.droc_run``) inside the data are never read as images.
Each class folder is decoded once and cached, keyed by its file list and their content
(``cache.fingerprint``) and the input shape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
)
from deep_representation_one_class.datasets.cache import (
    cached_arrays,
    fingerprint,
)
from deep_representation_one_class.utils.run_folder import MARKER as RUN_MARKER

logger = logging.getLogger(__name__)

PLUGIN = dict(
    kind="dataset",
    name="folder",
    description="user images: root/train/<category>/ normal, root/test/<class>/ labelled",
    categories=None,
    # A user's own data: show at once whether training beats raw pixels and random features.
    # Also hold out 16 normal images for the synthetic-anomaly validation score.
    defaults={"baselines": True, "synthetic_holdout": 16},
    preprocessing={"resize_policy": True},
    # Your own images: frozen ImageNet features (EfficientNet-Lite2, offline: the imagenet
    # method's default backbone, above Lite0 on validation) beat every from-scratch recipe on
    # real photos within a 10-minute CPU budget (docs/pretrained.md); fed at 224 px. GDE
    # first (the served classifier): it scored highest on validation
    # (results/selection/pretrained_cifar10.md). Features from four layers (stride 16 to the
    # head) rather than the head alone: higher on 8 of 10 CIFAR-10 validation splits at 224 px
    # and on the mean (results/selection/pretrained_probe_224.md); mid-level features are what
    # defect detectors on pretrained networks use. No mirror averaging: on a user's parts a
    # mirrored image may be the anomaly. --method=contrastive etc. train from scratch.
    method="imagenet",
    method_defaults={
        "imagenet": {
            "input_shape": (224, 224, 3),
            "pretrained_layers": ("s16", "b14", "b15", "head"),
            "classifiers": ("gde", "kde", "auc", "kocsvm", "locsvm"),
        }
    },
    impl="_load",
)


def scan_images(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image-named entries under ``folder`` (recursively), sorted by their relative path.

    Returns:
      (regular files and symlinks to regular files, [(other entry, why it is unusable)]):
      named pipes, devices, dangling symlinks and symlink loops with an image extension are
      never opened (a pipe would block forever) but reported, so that a strict load fails
      naming them and ``skip_corrupt`` skips them. Symlinked folders are not followed (no
      loops); dot-files and dot-folders are ignored, and so are run folders (marked
      ``.droc_run``: a run's report thumbnails are not data). Names need not be valid UTF-8.
    """
    found, bad = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and not os.path.lexists(os.path.join(dirpath, d, RUN_MARKER))
        ]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(images.IMAGE_EXTENSIONS):
                continue
            path = Path(dirpath) / name
            try:
                images.check_regular_file(path)
            except DataError as e:
                bad.append((path, str(e)))
            else:
                found.append(path)

    def key(item) -> str:
        p = item[0] if isinstance(item, tuple) else item
        return p.relative_to(folder).as_posix()

    return sorted(found, key=key), sorted(bad, key=key)


def _some(names, limit: int = 5) -> str:
    """Up to ``limit`` names, comma separated, and how many more."""
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def list_images(folder: Path, skip_corrupt: bool = False) -> list[Path]:
    """The usable image files under ``folder`` (see :func:`scan_images`), sorted.

    Raises:
      DataError: an image-named entry is not a regular file (unless ``skip_corrupt``, which
        logs a warning instead).
    """
    found, bad = scan_images(folder)
    if bad:
        if not skip_corrupt:
            raise DataError(bad[0][1])
        logger.warning(
            "Skipped %d image entr%s of %s that %s not regular files: %s",
            len(bad),
            "y" if len(bad) == 1 else "ies",
            folder,
            "is" if len(bad) == 1 else "are",
            _some(p.name for p, _ in bad),
        )
    return found


SUPPORTED = "/".join(images.IMAGE_EXTENSIONS)


def other_files(folder: Path, limit: int = 3) -> tuple[int, list[str]]:
    """(number of non-dot files under ``folder`` without an image extension, a few names)."""
    count, names = 0, []
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if not name.startswith(".") and not name.lower().endswith(images.IMAGE_EXTENSIONS):
                count += 1
                if len(names) < limit:
                    names.append(name)
    return count, names


def check_class_yield(folder: Path, n_images: int) -> None:
    """Refuses a class folder that yields no image although it holds files (all of a type
    that is not read), so that a class never vanishes from the test set unnoticed; an empty
    folder only costs a warning.

    Raises:
      DataError: naming the folder, what it holds and the supported types.
    """
    if n_images:
        return
    count, names = other_files(folder)
    if count:
        raise DataError(
            f"{folder} holds {count} file(s) but no image of a supported type ({SUPPORTED}), "
            f"e.g. {', '.join(names)}; convert them or move the folder away"
        )
    logger.warning("%s holds no image; it adds nothing to the data.", folder)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_class_folder(
    folder: Path,
    input_shape,
    *,
    cache_dir=None,
    skip_corrupt: bool = False,
    policy: str = "squash",
    scale: float | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decodes (or reads from the cache) every image under one class folder.

    ``policy``/``scale``: ``--resize_policy`` (``images.place_image``). Under ``squash`` a
    warning names the folder when its images' aspect ratios differ from the canvas's by more
    than 10% (they are distorted, not silently).

    Returns:
      ([N, H, W, C] uint8 images, the N source paths).

    Raises:
      DataError: an undecodable file (unless ``skip_corrupt``, which logs a warning instead).
    """
    files = list_images(folder, skip_corrupt)
    shape = tuple(int(v) for v in input_shape)

    def decode(path: Path):
        try:
            img = images.open_image(str(path))
            arr, _ = images.place_image(img, shape, policy, scale)
            return arr, img.size[1] / img.size[0]
        except DataError as e:
            return e

    def build() -> dict[str, np.ndarray]:
        results = images.map_threaded(decode, files)
        good = [(str(p), r) for p, r in zip(files, results) if not isinstance(r, DataError)]
        bad = [(str(p), str(r)) for p, r in zip(files, results) if isinstance(r, DataError)]
        x = np.stack([r[0] for _, r in good]) if good else np.zeros((0, *shape), np.uint8)
        aspects = np.array([r[1] for _, r in good], np.float64)
        # Failures are cached too, so that a later strict load still reports them without
        # decoding everything again.
        return {
            "x": x,
            "paths": np.array([p for p, _ in good], dtype=str),
            "bad_paths": np.array([p for p, _ in bad], dtype=str),
            "bad_msgs": np.array([m for _, m in bad], dtype=str),
            "aspects": aspects,
        }

    key = fingerprint(files, "folder", str(folder.resolve()), shape, policy, scale)
    suffix = "" if policy == "squash" else f"-{policy}"
    stem = f"folder-{folder.name}-{'x'.join(map(str, shape))}{suffix}"
    h, w, c = shape
    schema = {
        "x": ("uint8", ("n", h, w, c)),
        "paths": ("str", ("n",)),
        "bad_paths": ("str", ("b",)),
        "bad_msgs": ("str", ("b",)),
        "aspects": ("float64", ("n",)),
    }
    arrays = cached_arrays(cache_dir, stem, key, build, schema)
    aspects = arrays["aspects"] / (shape[0] / shape[1])
    if policy == "squash" and aspects.size and (aspects.max() > 1.1 or aspects.min() < 1 / 1.1):
        logger.warning(
            "%s: image aspect ratios (h/w) range %.2f-%.2f but are squashed to %dx%d; pass "
            "--resize_policy=fit or same_scale to keep them (docs/defects.md, 'Images of any "
            "size').",
            folder,
            arrays["aspects"].min(),
            arrays["aspects"].max(),
            shape[0],
            shape[1],
        )
    if arrays["bad_paths"].size:
        if not skip_corrupt:
            raise DataError(str(arrays["bad_msgs"][0]))
        logger.warning(
            "Skipped %d undecodable image(s) in %s: %s",
            arrays["bad_paths"].size,
            folder,
            _some(os.path.basename(str(p)) for p in arrays["bad_paths"]),
        )
    return arrays["x"], tuple(str(p) for p in arrays["paths"])


def resolve_category(category: str, available: list[str], train_dir: Path) -> str:
    """A folder name from a name (exact, then case-insensitive) or a sorted index ('0')."""
    if category in available:
        return category
    folded = [c for c in available if c.lower() == category.lower()]
    if len(folded) == 1:
        return folded[0]
    if category.isdigit() and int(category) < len(available):
        return available[int(category)]
    raise DataError(
        f"no category folder '{category}' in {train_dir}; available (name or sorted index): "
        + ", ".join(f"{i}={c}" for i, c in enumerate(available))
    )


def _load(
    root, *, category, input_shape, need_outliers=False, cache_dir=None, skip_corrupt=False,
    resize_policy="squash", **_unused,
) -> SourceArrays:  # fmt: skip
    if root is None:
        raise DataError(
            "dataset 'folder' needs root=<folder with train/<category>/ and test/<class>/>"
        )
    base = Path(root).expanduser()
    train_dir, test_dir = base / "train", base / "test"
    if not base.is_dir():
        raise DataError(
            f"image folder root {base} does not exist; expected {train_dir}/"
            f"<category>/ and {test_dir}/<class>/"
        )
    for d in (train_dir, test_dir):
        if not d.is_dir():
            have = ", ".join(_subfolders(base)) or "nothing"
            raise DataError(
                f"{d} is missing (found in {base}: {have}); expected "
                f"{train_dir}/<category>/ and {test_dir}/<class>/ subfolders"
            )
    train_classes = _subfolders(train_dir)
    if not train_classes:
        raise DataError(
            f"{train_dir} has no category subfolders; put the normal training "
            f"images in {train_dir}/<category>/"
        )
    cat = resolve_category(category, train_classes, train_dir)
    test_classes = _subfolders(test_dir)
    if cat not in test_classes:
        raise DataError(
            f"{test_dir / cat} is missing: put the normal test images of '{cat}' "
            f"there and the anomalous ones in other folders of {test_dir} "
            f"(found: {', '.join(test_classes) or 'nothing'})"
        )
    loose = [p.name for p in test_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        logger.warning(
            "Ignoring %d file(s) directly in %s (e.g. %s): test images must be in class subfolders",
            len(loose),
            test_dir,
            loose[0],
        )
    class_names = tuple(sorted(set(train_classes) | set(test_classes)))
    scale = None
    if resize_policy == "same_scale":
        used = [train_dir / cat, *(test_dir / c for c in test_classes)]
        sizes = []
        for path in (p for d in used for p in list_images(d)):
            try:
                sizes.append(images.image_size(path))
            except DataError:
                if not skip_corrupt:
                    raise
        scale = images.common_scale(sizes, input_shape)
    opts = {
        "cache_dir": cache_dir,
        "skip_corrupt": skip_corrupt,
        "policy": resize_policy,
        "scale": scale,
    }

    train_parts, train_ids, train_paths = [], [], []
    for name in [cat] + ([c for c in train_classes if c != cat] if need_outliers else []):
        x, paths = load_class_folder(train_dir / name, input_shape, **opts)
        if name == cat and len(x) == 0 and other_files(train_dir / cat)[0]:
            check_class_yield(train_dir / cat, 0)
        if name == cat and len(x) == 0:
            raise DataError(
                f"no images ({SUPPORTED}) under {train_dir / cat}; "
                f"available categories: {', '.join(train_classes)}"
            )
        train_parts.append(x)
        train_ids.append(np.full(len(x), class_names.index(name), np.int64))
        train_paths += paths
    test_parts, test_ids, test_paths = [], [], []
    for name in test_classes:
        x, paths = load_class_folder(test_dir / name, input_shape, **opts)
        if not paths and not list_images(test_dir / name, skip_corrupt=True):
            check_class_yield(test_dir / name, 0)
        test_parts.append(x)
        test_ids.append(np.full(len(x), class_names.index(name), np.int64))
        test_paths += paths
    test_y = np.concatenate(test_ids)
    inlier = class_names.index(cat)
    if not np.any(test_y == inlier) or not np.any(test_y != inlier):
        raise DataError(
            f"{test_dir} needs images in {cat}/ (normal) and in at least one other "
            "class folder (anomalous) to measure detection"
        )
    return SourceArrays(
        train_x=np.concatenate(train_parts),
        train_y=np.concatenate(train_ids),
        test_x=np.concatenate(test_parts),
        test_y=test_y,
        class_names=class_names,
        inlier=inlier,
        category=cat,
        test_paths=tuple(test_paths),
        train_paths=tuple(train_paths),
        scale=scale,
    )
