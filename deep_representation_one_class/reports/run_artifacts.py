"""What a finished run folder holds, read back for its report; nothing is refitted.

* ``summary.json``: metrics, the resolved config, timings and the eval history.
* ``thresholds.json``: inlier-score quantiles and the test report (TPR/FPR at the threshold).
* ``scores.npz``: the test scores the evaluation computed, shown as they are (nothing is
  scored again). A run evaluated before it existed has its image scores in ``embeddings.npz``
  (patch runs), or its test features there, which the run's saved classifiers
  (``classifiers.npz``, ``ClassifierSet.load``) score exactly as evaluated (image runs).
* ``embeddings.npz``: test labels and classes; patch runs (MVTec) also the main scorer's
  anomaly maps and the masks.
* ``tb/``: the training curves (``train/loss``, ``train/acc``, ``monitor/lr``).
* ``explain/``: attribution grids written by the ``explain`` command.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.utils import run_folder as rf

CURVE_TAGS = ("train/loss", "train/acc", "monitor/lr")


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
        anomalous: those the evaluation computed (``scores.npz``).
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
    return rf.has_summary(folder)


def _rescored(run_dir: str, arrays: dict[str, np.ndarray], notes: list[str]):
    """An image run evaluated before ``scores.npz``: its saved classifiers score its saved test
    features (exactly as evaluated)."""
    scores: dict[str, np.ndarray] = {}
    feats = {
        f: arrays[rf.feature_key(rf.TEST, f)]
        for f in rf.FEATURES
        if rf.feature_key(rf.TEST, f) in arrays
    }
    try:
        cset = classifiers_lib.ClassifierSet.load(run_dir)
        scores.update(cset.score(feats))
    except classifiers_lib.ClassifierError as e:
        notes.append(f"classifier scores unavailable: {e}")
    if rf.TEST_VIEW_LOGITS in arrays:
        for name, s in scorers_lib.rotation_scores(arrays[rf.TEST_VIEW_LOGITS]).items():
            scores[f"{name}.auc"] = np.asarray(s, np.float64)
    return scores


def load_run(run_dir: str) -> RunArtifacts:
    """Reads a finished run folder.

    Raises:
      ReportError: no complete ``summary.json`` or no ``embeddings.npz``.
    """
    summary = rf.read_summary(run_dir)
    if summary is None:
        raise ReportError(
            f"{run_dir} is not a finished run (no {rf.SUMMARY}) and holds no finished runs; "
            "pass the --model_dir of a finished training run or a sweep folder"
        )
    config = dict(summary.get("config") or {})
    if not os.path.isfile(rf.path(run_dir, rf.EMBEDDINGS)):
        raise ReportError(f"{run_dir} has no {rf.EMBEDDINGS}; re-evaluate the run first")
    arrays = rf.read_embeddings(run_dir, required=(rf.TEST_LABELS,), rows=())
    labels = np.asarray(arrays[rf.TEST_LABELS]).reshape(-1).astype(np.int64)
    test_class = np.asarray(arrays.get(rf.TEST_CLASS, labels)).reshape(-1)
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
    patch_keys = {key: k for k in arrays if (key := rf.parse_image_score_key(k))}
    saved = rf.read_scores(run_dir)
    if saved is not None and any(len(v) != len(labels) for v in saved.values()):
        raise ReportError(
            f"{rf.path(run_dir, rf.SCORES)} does not match {rf.EMBEDDINGS} (another number of "
            f"test images); re-evaluate the run: {rf.upgrade_hint(run_dir)}"
        )
    if patch_keys:
        run.patch = True
        for k in arrays:
            if key := rf.parse_anomaly_map_key(k):
                run.map_key = key
                run.maps = np.asarray(arrays[k], np.float32)
        if rf.TEST_MASKS in arrays:
            run.masks = np.asarray(arrays[rf.TEST_MASKS])
    if saved is not None:
        run.scores = saved
    elif patch_keys:
        run.scores = {key: np.asarray(arrays[k], np.float64) for key, k in patch_keys.items()}
    else:
        run.scores = _rescored(run_dir, arrays, notes)
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
    folder = rf.path(run_dir, rf.EXPLAIN)
    return sorted(
        p for p in glob.glob(os.path.join(folder, "*.png")) if p.endswith(rf.EXPLAIN_GRIDS)
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
