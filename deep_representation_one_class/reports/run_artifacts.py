"""What a finished run folder holds, read back for its report; nothing is refitted.

* ``summary.json``: metrics, the resolved config, timings and the eval history.
* ``thresholds.json``: inlier-score quantiles and the test report (TPR/FPR at the threshold).
* ``embeddings.npz``: test labels and classes; image runs also the test features, which the
  run's saved classifiers (``classifiers.npz``, ``ClassifierSet.load``) score again, exactly as
  evaluated; patch runs (MVTec) their image scores, the main scorer's anomaly maps and masks.
* ``tb/``: the training curves (``train/loss``, ``train/acc``, ``monitor/lr``).
* ``explain/``: attribution grids written by the ``explain`` command.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.utils import io

CURVE_TAGS = ("train/loss", "train/acc", "monitor/lr")
_PATCH_SCORE = re.compile(r"^(?P<feature>[a-z]+)_(?P<clf>[a-z]+)_image_score$")
_PATCH_MAP = re.compile(r"^(?P<feature>[a-z]+)_(?P<clf>[a-z]+)_anomaly_map$")


class ReportError(UserError, ValueError):
    """The folder cannot be reported on; the message says why and what to pass instead."""


@dataclasses.dataclass
class RunArtifacts:
    """A finished run's outputs.

    Attributes:
      run_dir: the run folder.
      summary: ``summary.json``.
      config: the flat resolved config (``summary["config"]``).
      metrics: metric key -> AUROC x100 (NaN for a classifier that failed).
      thresholds: ``thresholds.json`` or None (patch runs have none).
      labels: [T] 0/1 test labels (1 = outlier).
      test_class: [T] original class ids.
      scores: score key (``pool.kde``, ``dscore.auc``) -> [T] test scores, higher = more
        anomalous; the saved fit's scores for image runs, the stored image scores for patch runs.
      patch: True for patch (MVTec) runs.
      maps: [T, H, W] float32 anomaly maps of ``map_key`` (patch runs), else None.
      masks: [T, H, W] uint8 ground truth (patch runs), else None.
      map_key: the score key the maps belong to, e.g. ``pool.gde``.
      notes: what could not be read (shown in the report).
    """

    run_dir: str
    summary: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, float]
    thresholds: dict[str, Any] | None
    labels: np.ndarray
    test_class: np.ndarray
    scores: dict[str, np.ndarray]
    patch: bool = False
    maps: np.ndarray | None = None
    masks: np.ndarray | None = None
    map_key: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def is_run(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "summary.json"))


def _image_scores(run_dir: str, arrays: dict[str, np.ndarray], notes: list[str]):
    scores: dict[str, np.ndarray] = {}
    feats = {f: arrays[f"test_{f}"] for f in ("pool", "embed") if f"test_{f}" in arrays}
    try:
        cset = classifiers_lib.ClassifierSet.load(run_dir)
        scores.update(cset.score(feats))
    except classifiers_lib.ClassifierError as e:
        notes.append(f"classifier scores unavailable: {e}")
    if "test_view_logits" in arrays:
        for name, s in scorers_lib.rotation_scores(arrays["test_view_logits"]).items():
            scores[f"{name}.auc"] = np.asarray(s, np.float64)
    return scores


def load_run(run_dir: str) -> RunArtifacts:
    """Reads a finished run folder.

    Raises:
      ReportError: no complete ``summary.json`` or no ``embeddings.npz``.
    """
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        raise ReportError(
            f"{run_dir} is not a finished run (no summary.json) and holds no finished runs; "
            "pass the --model_dir of a finished training run or a sweep folder"
        )
    summary = io.read_json(path, expect=dict)
    config = dict(summary.get("config") or {})
    emb_path = os.path.join(run_dir, "embeddings.npz")
    if not os.path.isfile(emb_path):
        raise ReportError(f"{run_dir} has no embeddings.npz; re-evaluate the run first")
    arrays = io.load_npz(emb_path, required=("test_y",))
    labels = np.asarray(arrays["test_y"]).reshape(-1).astype(np.int64)
    test_class = np.asarray(arrays.get("test_class", labels)).reshape(-1)
    notes: list[str] = []
    run = RunArtifacts(
        run_dir=run_dir,
        summary=summary,
        config=config,
        metrics={k: float(v) for k, v in (summary.get("metrics") or {}).items()},
        thresholds=thresholds_lib.load_thresholds(run_dir),
        labels=labels,
        test_class=test_class,
        scores={},
        notes=notes,
    )
    patch_keys = {m["feature"] + "." + m["clf"]: k for k in arrays if (m := _PATCH_SCORE.match(k))}
    if patch_keys:
        run.patch = True
        run.scores = {key: np.asarray(arrays[k], np.float64) for key, k in patch_keys.items()}
        for k in arrays:
            if m := _PATCH_MAP.match(k):
                run.map_key = f"{m['feature']}.{m['clf']}"
                run.maps = np.asarray(arrays[k], np.float32)
        if "test_masks" in arrays:
            run.masks = np.asarray(arrays["test_masks"])
    else:
        run.scores = _image_scores(run_dir, arrays, notes)
    return run


def read_scalars(tb_dir: str, tags: Sequence[str] = CURVE_TAGS) -> dict[str, tuple[list, list]]:
    """Scalar series of a TensorBoard folder, tag -> (steps, values) in step order.

    Every event file of the folder is read (a resumed run has several); a step written twice
    (a run resumed from a checkpoint before its last logged step) keeps the later value.
    """
    found: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))):
        try:
            for event in event_file_loader.EventFileLoader(path).Load():
                for value in event.summary.value:
                    if value.tag not in tags:
                        continue
                    if value.HasField("tensor"):
                        number = float(np.asarray(tensor_util.make_ndarray(value.tensor)))
                    else:
                        number = float(value.simple_value)
                    found.setdefault(value.tag, {})[int(event.step)] = number
        except Exception:  # a truncated event file (a killed run): keep what was read
            continue
    out = {}
    for tag in tags:
        if tag in found:
            steps = sorted(found[tag])
            out[tag] = (steps, [found[tag][s] for s in steps])
    return out


def explain_grids(run_dir: str) -> list[str]:
    """The ``explain/*_most_anomalous.png`` / ``*_most_normal.png`` grids of a run, sorted."""
    folder = os.path.join(run_dir, "explain")
    return sorted(
        p
        for p in glob.glob(os.path.join(folder, "*.png"))
        if p.endswith(("_most_anomalous.png", "_most_normal.png"))
    )


def default_key(run: RunArtifacts) -> str | None:
    """The score key the report ranks images by: the main map key for patch runs, else the
    key with the highest test AUROC (stated as such in the report)."""
    if run.map_key and run.map_key in run.scores:
        return run.map_key
    ranked = [
        (run.metrics.get(k, float("nan")), k)
        for k in run.scores
        if np.isfinite(run.metrics.get(k, float("nan")))
    ]
    return max(ranked)[1] if ranked else next(iter(run.scores), None)
