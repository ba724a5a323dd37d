"""The on-disk cache of decoded images, keyed by a fingerprint of the source files.

Decoding thousands of JPEG/PNG files (folders, zips, CelebA, MVTec AD) takes longer than a
training epoch on a small dataset, so loaders keep the decoded uint8 arrays in an ``.npz`` under
``--cache_dir`` (default ``$DROC_CACHE_DIR`` or ``~/.cache/deep_representation_one_class``),
named by a readable stem and the digest of the source files' paths, sizes and mtimes plus the
preprocessing (input shape). Also: reading already prepared TFDS datasets without downloading.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.utils import io

logger = logging.getLogger(__name__)

__all__ = ["CACHE_VERSION", "cached_arrays", "default_cache_dir", "fingerprint", "tfds_batches"]

# Bump when the cached arrays change meaning (preprocessing, keys), to invalidate old caches.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$DROC_CACHE_DIR`` if set, else ``~/.cache/deep_representation_one_class``."""
    env = os.environ.get("DROC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deep_representation_one_class"


def fingerprint(paths: Iterable[str | os.PathLike], *extra: object) -> str:
    """A hex digest of the files' paths, sizes and mtimes plus ``extra`` (e.g. input_shape).

    Cheap (one ``stat`` per file, no reading), and any added, removed, resized or rewritten
    file changes it.
    """
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for item in extra:
        h.update(repr(item).encode())
    for p in sorted(str(p) for p in paths):
        st = os.stat(p)
        h.update(f"\n{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cached_arrays(
    cache_dir: str | os.PathLike | None,
    stem: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Returns ``build()``'s arrays, reusing ``<cache_dir>/<stem>-<key[:24]>.npz`` if present.

    The file is written atomically (``utils.io``), so an interrupted run never leaves a
    truncated cache behind. An unreadable cache entry is rebuilt; an
    unwritable cache directory only costs a warning. Arrays must not be object arrays (the
    file is read with ``allow_pickle=False``).

    Args:
      cache_dir: the cache folder; None = :func:`default_cache_dir`; '' = no caching.
      stem: a readable file-name prefix, e.g. 'folder-airplane-32x32x3'.
      key: the digest identifying the source and the preprocessing (see :func:`fingerprint`).
      build: computes the arrays on a miss.
    """
    if cache_dir is not None and str(cache_dir) == "":
        return build()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    safe_stem = re.sub(r"[^0-9A-Za-z_.-]+", "_", stem)
    path = folder / f"{safe_stem}-{key[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            logger.warning("Ignoring unreadable cache file %s (%s); rebuilding it.", path, e)
    arrays = build()
    try:
        io.write_npz(str(path), **arrays)
        logger.info("Cached decoded images in %s", path)
    except OSError as e:
        logger.warning("Could not write the cache file %s (%s); continuing without it.", path, e)
    return arrays


def tfds_batches(name: str, data_dir: str | os.PathLike, split: str, batch_size: int = 1024):
    """Yields numpy batches (dicts) of an already prepared TFDS dataset; never downloads.

    tensorflow_datasets is imported here, lazily, so that the other loaders do not pay for it.

    Raises:
      DataError: the dataset is not prepared under ``data_dir``.
    """
    import tensorflow_datasets as tfds  # heavy import, only on this path

    try:
        ds = tfds.load(name, split=split, data_dir=str(data_dir), download=False)
    except Exception as e:  # tfds raises several unrelated types for "not prepared".
        raise DataError(
            f"TFDS dataset '{name}' (split '{split}') is not prepared in {data_dir}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    yield from tfds.as_numpy(ds.batch(batch_size))
