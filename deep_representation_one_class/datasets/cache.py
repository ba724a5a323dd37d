"""The on-disk cache of decoded images, keyed by a fingerprint of the source files.

Decoding thousands of JPEG/PNG files (folders, zips, CelebA, MVTec AD) takes longer than a
training epoch on a small dataset, so loaders keep the decoded uint8 arrays in an ``.npz`` under
``--cache_dir`` (default ``$DROC_CACHE_DIR`` or ``~/.cache/deep_representation_one_class``),
named by a readable stem and the digest of the source files' paths and contents (a BLAKE2b hash
of every byte: a file rewritten with its size and mtime kept is still noticed) plus the
preprocessing (input shape). A cache file is validated before use (recorded fingerprint, array
names, dtypes, shapes, finite values) and rebuilt with a warning when it does not match.
Also: reading already prepared TFDS datasets without downloading.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from deep_representation_one_class.datasets.base import DataError
from deep_representation_one_class.utils import io

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "Schema",
    "cached_arrays",
    "check_arrays",
    "content_digest",
    "default_cache_dir",
    "fingerprint",
    "tfds_batches",
]

# Bump when the cached arrays change meaning (preprocessing, keys), to invalidate old caches.
# 2: the file records its full source fingerprint; large images are decoded at reduced size.
# 3: content fingerprints; EXIF orientation; 16-bit by bit depth; masks any non-zero; TIFF.
CACHE_VERSION = 3
# The array inside a cache file that records the full fingerprint it was built for.
_KEY = "__fingerprint__"
# Array name -> (dtype name or "str", shape of exact sizes and shared size letters).
Schema = Mapping[str, tuple[str, tuple[int | str, ...]]]


def default_cache_dir() -> Path:
    """``$DROC_CACHE_DIR`` if set, else ``~/.cache/deep_representation_one_class``."""
    env = os.environ.get("DROC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deep_representation_one_class"


def content_digest(path: str | os.PathLike | bytes) -> str:
    """BLAKE2b-128 of a regular file's bytes (read in 1 MiB blocks; hashlib releases the GIL,
    so the threads of ``fingerprint`` hash in parallel). Special files are not opened (a pipe
    would block): their digest is their kind.

    Raises:
      DataError: the file vanished or cannot be read.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return f"special:{stat.S_IFMT(st.st_mode)}"
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise DataError(f"cannot read {os.fsdecode(path)}: {e.strerror}") from None
    return h.hexdigest()


def fingerprint(paths: Iterable[str | os.PathLike], *extra: object) -> str:
    """A hex digest of the files' paths and contents plus ``extra`` (e.g. input_shape).

    Every byte is hashed (``content_digest``): a cached decode must never be served for a file
    whose content changed, even when its size and mtime were kept (``cp --preserve``, ``rsync
    -t``, tools that restore timestamps). Hashing reads each file once, which costs far less
    than decoding it (about 1 GB/s per core). Paths are hashed as bytes, so names that are not
    valid UTF-8 work too.

    Raises:
      DataError: a file vanished or cannot be read (dangling link, link loop).
    """
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for item in extra:
        h.update(repr(item).encode("utf-8", "surrogateescape"))
    files = sorted(os.fsencode(p) for p in paths)
    if len(files) < 32:
        digests = [content_digest(p) for p in files]
    else:
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            digests = list(pool.map(content_digest, files))
    for p, digest in zip(files, digests):
        h.update(b"\n" + os.path.abspath(p) + f"\t{digest}".encode())
    return h.hexdigest()


def check_arrays(arrays: Mapping[str, np.ndarray], schema: Schema) -> str | None:
    """The first way ``arrays`` differ from ``schema`` (None when they match).

    Args:
      arrays: name -> array, as read from a cache file.
      schema: name -> (dtype, shape). dtype is a numpy dtype name or ``"str"`` (any unicode
        width); a shape entry is an exact size or a letter naming a size that must agree
        across the arrays (``"n"`` for the image count). Extra arrays are a mismatch too.
    """
    if set(arrays) != set(schema):
        return f"arrays {sorted(arrays)}, expected {sorted(schema)}"
    sizes: dict[str, int] = {}
    for name, (dtype, shape) in schema.items():
        a = arrays[name]
        if (a.dtype.kind != "U") if dtype == "str" else (a.dtype != np.dtype(dtype)):
            return f"'{name}' has dtype {a.dtype}, expected {dtype}"
        if a.ndim != len(shape):
            return f"'{name}' has shape {a.shape}, expected {len(shape)} dimensions"
        for dim, want in zip(a.shape, shape):
            want = sizes.setdefault(want, dim) if isinstance(want, str) else want
            if dim != want:
                return f"'{name}' has shape {a.shape}, which does not fit {shape}"
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            return f"'{name}' holds NaN or Inf"
    return None


def cached_arrays(
    cache_dir: str | os.PathLike | None,
    stem: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    schema: Schema | None = None,
) -> dict[str, np.ndarray]:
    """Returns ``build()``'s arrays, reusing ``<cache_dir>/<stem>-<key[:24]>.npz`` if valid.

    A cache file is trusted only if it is a readable ``.npz`` that records the same source
    fingerprint (``key``, in full) and holds exactly the ``schema``'s arrays with their dtypes
    and consistent shapes; otherwise it is rebuilt with a warning naming the file. The file is
    written atomically (``utils.io``), so an interrupted run never leaves a truncated cache
    behind; an unwritable cache directory only costs a warning. Arrays must not be object
    arrays (the file is read with ``allow_pickle=False``).

    Args:
      cache_dir: the cache folder; None = :func:`default_cache_dir`; '' = no caching.
      stem: a readable file-name prefix, e.g. 'folder-airplane-32x32x3'.
      key: the digest identifying the source and the preprocessing (see :func:`fingerprint`).
      build: computes the arrays on a miss.
      schema: what ``build`` returns (see :func:`check_arrays`); None checks only the
        recorded fingerprint (every loader of this package passes one).
    """
    if cache_dir is not None and str(cache_dir) == "":
        return build()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    safe_stem = re.sub(r"[^0-9A-Za-z_.-]+", "_", stem)
    path = folder / f"{safe_stem}-{key[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            why = f"unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        else:
            stored = arrays.pop(_KEY, None)
            why = (
                "recorded for other source files"
                if stored is None or stored.shape != () or str(stored) != key
                else (check_arrays(arrays, schema) if schema is not None else None)
            )
            if why is None:
                return arrays
        logger.warning("Ignoring the cache file %s: %s; rebuilding it.", path, why)
    arrays = build()
    try:
        io.write_npz(str(path), **arrays, **{_KEY: np.array(key)})
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
