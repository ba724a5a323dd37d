"""Finished phases of a patch evaluation, kept in ``<run>/eval_cache/`` to resume after a cut.

A dense evaluation of an MVTec-size category runs for minutes (tens of minutes on a slow
machine): the window features of the bank, the test scores, the synthetic check, the baselines.
If the process is killed (a time limit, a preempted node), the rerun of the same command
restores the last checkpoint, skips training and evaluates again; with this cache it reloads
every phase that had finished instead of extracting it again.

Each phase is one file written atomically when the phase ends (``utils.io``), so a cut inside
a phase loses that phase only. ``key.json`` fingerprints what the results depend on: the
model's weights (a SHA-256 of every variable), the run's settings and the data's shapes; a
cache with another key (retrained weights, changed settings) is emptied before use. The
evaluation deletes the folder once it has returned all its results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from deep_representation_one_class.utils import io, run_folder

logger = logging.getLogger(__name__)

__all__ = ["CACHE_DIR", "PhaseCache", "fingerprint"]

CACHE_DIR = run_folder.EVAL_CACHE
_KEY = run_folder.EVAL_CACHE_KEY
_VERSION = 1


def fingerprint(model, cfg, data) -> dict[str, Any]:
    """What a patch evaluation's results depend on (JSON-serialisable)."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        digest.update(str((w.path if hasattr(w, "path") else w.name, value.shape)).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    settings = cfg.to_dict()
    for k in ("model_dir", "report", "root", "cache_dir", "strategy", "force_init"):
        settings.pop(k, None)  # where things are, not what is computed
    holdout = getattr(data, "holdout_x", None)
    return {
        "version": _VERSION,
        "weights_sha256": digest.hexdigest(),
        "settings": json.loads(json.dumps(settings, default=list)),
        "shapes": {
            "cls": list(data.cls_x.shape),
            "test": list(data.test_x.shape),
            "holdout": list(holdout.shape) if holdout is not None else None,
        },
    }


class PhaseCache:
    """Phase results of one evaluation (a no-op without a run folder).

    Args:
      run_dir: the run folder, or None (nothing is cached).
      key: ``fingerprint(...)`` of this evaluation.
    """

    def __init__(self, run_dir: str | None, key: dict[str, Any]):
        self.path = run_folder.path(run_dir, CACHE_DIR) if run_dir else None
        self.reused: list[str] = []
        if self.path is None:
            return
        key_path = os.path.join(self.path, _KEY)
        old = None
        if os.path.isfile(key_path):
            try:
                old = io.read_json(key_path, expect=dict)
            except (io.CorruptFileError, OSError):
                old = None
        if old != json.loads(json.dumps(key)):
            if os.path.isdir(self.path):
                logger.info("%s holds another evaluation's phases; starting afresh.", self.path)
                shutil.rmtree(self.path)
            os.makedirs(self.path, exist_ok=True)
            io.write_json(key_path, key)

    def _file(self, name: str, ext: str) -> str | None:
        return os.path.join(self.path, f"{name}.{ext}") if self.path else None

    def load_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays a finished phase saved, or None (not finished, or unreadable)."""
        path = self._file(name, "npz")
        if path is None or not os.path.isfile(path):
            return None
        try:
            arrays = io.load_npz(path)
        except io.CorruptFileError as e:
            logger.warning("%s; the phase runs again.", e)
            return None
        self.reused.append(name)
        logger.info("Phase '%s' reused from %s.", name, path)
        return arrays

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._file(name, "npz")
        if path is not None:
            io.write_npz(path, **arrays)

    def load_metrics(self, name: str) -> dict[str, Any] | None:
        """The JSON a finished phase saved (metrics, timings), or None."""
        path = self._file(name, "json")
        if path is None or not os.path.isfile(path):
            return None
        try:
            value = io.read_json(path, expect=dict)
        except io.CorruptFileError as e:
            logger.warning("%s; the phase runs again.", e)
            return None
        self.reused.append(name)
        logger.info("Phase '%s' reused from %s.", name, path)
        return value

    def save_metrics(self, name: str, value: dict[str, Any]) -> None:
        path = self._file(name, "json")
        if path is not None:
            io.write_json(path, value)

    def clear(self) -> None:
        """Deletes the cache (the evaluation has returned everything)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
