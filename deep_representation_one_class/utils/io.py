"""The one atomic-write helper, checked reads of run files, and the run-folder marker.

Every output is written to a temporary file in the destination folder, flushed to disk
(``fsync``) and renamed into place, then the folder entry is flushed too, so a crash or a power
cut never leaves a half-written ``summary.json``, ``config.json`` or ``embeddings.npz``: a reader
sees the old file or the new one. Files get mode 0644 (``mkstemp`` creates 0600).

Reads of run files (``read_json``, ``load_npz``) turn a truncated, tampered or foreign file into
one ``CorruptFileError`` naming the file, instead of a ``JSONDecodeError``/``BadZipFile``/
``KeyError`` from deep inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.errors import UserError

RUN_MARKER = ".droc_run"
FILE_MODE = 0o644


class CorruptFileError(UserError, ValueError):
    """A file the package wrote is unreadable or lacks what it should hold."""


def _fsync_dir(folder: str) -> None:
    # The rename is durable only once the directory entry is on disk. Some file systems
    # cannot open or fsync a directory; the data itself is already synced then.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; on success flushes it and renames it onto
    ``path``; on failure removes it. The caller writes (and closes) the temporary file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically."""
    with atomic_path(path, os.path.splitext(path)[1]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` atomically."""
    with atomic_path(path, os.path.splitext(path)[1]) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: str, expect: type = object) -> Any:
    """Reads a JSON file written by the package.

    Args:
      path: the file.
      expect: the type the top-level value must have (e.g. ``dict``).

    Raises:
      CorruptFileError: not UTF-8 JSON, or not of type ``expect``.
      OSError: the file cannot be opened.
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(
            f"{path} is not valid JSON ({str(e).splitlines()[0]}); restore it or rerun the "
            "command that writes it"
        ) from None
    if not isinstance(value, expect):
        raise CorruptFileError(
            f"{path} holds a JSON {type(value).__name__}, expected a {expect.__name__}"
        )
    return value


def write_npz(path: str, **arrays: np.ndarray) -> None:
    """Writes arrays to an uncompressed ``.npz`` atomically."""
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_npz(
    path: str, required: Sequence[str] = (), rows: Sequence[Sequence[str]] = ()
) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` file (never unpickling objects).

    Args:
      path: the file.
      required: keys that must be present.
      rows: groups of keys whose arrays must have the same number of rows (e.g. the test
        features and the test labels); keys absent from the file are ignored here.

    Raises:
      CorruptFileError: not a readable ``.npz``, a ``required`` key is missing, or the arrays
        of a ``rows`` group disagree (a label array shorter than the features).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptFileError(
            f"{path} is not a readable .npz file ({why}); restore it or rerun the command that "
            "writes it"
        ) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise CorruptFileError(
            f"{path} lacks {', '.join(missing)} (has {', '.join(sorted(arrays)) or 'nothing'}); "
            "restore it or rerun the command that writes it"
        )
    for group in rows:
        counts = {k: (arrays[k].shape[0] if arrays[k].ndim else None) for k in group if k in arrays}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{k} {n}" for k, n in counts.items())
            raise CorruptFileError(
                f"{path} is inconsistent (rows: {shown}); restore it or rerun the command that "
                "writes it"
            )
    return arrays
