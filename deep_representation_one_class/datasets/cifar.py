"""CIFAR-10 (``cifar10ood``), CIFAR-100 coarse (``cifar20ood``) and fine (``cifar100ood``).

Sources, in order: the python pickles in ``root`` (the batch folder itself, its parent, the
Keras 3 ``*-target/`` layout, or the ``.tar.gz`` archive, read in place without extracting);
a TFDS ``data_dir`` with a prepared ``cifar10``/``cifar100``. Without a root: the Keras cache
(``$KERAS_HOME`` or ``~/.keras``/datasets), then a ``keras.datasets`` download, attempted only
when the download host answers within a few seconds, so an offline machine fails fast.
The pickles are read with a restricted unpickler that only admits numpy array reconstruction:
a pickle can otherwise run arbitrary code when it is loaded.
Fix of reference bug: CIFAR-100 pickles are read with their real keys ``fine_labels`` /
``coarse_labels`` (the reference used ``labels``/``coarse`` and failed with a KeyError).
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
import socket
import tarfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
)
from deep_representation_one_class.datasets.cache import (
    tfds_batches,
)
from deep_representation_one_class.utils import io as io_utils

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The 20 superclasses as named in the paper's tables (spec 9.2).
CIFAR20_CLASSES = (
    "aquatic mammals", "fish", "flowers", "food containers", "fruit & vegetables",
    "household electrical devices", "household furniture", "insects", "large carnivores",
    "large man-made outdoor things", "large natural outdoor scenes",
    "large omnivores & herbivores", "medium-sized mammals", "non-insect invertebrates",
    "people", "reptiles", "small mammals", "trees", "vehicles 1", "vehicles 2",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

PLUGIN = [
    dict(
        kind="dataset",
        name="cifar10ood",
        label="CIFAR-10",
        description="CIFAR-10, 10 classes, 32x32x3",
        class_names=CIFAR10_CLASSES,
        impl="load_cifar10",
    ),
    dict(
        kind="dataset",
        name="cifar20ood",
        label="CIFAR-100 (20)",
        description="CIFAR-100 20 superclasses, 32x32x3",
        class_names=CIFAR20_CLASSES,
        # the official CIFAR-100 meta spellings of two superclasses
        category_aliases={"medium_mammals": "12", "large_man-made_outdoor_things": "9"},
        impl="load_cifar20",
    ),
    dict(
        kind="dataset",
        name="cifar100ood",
        label="CIFAR-100 (100 fine)",
        description="CIFAR-100 100 classes, 32x32x3",
        class_names=CIFAR100_CLASSES,
        impl="load_cifar100",
    ),
]

# Per source: folder name inside the archive, archive name, pickle files, TFDS name.
_LAYOUT = {
    "cifar10": {
        "dirname": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "tfds": "cifar10",
    },
    "cifar100": {
        "dirname": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ("train",),
        "test": ("test",),
        "tfds": "cifar100",
    },
}
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
# The largest genuine pickle (CIFAR-100 ``train``) is 155 MB; anything far larger is refused
# before it is read.
MAX_PICKLE_BYTES = 400 * 2**20
_ROW = 32 * 32 * 3  # bytes of one image: the 1024 red, then green, then blue values

_np_core = getattr(np, "_core", None) or np.core  # numpy >= 2 moved numpy.core to numpy._core


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's pickle constructor, limited to the empty placeholder genuine pickles use.

    ``_reconstruct(ndarray, (0,), b'b')`` is followed by ``__setstate__`` with the real shape
    and bytes (numpy checks that they match); a crafted pickle could otherwise ask here for an
    array of any size in a few bytes.
    """
    sizes_ok = isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)
    if subtype is not np.ndarray or not sizes_ok or math.prod(shape) > 1:
        raise pickle.UnpicklingError("array placeholder with a non-empty shape")
    return _np_core.multiarray._reconstruct(subtype, shape, dtype)


