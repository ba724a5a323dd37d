"""Atomic file writes and the run-folder marker.

Every output is written to a temporary file in the destination folder and renamed into place,
so a crash never leaves a half-written ``summary.json``, ``config.json`` or ``embeddings.npz``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

RUN_MARKER = ".droc_run"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_default)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def write_npz(path: str, **arrays: np.ndarray) -> None:
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
