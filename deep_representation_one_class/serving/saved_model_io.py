"""Writing a SavedModel export in one step: built aside, then renamed into place.

Shared by the image-level (``export.py``) and patch-level (``export_patches.py``) exports, so
that an interrupted or failed export never leaves a half-written folder where the user looks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from deep_representation_one_class.utils import io

__all__ = ["EXPORT_INFO", "save_aside"]

# What the export says of itself (run, classifiers, preprocessing spec, thresholds).
EXPORT_INFO = os.path.join("assets.extra", "droc_export.json")


def save_aside(module: tf.Module, out_dir: str, info_path: str, info: dict[str, Any]) -> str:
    """Saves ``module`` (signature ``serving_default`` = ``module.serve``) with ``info`` as JSON
    at ``info_path`` inside it, in a temporary folder beside ``out_dir`` that then replaces
    ``out_dir``. The caller has checked that ``out_dir`` may be replaced (empty, or an earlier
    export with ``--overwrite``)."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_export_", dir=parent)
    old = None
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        io.write_json(os.path.join(tmp, info_path), info)
        if os.path.exists(out_dir):
            # An empty folder, or an earlier export: moved aside first so that the rename
            # below is atomic, then deleted.
            old = tempfile.mkdtemp(prefix=".tmp_old_export_", dir=parent)
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir
