"""MVTec AD (``mvtec``): industrial images with pixel-precise defect masks, one category a task.

Expected layout (the official archive, or a user's own part in the same layout, any image size
and aspect)::

    <root>/<category>/train/good/*.png                  normal training images
    <root>/<category>/test/good/*.png                   normal test images
    <root>/<category>/test/<defect>/*.png               defective test images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   their masks (255 = defect)

Any category folder is accepted (the 15 official names are canonicalised as before). Without a
``ground_truth/`` folder there are no masks: the run logs it and reports image AUROC only.
Images reach the ``input_shape`` canvas (default 256x256x3; grayscale is tiled to 3 channels)
under ``--resize_policy`` (``images.place_image``: squash, fit or same_scale, the default here;
the official categories have one size per category, where all three agree); masks follow the
same geometry as their own image (a mask of another size is first scaled to its image's size,
nearest-neighbour), with nearest-neighbour resampling and zero padding; every non-zero mask
pixel is defect (0/1, 0/255, 16-bit and colour masks all work), and the content size of
every padded canvas travels as ``train_sizes``/``test_sizes``. Good test images have no
mask: theirs is all zeros. The test order is the sorted class folders (``good`` first, then
the defect types alphabetically) and the sorted files inside each.
The masks travel with the data (``OneClassData.test_masks``, aligned with ``test_x``). Decoded
arrays are cached on disk like the other image loaders. The MVTec AD data are licensed
CC BY-NC-SA 4.0 (c) MVTec Software GmbH; cite Bergmann et al., "MVTec AD: A Comprehensive
Real-World Dataset for Unsupervised Anomaly Detection", CVPR 2019.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
    _norm,
)
from deep_representation_one_class.datasets.cache import (
    cached_arrays,
    fingerprint,
)
from deep_representation_one_class.datasets.folder import SUPPORTED, check_class_yield, list_images

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES",
    "GOOD",
    "mask_path",
    "masks_for_paths",
]

# The 15 official categories (textures first, then objects, as in the MVTec AD paper).
CATEGORIES = (
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
GOOD = "good"
DEFAULT_SHAPE = (256, 256, 3)

PLUGIN = dict(
    kind="dataset",
    name="mvtec",
    aliases=["mvtec_ad"],
    label="MVTec AD",
    description="MVTec AD: root/<category>/{train/good,test/<defect>,ground_truth/<defect>}",
    # Any folder in the layout is a category (a user's own part); the official names are
    # still canonicalised ('Metal Nut' -> 'metal_nut').
    categories=None,
    class_names=CATEGORIES,
    input_shape=DEFAULT_SHAPE,
    task="patches",
    # Patch training: 1,500 steps of 32 patches at lr 0.01 (lr 0.1 gave image AUROC 75-78
    # on bottle), scored by the density scorers that scale to patch banks. Chosen by the
    # synthetic-anomaly validation, not by bottle's test labels (results/defect_selection):
    # 1-NN ("auc", listed first: it makes the maps) scored highest on synthetic anomalies
    # for every method, and contrastive above rotation and the untrained network, more
    # steps above fewer. CutPaste's synthetic scores are not comparable (it is trained to
    # spot local corruptions; docs/defects.md, "Synthetic-anomaly validation").
    defaults={
        "batch_size": 32,
        "train_steps": 1500,
        "learning_rate": 0.01,
        "patch_bank": 10000,
        "classifiers": ("auc", "gde", "kde"),
        "resize_policy": "same_scale",
        "baselines": True,
        "synthetic_holdout": 16,
    },
    preprocessing={"resize_policy": True},
    # PatchCore-style frozen ImageNet window features (EfficientNet-Lite0, offline) are the
    # default; the from-scratch recipes above stay one --method away (docs/pretrained.md).
    method="patchcore",
    impl="_load",
)


def mask_path(test_image: str | Path) -> Path | None:
    """The ground-truth file of a test image, or None for a ``good`` image.

    ``<cat>/test/<defect>/<stem>.<ext>`` -> ``<cat>/ground_truth/<defect>/<stem>_mask.png``.
    """
    p = Path(test_image)
    defect = p.parent.name
    if defect == GOOD:
        return None
    return p.parent.parent.parent / "ground_truth" / defect / f"{p.stem}_mask.png"


def _decode_mask(
    path: Path,
    shape: tuple[int, int],
    policy: str = "squash",
    scale: float | None = None,
    image_wh: tuple[int, int] | None = None,
) -> tuple[np.ndarray, bool]:
    """([H, W] uint8 in {0, 1}, whether the mask had to be scaled to its image's size).

    Any non-zero pixel of the file is defect (``images.open_mask``). A mask whose size differs
    from its image's (``image_wh``, upright) is first scaled to the image's size
    (nearest-neighbour), then placed on the canvas exactly like the image (``policy``,
    ``scale``, zero padding), so that the defect lands where it is in the image.
    """
    if not path.is_file():
        raise DataError(
            f"missing ground-truth mask {path}; MVTec AD expects every test/<defect>/<stem>.png "
            "to have ground_truth/<defect>/<stem>_mask.png"
        )
    img = images.open_mask(path)
    rescaled = image_wh is not None and img.size != tuple(image_wh)
    if rescaled:
        img = img.resize(tuple(image_wh), resample=images.RESAMPLE["nearest"])
    arr, _ = images.place_image(
        img, (shape[0], shape[1], 1), policy, scale, resample="nearest", pad="constant"
    )
    return (arr[..., 0] > 0).astype(np.uint8), rescaled


def masks_for_paths(
    test_paths: Sequence[str],
    size: Sequence[int],
    policy: str = "squash",
    scale: float | None = None,
) -> np.ndarray:
    """Masks of the given test images, in their order, decoded from the ground-truth files.

    Args:
      test_paths: test image files inside an MVTec AD category folder.
      size: (H, W) of the masks (the image size of the task).
      policy, scale: the resize policy the images were loaded with (``images.place_image``).

    Returns:
      [T, H, W] uint8 in {0, 1}; all zeros for ``good`` images.

    Raises:
      DataError: a defective image has no (or an undecodable) mask file.
    """
    h, w = int(size[0]), int(size[1])
    out = np.zeros((len(test_paths), h, w), np.uint8)
    for i, p in enumerate(test_paths):
        mp = mask_path(p)
        if mp is not None:
            ih, iw = images.image_size(p)
            out[i] = _decode_mask(mp, (h, w), policy, scale, (iw, ih))[0]
    return out


def _resolve_category(root: Path, category: str) -> Path:
    """The category folder: the exact name, else a unique case/punctuation-insensitive match."""
    base = root / category
    if base.is_dir():
        return base
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    norm = [n for n in found if _norm(n) == _norm(category)]
    if len(norm) == 1:
        return root / norm[0]
    raise DataError(
        f"MVTec-layout category folder {base} does not exist (found in {root}: "
        f"{', '.join(found) or 'nothing'}); any folder holding train/good, test/good, "
        "test/<defect> (and optionally ground_truth/<defect>) is a category"
    )


def _check_layout(root: str | None, category: str) -> Path:
    if root is None:
        raise DataError(
            "dataset 'mvtec' needs root=<folder holding <category>/train/good, "
            "<category>/test/<defect> and optionally <category>/ground_truth/<defect>>"
        )
    top = Path(root).expanduser()
    if not top.is_dir():
        raise DataError(
            f"MVTec-layout root {top} does not exist; expected {top}/<category>/train/good, "
            f"{top}/<category>/test/<defect> and {top}/<category>/ground_truth/<defect>"
        )
    base = _resolve_category(top, category)
    for sub in ("train/good", "test/good"):
        if not (base / sub).is_dir():
            raise DataError(
                f"{base / sub} is missing; expected the MVTec AD layout {base}/train/good, "
                f"{base}/test/<defect> and {base}/ground_truth/<defect>"
            )
    return base


def _test_folders(base: Path) -> tuple[list[str], bool]:
    """(class folders, good first; whether masks exist). No ground_truth/ = no masks."""
    names = sorted(
        p.name for p in (base / "test").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    defects = [n for n in names if n != GOOD]
    if not defects:
        raise DataError(
            f"{base / 'test'} has no defect folder besides good/; detection needs "
            f"defective test images in {base}/test/<defect>/"
        )
    gt = base / "ground_truth"
    if not gt.is_dir():
        logger.warning(
            "%s has no ground_truth/ folder: no defect masks, so only image-level metrics "
            "(image AUROC) are computed; pixel AUROC and PRO need %s/<defect>/<stem>_mask.png.",
            base,
            gt,
        )
        return [GOOD, *defects], False
    for d in defects:
        if not (gt / d).is_dir():
            raise DataError(
                f"{gt / d} is missing: every {base}/test/<defect>/ needs its masks in "
                f"{gt}/<defect>/<stem>_mask.png (or remove {gt} for image-level metrics only)"
            )
    return [GOOD, *defects], True


def _decode_all(
    files: Sequence[Path],
    shape: tuple[int, int, int],
    with_masks: bool,
    policy: str,
    scale: float | None,
) -> tuple[list, list]:
    """Decodes images (and masks) in a thread pool; failures come back as DataError objects.

    Each result is (image [H, W, C], mask [H, W], (h, w) content size, mask rescaled).
    """

    def work(path: Path):
        try:
            img = images.open_image(path, str(path))
            image, size = images.place_image(img, shape, policy, scale)
            mp = mask_path(path) if with_masks else None
            mask, rescaled = (
                _decode_mask(mp, shape[:2], policy, scale, img.size)
                if mp is not None
                else (np.zeros(shape[:2], np.uint8), False)
            )
            return image, mask, size, rescaled
        except DataError as e:
            return e

    results = images.map_threaded(work, files)
    good = [(p, r) for p, r in zip(files, results) if not isinstance(r, DataError)]
    bad = [(p, r) for p, r in zip(files, results) if isinstance(r, DataError)]
    rescaled = [p for p, r in good if r[3]]
    if rescaled:
        logger.warning(
            "%d mask(s) differ in size from their image (e.g. %s); each was scaled to its "
            "image's size before the image's resize, so the defects stay where they are.",
            len(rescaled),
            mask_path(rescaled[0]),
        )
    return good, bad


def _policy_scale(files: Sequence[Path], shape, policy: str, skip_corrupt: bool) -> float | None:
    """The ``same_scale`` factor from the image headers (None for the other policies)."""
    if policy != "same_scale":
        return None
    sizes = []
    for path in files:
        try:
            sizes.append(images.image_size(path))
        except DataError:
            if not skip_corrupt:
                raise
    return images.common_scale(sizes, shape)


def _load(
    root, *, category, input_shape, need_outliers=False, cache_dir=None, skip_corrupt=False,
    resize_policy="squash", **_unused,
) -> SourceArrays:  # fmt: skip
    if need_outliers:
        raise DataError(
            "dataset 'mvtec' has no validation mode (its training set holds only normal images); "
            "drop --is_validation"
        )
    base = _check_layout(root, category)
    shape = tuple(int(v) for v in input_shape)
    classes, with_masks = _test_folders(base)
    train_files = list_images(base / "train" / GOOD, skip_corrupt)
    if not train_files:
        check_class_yield(base / "train" / GOOD, 0)
        raise DataError(f"no training images ({SUPPORTED}) in {base / 'train' / GOOD}")
    test_files: list[Path] = []
    test_ids: list[int] = []
    for cid, name in enumerate(classes):
        found = list_images(base / "test" / name, skip_corrupt)
        if not found:
            check_class_yield(base / "test" / name, 0)
        test_files += found
        test_ids += [cid] * len(found)
    mask_files = [m for m in (mask_path(p) for p in test_files) if m is not None and m.is_file()]
    policy = str(resize_policy)

    def build() -> dict[str, np.ndarray]:
        scale = _policy_scale(train_files + test_files, shape, policy, skip_corrupt)
        tr_good, tr_bad = _decode_all(train_files, shape, False, policy, scale)
        te_good, te_bad = _decode_all(test_files, shape, with_masks, policy, scale)
        id_of = dict(zip(test_files, test_ids))
        bad = tr_bad + te_bad

        def stack(items, k, empty):
            return np.stack([np.asarray(r[k]) for _, r in items]) if items else empty

        return {
            "train_x": stack(tr_good, 0, np.zeros((0, *shape), np.uint8)),
            "train_sizes": stack(tr_good, 2, np.zeros((0, 2), np.int64)).astype(np.int64),
            "train_paths": np.array([str(p) for p, _ in tr_good], dtype=str),
            "test_x": stack(te_good, 0, np.zeros((0, *shape), np.uint8)),
            "test_masks": stack(te_good, 1, np.zeros((0, *shape[:2]), np.uint8)),
            "test_sizes": stack(te_good, 2, np.zeros((0, 2), np.int64)).astype(np.int64),
            "test_y": np.array([id_of[p] for p, _ in te_good], np.int64),
            "test_paths": np.array([str(p) for p, _ in te_good], dtype=str),
            # Failures are cached too, so a strict reload reports them without decoding again.
            "bad_paths": np.array([str(p) for p, _ in bad], dtype=str),
            "bad_msgs": np.array([str(e) for _, e in bad], dtype=str),
            # -1: no common scale (the cache refuses NaN entries).
            "scale": np.array(-1.0 if scale is None else scale, np.float64),
        }

    key = fingerprint(
        train_files + test_files + mask_files, "mvtec", str(base.resolve()), shape, classes, policy
    )
    h, w, c = shape
    schema = {
        "train_x": ("uint8", ("n", h, w, c)),
        "train_sizes": ("int64", ("n", 2)),
        "train_paths": ("str", ("n",)),
        "test_x": ("uint8", ("t", h, w, c)),
        "test_masks": ("uint8", ("t", h, w)),
        "test_sizes": ("int64", ("t", 2)),
        "test_y": ("int64", ("t",)),
        "test_paths": ("str", ("t",)),
        "bad_paths": ("str", ("b",)),
        "bad_msgs": ("str", ("b",)),
        "scale": ("float64", ()),
    }
    stem = f"mvtec-{base.name}-{'x'.join(map(str, shape))}-{policy}"
    arrays = cached_arrays(cache_dir, stem, key, build, schema)
    if arrays["bad_paths"].size:
        if not skip_corrupt:
            raise DataError(str(arrays["bad_msgs"][0]))
        logger.warning(
            "Skipped %d undecodable file(s) of MVTec AD %s, e.g. %s",
            arrays["bad_paths"].size,
            category,
            arrays["bad_paths"][0],
        )
    test_y = arrays["test_y"]
    if len(arrays["train_x"]) == 0 or not np.any(test_y == 0) or not np.any(test_y != 0):
        raise DataError(
            f"{base} needs decodable images in train/good, test/good and at least one "
            "test/<defect> folder"
        )
    padded = policy != "squash" and (
        np.any(arrays["train_sizes"] != shape[:2]) or np.any(arrays["test_sizes"] != shape[:2])
    )
    _log_geometry(base, shape, policy, arrays, padded)
    test_paths = tuple(str(p) for p in arrays["test_paths"])
    return SourceArrays(
        train_x=arrays["train_x"],
        train_y=np.zeros(len(arrays["train_x"]), np.int64),
        test_x=arrays["test_x"],
        test_y=test_y,
        class_names=tuple(classes),
        inlier=0,
        category=base.name,
        test_paths=test_paths,
        train_paths=tuple(str(p) for p in arrays["train_paths"]),
        test_masks=arrays["test_masks"] if with_masks else None,
        train_sizes=arrays["train_sizes"] if padded else None,
        test_sizes=arrays["test_sizes"] if padded else None,
        scale=float(arrays["scale"]) if float(arrays["scale"]) > 0 else None,
    )


def _log_geometry(base: Path, shape, policy: str, arrays, padded: bool) -> None:
    """One log line saying how the images were brought to the canvas (nothing is silent)."""
    sizes = np.concatenate([arrays["train_sizes"], arrays["test_sizes"]])
    if not sizes.size:
        return
    scale = float(arrays["scale"])
    logger.info(
        "MVTec-layout %s: %s to %dx%d%s; content sizes %d-%d x %d-%d px%s.",
        base.name,
        policy,
        shape[0],
        shape[1],
        f" (one factor {scale:.3f} for all images)" if scale > 0 else "",
        sizes[:, 0].min(),
        sizes[:, 0].max(),
        sizes[:, 1].min(),
        sizes[:, 1].max(),
        ", the rest of each canvas is mirrored padding that the evaluation ignores"
        if padded
        else "",
    )