# Everything a numpy-array pickle (protocols 2-5, any numpy version) needs, and nothing else.
# Keys are what the pickle names; values are resolved here, so that loading never imports a
# module named by the file.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_core.multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_core.numeric._frombuffer,
    # Python 3 protocol-2 pickles encode bytes as _codecs.encode(str, 'latin1'); it only
    # converts a string, it cannot run code.
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays and plain containers.

    Raises:
      DataError: when the stream references any other global (``os.system``, ``eval``...);
        nothing named by the stream is imported or called.
    """

    def __init__(self, file: BinaryIO, label: str = "<stream>"):
        # encoding='bytes' reads the original Python 2 pickles (str -> bytes keys).
        super().__init__(file, encoding="bytes")
        self._label = label

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._label}: CIFAR pickles may "
                "only contain numpy arrays; the file is not a genuine CIFAR batch"
            ) from None


def load_pickle(stream: BinaryIO, label: str) -> dict[str, Any]:
    """Loads one CIFAR batch with :class:`RestrictedUnpickler`; bytes keys become str."""
    try:
        obj = RestrictedUnpickler(stream, label).load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, struct errors... all mean corrupt.
        raise DataError(f"cannot read CIFAR pickle {label}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{label} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _images_from_batch(batch: dict[str, Any], label: str) -> np.ndarray:
    if "data" not in batch:
        raise DataError(f"{label} has no 'data' entry; keys: {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim not in (1, 2):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{label}: 'data' is {what}, expected a uint8 array of image rows")
    if data.size % _ROW or (data.ndim == 2 and data.shape[1] != _ROW):
        raise DataError(
            f"{label}: 'data' has shape {data.shape}, not rows of {_ROW} bytes (32x32x3 images)"
        )
    # Rows are 3072 bytes: the 1024 red, then green, then blue values of a 32x32 image.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _labels_from_batch(batch: dict[str, Any], key: str, label: str, classes: int) -> np.ndarray:
    if key not in batch:
        raise DataError(f"{label} has no '{key}' entry; keys: {sorted(batch)}")
    try:
        labels = np.asarray(batch[key])
    except (ValueError, TypeError):
        labels = np.asarray(None)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{label}: '{key}' must be a list of integer class ids")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"{label}: '{key}' holds class ids {labels.min()}..{labels.max()}, expected "
            f"0..{classes - 1}"
        )
    return labels.astype(np.int64)


def _batch_arrays(batch: dict[str, Any], key: str, label: str, classes: int):
    """(images [N,32,32,3] uint8, labels [N] int64) of one batch; DataError naming ``label``
    when they do not pair up."""
    x = _images_from_batch(batch, label)
    y = _labels_from_batch(batch, key, label, classes)
    if len(x) != len(y):
        raise DataError(
            f"{label} holds {len(x)} images but {len(y)} labels; the file is damaged or not a "
            "CIFAR batch"
        )
    return x, y


def _find_pickle_source(base: Path, source: str) -> tuple[str, Path] | None:
    """('dir', folder) or ('tar', archive) holding the pickles of ``source``, or None."""
    lay = _LAYOUT[source]
    files = lay["train"] + lay["test"]
    if base.is_file() and base.name.endswith((".tar.gz", ".tgz", ".tar")):
        return ("tar", base)
    for folder in (base, base / lay["dirname"], base / f"{lay['dirname']}-target" / lay["dirname"]):
        if all((folder / f).is_file() for f in files):
            return ("dir", folder)
    if (base / lay["archive"]).is_file():
        return ("tar", base / lay["archive"])
    return None


def _check_size(size: int, label: str) -> None:
    if size > MAX_PICKLE_BYTES:
        raise DataError(
            f"{label} is {size / 2**20:.0f} MB, larger than any CIFAR batch "
            f"({MAX_PICKLE_BYTES // 2**20} MB at most); it is not a genuine CIFAR file"
        )


def _read_pickles(kind: str, path: Path, source: str) -> dict[str, list[tuple[str, dict]]]:
    """{'train': [(file label, batch dict)], 'test': [...]} read from a folder or in place from
    an archive; sizes are checked before anything is read."""
    lay = _LAYOUT[source]
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {"train": [], "test": []}
    if kind == "dir":
        for split in out:
            for name in lay[split]:
                label = str(path / name)
                try:
                    with open(path / name, "rb") as f:
                        _check_size(os.fstat(f.fileno()).st_size, label)
                        out[split].append((label, load_pickle(f, label)))
                except OSError as e:
                    raise DataError(f"cannot read {label}: {e.strerror}") from None
        return out
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for split in out:
                for name in lay[split]:
                    if name not in members:
                        raise DataError(f"archive {path} has no member '{name}'")
                    label = f"{path}:{name}"
                    _check_size(members[name].size, label)
                    data = tar.extractfile(members[name]).read()
                    out[split].append((label, load_pickle(io.BytesIO(data), label)))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {path}: {e}") from None
    return out


def is_online(host: tuple[str, int] = DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` succeeds within ``timeout`` seconds.

    The probe runs in a daemon thread so that a hanging DNS lookup (which ignores socket
    timeouts) cannot stall the caller either.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except Exception:  # any failure (DNS, refused, TLS port closed) means "offline"
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(home).expanduser() / "datasets"


def _from_keras(source: str, label_mode: str) -> tuple[np.ndarray, ...]:
    import keras  # heavy import, only on the download path

    if source == "cifar10":
        (tx, ty), (vx, vy) = keras.datasets.cifar10.load_data()
    else:
        (tx, ty), (vx, vy) = keras.datasets.cifar100.load_data(label_mode=label_mode)
    return tx, ty.reshape(-1), vx, vy.reshape(-1)


def _from_tfds(data_dir: Path, source: str, label_key: str) -> tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        xs, ys = [], []
        for batch in tfds_batches(_LAYOUT[source]["tfds"], data_dir, split):
            xs.append(batch["image"])
            ys.append(batch[label_key])
        if not xs:
            raise DataError(f"TFDS {_LAYOUT[source]['tfds']} split '{split}' is empty")
        out += [np.concatenate(xs), np.concatenate(ys).astype(np.int64)]
    return tuple(out)


def load_arrays(root: str | os.PathLike | None, source: str, label_mode: str = "fine"):
    """(train_x [N,32,32,3] uint8, train_y int64, test_x, test_y) of CIFAR-10 or CIFAR-100.

    Args:
      root: a folder (or archive) with the python pickles, or a TFDS data_dir; None = the Keras
        cache, then a download if online.
      source: 'cifar10' or 'cifar100'.
      label_mode: for CIFAR-100, 'fine' (100 classes) or 'coarse' (20 superclasses).
    """
    lay = _LAYOUT[source]
    pickle_key = "labels" if source == "cifar10" else f"{label_mode}_labels"
    if root is None:
        bases, where = [_keras_cache_dir()], f"the Keras cache {_keras_cache_dir()}"
    else:
        bases, where = [Path(root).expanduser()], str(Path(root).expanduser())
        if not bases[0].exists():
            raise DataError(f"CIFAR root {bases[0]} does not exist")
    classes = 10 if source == "cifar10" else (20 if label_mode == "coarse" else 100)
    for base in bases:
        found = _find_pickle_source(base, source)
        if found is not None:
            batches = _read_pickles(*found, source)
            arrays = []
            for split in ("train", "test"):
                pairs = [_batch_arrays(b, pickle_key, lab, classes) for lab, b in batches[split]]
                arrays.append(np.concatenate([x for x, _ in pairs]))
                arrays.append(np.concatenate([y for _, y in pairs]))
            return tuple(arrays)
    if root is not None and (Path(root).expanduser() / lay["tfds"]).is_dir():
        tfds_key = "label" if (source == "cifar10" or label_mode == "fine") else "coarse_label"
        return _from_tfds(Path(root).expanduser(), source, tfds_key)
    hint = (
        f"put {lay['archive']} (or its extracted {lay['dirname']}/) in a folder and pass "
        "root=<that folder>"
    )
    if root is not None:
        raise DataError(f"no {source} pickles, archive or TFDS data found in {where}; {hint}")
    if not is_online():
        raise DataError(f"{source} is not in {where} and this machine is offline; {hint}")
    return _from_keras(source, label_mode)


def write_pickles(
    out: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> None:
    """Writes CIFAR-10 arrays as ``cifar-10-batches-py`` in the original pickle format.

    ``train``/``test`` are (images [N,32,32,3] uint8, labels); five ``data_batch_*`` files and a
    ``test_batch`` with bytes keys and channel-major rows, each written atomically, so that
    ``--dataset=cifar10ood --root=<parent of out>`` reads them (e.g. a CIFAR-10 image-folder
    copy turned into the layout the paper's protocol and aggregated tables expect).
    """
    os.makedirs(out, exist_ok=True)

    def payload(x: np.ndarray, y: np.ndarray) -> bytes:
        x = np.asarray(x, np.uint8)
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
            raise DataError(f"CIFAR pickles need [N,32,32,3] images with N labels, got {x.shape}")
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        labels = [int(v) for v in np.asarray(y).reshape(-1)]
        return pickle.dumps({b"data": rows, b"labels": labels}, protocol=2)

    train_x, train_y = train
    for i, part in enumerate(np.array_split(np.arange(len(train_x)), 5)):
        io_utils.write_bytes(
            os.path.join(out, f"data_batch_{i + 1}"), payload(train_x[part], train_y[part])
        )
    io_utils.write_bytes(os.path.join(out, "test_batch"), payload(*test))


def _make_loader(source: str, label_mode: str, class_names: tuple[str, ...]):
    def load(root, *, category, input_shape, **_unused) -> SourceArrays:
        train_x, train_y, test_x, test_y = load_arrays(root, source, label_mode)
        return SourceArrays(
            train_x=images.resize_images(train_x, input_shape),
            train_y=np.asarray(train_y, np.int64).reshape(-1),
            test_x=images.resize_images(test_x, input_shape),
            test_y=np.asarray(test_y, np.int64).reshape(-1),
            class_names=class_names,
            inlier=int(category),
            category=category,
        )

    return load


load_cifar10 = _make_loader("cifar10", "fine", CIFAR10_CLASSES)
load_cifar20 = _make_loader("cifar100", "coarse", CIFAR20_CLASSES)
load_cifar100 = _make_loader("cifar100", "fine", CIFAR100_CLASSES)
