"""Kaggle Dogs vs. Cats (``dogvscatood``, alias ``dvcood``) at 64x64x3.

Sources, in order, in ``root`` or ``root/dogs-vs-cats``: the prepared ``train_64x64.npz``
(``image`` [N,64,64,3] uint8, ``label`` cat=0 dog=1, written by ``scripts/prepare_dogvscat.py``),
the extracted ``train/`` folder of ``cat.N.jpg``/``dog.N.jpg``, or the Kaggle ``train.zip`` read
in place. Decoded zips/folders are cached (see ``base.cached_arrays``).
Reference behaviour: the shorter side is resized to 64 with an area (box) filter and the centre
64x64 is cropped; the images are in the order of ``sorted(os.listdir(...))``, i.e. sorted by
file name as text (``cat.0, cat.1, cat.10, cat.100, ...``), and per class a seed-0 permutation
of that order puts the first 10,000 images (80%) in train and the remaining 2,500 in test;
category 0 = cat is the inlier, 1 = dog. (Versions before 0.2 sorted by number, which gave a
different split: only about 19% of the reference's test cats.)
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
)
from deep_representation_one_class.datasets.cache import (
    cached_arrays,
    fingerprint,
)
from deep_representation_one_class.utils import io

CLASS_NAMES = ("cat", "dog")
NATIVE_SHAPE = (64, 64, 3)
PLUGIN = dict(
    kind="dataset",
    name="dogvscatood",
    aliases=["dvcood"],
    label="Cat-vs-Dog",
    description="Kaggle Dogs vs. Cats, 2 classes (0=cat, 1=dog), 64x64x3",
    class_names=CLASS_NAMES,
    input_shape=NATIVE_SHAPE,
    # cover_and_crop to the native 64x64, then the resize to the run's input shape.
    preprocessing={"cover_crop": (64, 64)},
    impl="_load",
)
NPZ_NAME = "train_64x64.npz"
# Marks a prepared .npz whose images are in the reference's (file-name text) order.
ORDER = "sorted-file-names"
_NAME_RE = re.compile(r"(?:^|/)(cat|dog)\.(\d+)\.jpe?g$", re.IGNORECASE)
_CHUNK = 1024  # images read from a zip per batch handed to the decoding threads


def cover_and_crop(img: Image.Image, size_hw: tuple[int, int]) -> Image.Image:
    """Resizes the shorter side to cover ``size_hw`` (box filter), then centre-crops to it.

    Reference behaviour: the reference used OpenCV INTER_AREA, which Pillow's BOX filter
    matches for downscaling (both average the covered source pixels).
    """
    h, w = size_hw
    scale = max(h / img.height, w / img.width)
    new_w = max(w, round(img.width * scale))
    new_h = max(h, round(img.height * scale))
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), resample=Image.Resampling.BOX)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    return img.crop((left, top, left + w, top + h))


def _label(name: str) -> int:
    return CLASS_NAMES.index(_NAME_RE.search(name).group(1).lower())


def _sort_key(name: str) -> str:
    # Reference behaviour: sorted(os.listdir(...)), plain text order of the file names.
    return os.path.basename(name)


def find_source(root: str | os.PathLike) -> tuple[str, Path]:
    """('npz' | 'dir' | 'zip', path) of the best available source under ``root``.

    Raises:
      DataError: nothing recognisable is there.
    """
    base = Path(root).expanduser()
    if base.is_file() and base.suffix.lower() in (".zip", ".npz"):
        return (base.suffix.lower()[1:], base)
    if not base.is_dir():
        raise DataError(f"Dogs-vs-Cats root {base} does not exist")
    for folder in (base, base / "dogs-vs-cats"):
        if (folder / NPZ_NAME).is_file():
            return ("npz", folder / NPZ_NAME)
        train = folder / "train"
        if train.is_dir() and any(_NAME_RE.search(p.name) for p in train.iterdir()):
            return ("dir", train)
        if (folder / "train.zip").is_file():
            return ("zip", folder / "train.zip")
    raise DataError(
        f"no Dogs-vs-Cats data in {base}: expected dogs-vs-cats/{NPZ_NAME} (from "
        "scripts/prepare_dogvscat.py), the Kaggle train.zip, or its extracted train/ folder of "
        "cat.N.jpg/dog.N.jpg"
    )


def decode_source(kind: str, path: Path, input_shape=NATIVE_SHAPE) -> dict[str, np.ndarray]:
    """Decodes every cat/dog JPEG of a zip or folder: {'image': [N,H,W,C] uint8, 'label': [N]}.

    Images are in the reference's order, sorted by file name as text, which fixes the split.

    Raises:
      DataError: no cat/dog images, or an undecodable one.
    """
    size_hw = (int(input_shape[0]), int(input_shape[1]))

    def decode(item: tuple[str, bytes | str]) -> np.ndarray:
        name, src = item
        return images.decode_image(
            src, input_shape, name=name, transform=lambda im: cover_and_crop(im, size_hw)
        )

    decoded: list[np.ndarray] = []
    if kind == "dir":
        names = sorted((p.name for p in path.iterdir() if _NAME_RE.search(p.name)), key=_sort_key)
        decoded = images.map_threaded(decode, [(str(path / n), str(path / n)) for n in names])
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted((n for n in zf.namelist() if _NAME_RE.search(n)), key=_sort_key)
                for start in range(0, len(names), _CHUNK):
                    # Read serially (one file handle), decode in parallel.
                    chunk = [(f"{path}:{n}", zf.read(n)) for n in names[start : start + _CHUNK]]
                    decoded += images.map_threaded(decode, chunk)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"cannot read zip {path}: {e}") from None
    if not names:
        raise DataError(f"{path} contains no cat.N.jpg / dog.N.jpg images")
    labels = np.array([_label(n) for n in names], dtype=np.int64)
    shape = (0, *input_shape)
    return {"image": np.stack(decoded) if decoded else np.zeros(shape, np.uint8), "label": labels}


def split_per_class(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): per class, 80% of a seed-0 permutation to train, the rest to test.

    Reference behaviour: the split is fixed (seed 0) whatever the run's seed; 80% is the
    reference's 10,000 of 12,500 images per class. ``np.random.RandomState(0)`` reproduces the
    legacy-RNG permutations of the reference's ``np.random.seed(0)`` without touching the global
    RNG; the classes are permuted in order cat, dog from the same stream (an assumption: the
    reference's exact call sequence could not be checked).
    """
    rs = np.random.RandomState(0)
    train, test = [], []
    for label in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == label)
        perm = idx[rs.permutation(idx.size)]
        n_train = (4 * idx.size) // 5
        train.append(perm[:n_train])
        test.append(perm[n_train:])
    return np.concatenate(train), np.concatenate(test)


def load_arrays(root, input_shape, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(images [N,H,W,C] uint8, labels [N] int64) of the whole Kaggle training set."""
    if root is None:
        raise DataError(
            "dogvscatood needs root=<folder with dogs-vs-cats/train_64x64.npz, train.zip or "
            "train/> (download train.zip from kaggle.com/c/dogs-vs-cats)"
        )
    kind, path = find_source(root)
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                x, y = z["image"], z["label"]
                order = str(z["order"]) if "order" in z.files else ""
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {path} (expected arrays 'image', 'label'): {e}") from None
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            raise DataError(f"{path}: 'image' is {x.dtype} {x.shape}, expected uint8 [N, H, W, 3]")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x) or y.dtype.kind not in "iu" or not np.isin(y, (0, 1)).all():
            raise DataError(
                f"{path}: 'label' must hold one 0 (cat) or 1 (dog) per image, got {y.dtype} "
                f"{y.shape} for {len(x)} images"
            )
        if order != ORDER:
            raise DataError(
                f"{path} was prepared by an older version, whose image order gives another "
                "train/test split than the reference; run scripts/prepare_dogvscat.py again"
            )
        return images.resize_images(x, input_shape), y.astype(np.int64)
    files = [p for p in path.iterdir() if _NAME_RE.search(p.name)] if kind == "dir" else [path]
    # "text-order": decoded arrays of versions that sorted by number must not be reused.
    key = fingerprint(files, "dogvscat", "text-order", tuple(input_shape))
    stem = f"dogvscat-{'x'.join(map(str, input_shape))}"
    h, w, c = (int(v) for v in input_shape)
    schema = {"image": ("uint8", ("n", h, w, c)), "label": ("int64", ("n",))}
    arrays = cached_arrays(
        cache_dir, stem, key, lambda: decode_source(kind, path, input_shape), schema
    )
    return arrays["image"], arrays["label"].astype(np.int64)


def _load(root, *, category, input_shape, cache_dir=None, **_unused) -> SourceArrays:
    x, y = load_arrays(root, input_shape, cache_dir)
    train_idx, test_idx = split_per_class(y)
    return SourceArrays(
        train_x=x[train_idx],
        train_y=y[train_idx],
        test_x=x[test_idx],
        test_y=y[test_idx],
        class_names=CLASS_NAMES,
        inlier=int(category),
        category=category,
    )


def prepare_npz(source: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Writes ``out_path`` (.npz with 'image' [N,64,64,3] uint8 and 'label') atomically.

    Args:
      source: the Kaggle ``train.zip``, the extracted ``train/`` folder, or a folder that
        contains either.
      out_path: the .npz to write (e.g. ``$DATA_DIR/dogs-vs-cats/train_64x64.npz``).
    """
    src = Path(source).expanduser()
    if src.is_dir() and any(_NAME_RE.search(p.name) for p in src.iterdir()):
        kind, path = "dir", src
    else:
        kind, path = find_source(src)
        if kind == "npz":
            raise DataError(f"{path} is already a prepared npz; pass the zip or the folder")
    arrays = decode_source(kind, path, NATIVE_SHAPE)
    out = Path(out_path).expanduser()
    io.write_npz(str(out), **arrays, order=np.array(ORDER))
    return out
