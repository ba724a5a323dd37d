"""Fashion-MNIST (``fmnistood``, alias ``fashion_mnistood``) from the IDX files or a TFDS data_dir.

Sources, in order: the four original IDX files (``.gz`` or uncompressed) in ``root`` (or in
``root/fashion_mnist``, ``root/fashion-mnist``); a TFDS ``data_dir`` holding a prepared
``fashion_mnist/``. Without a root: the copy shipped inside the package
(``deep_representation_one_class/data/fashion_mnist``, package data of the wheel, so an
installed package finds it from any working directory) and Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``). Nothing is downloaded.
Reference behaviour: the 28x28 images are zero-padded by 2 px to 32x32 and the gray channel is
tiled to 3 channels (spec 7.3).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    DatasetSpec,
    SourceArrays,
    register_dataset,
)
from deep_representation_one_class.datasets.cache import (
    tfds_batches,
)

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "fashion_mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if its name ends in .gz) into a native-order array.

    Raises:
      DataError: bad magic number or a payload size that does not match the header.
    """
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (its IDX header is incomplete)")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"{path}: header says shape {dims} but the payload size does not match")
    arr = np.frombuffer(raw, dtype=dtype, offset=header, count=count).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _idx_paths(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (each .gz or plain), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _missing_message(where: str) -> str:
    return (
        f"Fashion-MNIST not found: expected {', '.join(f'{s}.gz' for s in IDX_FILES.values())} "
        f"in {where} (or a TFDS data_dir with fashion_mnist/); get them from "
        "https://github.com/zalandoresearch/fashion-mnist, or `apt-get install "
        f"dataset-fashion-mnist` which puts them in {SYSTEM_DIR}"
    )


def _from_tfds(data_dir: Path) -> tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        xs, ys = [], []
        for batch in tfds_batches("fashion_mnist", data_dir, split):
            xs.append(batch["image"])
            ys.append(batch["label"])
        if not xs:
            raise DataError(f"TFDS fashion_mnist split '{split}' in {data_dir} is empty")
        out += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(out)


def load_arrays(root: str | os.PathLike | None) -> tuple[np.ndarray, ...]:
    """(train_x [60000,28,28], train_y, test_x [10000,28,28], test_y) at native resolution."""
    if root is None:
        candidates = [SHIPPED_DIR, SYSTEM_DIR]
        where = f"{SHIPPED_DIR} or {SYSTEM_DIR}"
    else:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise DataError(
                f"Fashion-MNIST root {base} is not a directory; " + _missing_message("that folder")
            )
        candidates = [base, base / "fashion_mnist", base / "fashion-mnist"]
        where = str(base)
    for folder in candidates:
        paths = _idx_paths(folder)
        if paths is not None:
            arrays = {k: read_idx(p) for k, p in paths.items()}
            return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]
    if root is not None and (Path(root).expanduser() / "fashion_mnist").is_dir():
        return _from_tfds(Path(root).expanduser())
    raise DataError(_missing_message(where))


def _load(root, *, category, input_shape, **_unused) -> SourceArrays:
    train_x, train_y, test_x, test_y = load_arrays(root)

    def prep(x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1).astype(np.uint8)
        # Reference behaviour: zero-pad 28x28 -> 32x32 (not a resize), then tile to 3 channels.
        x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        return images.resize_images(x, input_shape)

    return SourceArrays(
        train_x=prep(train_x),
        train_y=train_y.astype(np.int64).reshape(-1),
        test_x=prep(test_x),
        test_y=test_y.astype(np.int64).reshape(-1),
        class_names=CLASS_NAMES,
        inlier=int(category),
        category=category,
    )


SPEC = register_dataset(
    DatasetSpec(
        name="fmnistood",
        categories=tuple(str(i) for i in range(10)),
        default_input_shape=(32, 32, 3),
        loader=_load,
        description="Fashion-MNIST, 10 classes, 28x28 gray zero-padded to 32x32x3",
    ),
    "fashion_mnistood",
    class_names=CLASS_NAMES,
)
