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
import math
import os
import zlib
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
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
PLUGIN = dict(
    kind="dataset",
    name="fmnistood",
    aliases=["fashion_mnistood"],
    label="f-MNIST",
    description="Fashion-MNIST, 10 classes, 28x28 gray zero-padded to 32x32x3",
    class_names=CLASS_NAMES,
    # New 28x28 images get the same 2-pixel zero border before the resize.
    preprocessing={"native_pad": (28, 28, 2)},
    impl="_load",
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
# The training images are 47 MB; a header announcing more than this is refused unread.
MAX_IDX_BYTES = 256 * 2**20


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if its name ends in .gz) into a native-order array.

    The header is read and checked first (magic number, dimensions, a payload of at most
    ``max_bytes``); then exactly the payload it announces is read, so a file of zeros or a
    header claiming gigabytes costs nothing.

    Raises:
      DataError: bad magic number, an implausible header, or a payload size that does not
        match the header.
    """
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(f"{path} is not an IDX file (bad magic number)")
            ndim = head[3]
            if not 1 <= ndim <= 4:
                raise DataError(f"{path} is not an IDX file ({ndim} dimensions)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path} is truncated (its IDX header is incomplete)")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            count = math.prod(dims)
            if count * dtype.itemsize > max_bytes:
                raise DataError(
                    f"{path}: the header claims shape {dims} "
                    f"({count * dtype.itemsize / 2**20:.0f} MB), more than the "
                    f"{max_bytes // 2**20} MB an IDX file of this dataset may hold"
                )
            raw = f.read(count * dtype.itemsize)
            trailing = f.read(1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) != count * dtype.itemsize or trailing:
        raise DataError(f"{path}: header says shape {dims} but the payload size does not match")
    arr = np.frombuffer(raw, dtype=dtype, count=count).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _check_pair(x: np.ndarray, y: np.ndarray, x_path: Path, y_path: Path) -> None:
    """Images [N, 28, 28] uint8 and labels [N] in 0..9, or DataError naming the file."""
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise DataError(f"{x_path} holds {x.dtype} {x.shape}, expected uint8 [N, 28, 28] images")
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and y.max() >= len(CLASS_NAMES)):
        raise DataError(f"{y_path} must hold one class id 0..9 per image, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{x_path} holds {len(x)} images but {y_path} holds {len(y)} labels")


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
            for split in ("train", "test"):
                x, y = f"{split}_x", f"{split}_y"
                _check_pair(arrays[x], arrays[y], paths[x], paths[y])
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
