"""The one atomic-write helper and checked reads of run files.

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
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.errors import UserError

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


fsync_dir = _fsync_dir


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


class OutputExistsError(UserError, FileExistsError):
    """An output file exists (or appeared while the command ran) and may not be replaced."""


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Output:
    """One output file of a command that must never silently replace a file: refused when it
    exists without ``--overwrite`` (checked with ``check`` before any work), written aside and
    renamed into place (``open``), and a writer that got there first while this command ran
    is noticed instead of being lost without a word.

    Without ``overwrite`` the file appears with ``os.link`` (fails if the name exists), so of
    two commands writing the same new file one succeeds and the other is refused naming the
    file; with ``overwrite`` the last writer wins and says that it replaced another's file.
    """

    def __init__(self, path: str, overwrite: bool = False, flag: str = "--out"):
        self.path = path
        self.overwrite = overwrite
        self.flag = flag
        self._seen = _identity(path)

    def check(self) -> Output:
        """Raises OutputExistsError when the file exists and ``overwrite`` is off."""
        if os.path.lexists(self.path) and not self.overwrite:
            raise OutputExistsError(
                f"{self.flag} {self.path} exists; add --overwrite to replace it"
            )
        self._seen = _identity(self.path)
        return self

    @contextlib.contextmanager
    def open(self, suffix: str = "") -> Iterator[str]:
        """Yields a temporary path next to the file; on success puts it into place."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
        os.close(fd)
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)
            if self.overwrite:
                if _identity(self.path) != self._seen:
                    logging.getLogger(__name__).warning(
                        "%s was written by another command while this one ran; this "
                        "command's result replaces it.",
                        self.path,
                    )
                os.replace(tmp, self.path)
            else:
                self._place_new(tmp)
            _fsync_dir(folder)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _place_new(self, tmp: str) -> None:
        try:
            os.link(tmp, self.path)
            return
        except FileExistsError:
            pass
        except OSError:
            # No hard links on this mount: an exclusive create, then the content renamed over.
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
            except FileExistsError:
                pass
            else:
                os.replace(tmp, self.path)
                return
        raise OutputExistsError(
            f"{self.flag} {self.path} was written by another command while this one ran; its "
            "file is kept and this result was not written (rerun with --overwrite to replace it)"
        )


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


def check_npz_headers(path: str) -> None:
    """Refuses an ``.npz`` whose arrays claim more data than the file holds, reading only the
    ``.npy`` headers (a tampered header would otherwise make ``np.load`` try to allocate
    hundreds of GiB, a ``MemoryError`` that names nothing).

    Raises:
      CorruptFileError: naming the file and the array.
    """
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    header = f.tell()
                if dtype.hasobject:
                    continue  # refused by allow_pickle=False when read
                count = 1
                for dim in shape:
                    count *= int(dim)
                if count * dtype.itemsize > info.file_size - header:
                    name = info.filename.removesuffix(".npy")
                    raise CorruptFileError(
                        f"{path}: array '{name}' claims shape {tuple(shape)} of {dtype} "
                        f"({count * dtype.itemsize / 2**30:.3g} GiB) but the file holds "
                        f"{info.file_size - header} bytes of it; restore it or rerun the command "
                        "that writes it"
                    )
    except CorruptFileError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptFileError(
            f"{path} is not a readable .npz file ({why}); restore it or rerun the command that "
            "writes it"
        ) from None


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
        of a ``rows`` group disagree (a label array shorter than the features), or an array
        header claims more data than the file holds (``check_npz_headers``).
    """
    check_npz_headers(path)
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
