"""``data.json``: what a run's data resolved to, recorded when the run starts.

A folder dataset resolves its category when the data are loaded (``--category=0`` is the first
class folder in sorted order), so the same command line can mean another class once a folder
is added. The run records the category as given and as resolved, the class list and a digest of
the decoded test images; ``config.json`` stores the resolved name. Commands that load the data
again refuse data that resolve differently (``check_data_record``), and the report shows
thumbnails only of the test images the run evaluated (``data_digest``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from deep_representation_one_class.errors import RunError
from deep_representation_one_class.utils import io, run_folder

__all__ = ["DATA_RECORD", "check_data_record", "data_digest", "data_record", "read_data_record"]

DATA_RECORD = run_folder.DATA


def data_digest(data: Any) -> str:
    """BLAKE2b of the decoded test images and labels: what the run evaluated, byte for byte."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (data.test_x, data.test_y):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def data_record(given_category: str, data: Any) -> dict[str, Any]:
    """What ``data.json`` holds: the category as given and as resolved, the class list, the
    test-image count and digest."""
    return {
        "dataset": data.name,
        "category_given": str(given_category),
        "category": str(data.category),
        "class_names": [str(c) for c in data.class_names],
        "test_images": len(data.test_x),
        "test_digest": data_digest(data),
    }


def read_data_record(run_path: str) -> dict[str, Any] | None:
    """The run's ``data.json`` (None for runs written before it existed)."""
    path = os.path.join(run_path, DATA_RECORD)
    if not os.path.isfile(path):
        return None
    return io.read_json(path, expect=dict)


def check_data_record(run_path: str, data: Any) -> None:
    """Refuses data that resolve to another category or class list than the run recorded.

    Raises:
      RunError: naming the run's ``data.json``, what it recorded and what the data give now.
    """
    rec = read_data_record(run_path)
    if rec is None:
        return
    then = (rec.get("category"), list(rec.get("class_names") or []))
    now = (str(data.category), [str(c) for c in data.class_names])
    if then != now:
        path = os.path.join(run_path, DATA_RECORD)
        raise RunError(
            f"the data no longer match the run ({path}): it used category {then[0]!r} of "
            f"classes {then[1]}, the data now give {now[0]!r} of {now[1]}; restore the data "
            "or train a new run in another --model_dir"
        )
