"""The image-level task: one image in, one anomaly score out (every benchmark but MVTec AD).

Views come from the augmentation strings (``--aug_list``, ``--aug_list_for_test``). The
evaluation extracts ``pool`` and ``embed`` features of the classifier-train and test sets
(and the rotation classifier's view logits where the method has one), fits every classifier
once (``evaluation.classifiers``), and with a run folder writes ``embeddings.npz``,
``classifiers.npz``/``.json``, ``thresholds.json`` and the test scores (``scores.npz``, which
the run's report shows as they are: ``reports/report.py``). Names and array keys come from
``utils.run_folder``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import features as features_lib
from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.tasks import baselines as baselines_lib
from deep_representation_one_class.tasks import patch_cache, patch_synthetic
from deep_representation_one_class.tasks import scratch as scratch_lib
from deep_representation_one_class.tasks.base import Evaluation, Task, Views
from deep_representation_one_class.utils import run_folder as rf

FEATURES = rf.FEATURES
EMBEDDINGS = rf.EMBEDDINGS


def reference_behaviour(config: Any) -> dict[str, bool]:
    """The ``build_view_fn`` switches for the reference's augmentation behaviours."""
    every = bool(config.augment_as_reference)
    return {
        "reference_blur": every or bool(config.blur_as_reference),
        "reference_jitter": every,
    }


def image_views(config: Any) -> Views:
    """Train and test views of ``config`` at its (square) input size."""
    size = int(config.input_shape[0])
    train_views = grammar.parse(config.aug_list)
    reference = reference_behaviour(config)
    train_fn = grammar.build_view_fn(train_views, size, training=True, **reference)
    if config.aug_list_for_test:
        test_views = grammar.parse(config.aug_list_for_test)
        test_fn = grammar.build_view_fn(test_views, size, training=True, **reference)
    else:
        # The reference's test pipeline: view 0 in test mode (random ops off, crops -> resize).
        test_views = train_views[:1]
        test_fn = grammar.build_view_fn(test_views, size, training=False)
    return Views(train_fn, test_fn, len(train_views), len(test_views))


def score_saved_features(
    config: Any,
    arrays: Mapping[str, np.ndarray],
    run_dir: str | None = None,
    timings: dict[str, float] | None = None,
    synthetic: Any = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Fits the run's classifiers once on saved features, scores the test set, writes outputs.

    This is the evaluation of a run after its features are extracted, shared by the run and by
    ``evaluate`` (re-scoring a finished run).

    Args:
      config: the run's config (``classifiers``, ``seed``, ``cls_holdout``, ``is_validation``).
      arrays: the ``embeddings.npz`` arrays (``cls_pool``, ``cls_embed``, ``test_pool``,
        ``test_embed``, ``test_y``[, ``test_view_logits``]).
      run_dir: where ``classifiers.*``, ``thresholds.json`` and ``scores.npz`` go (None:
        nowhere).
      timings: receives per-classifier fit seconds.
      synthetic: optional ``(features {feature: [M, D]}, SyntheticSet)`` of the held-out
        normals and their corrupted copies, scored by the same fitted classifiers:
        ``synthetic.<feature>.<classifier>`` (headline kinds) and ``...<kind>`` AUROCs.

    Returns:
      (metrics: key -> AUROC x100 (NaN for a classifier that could not be fit),
       scores: key -> [T] test scores).
    """
    labels = np.asarray(arrays[rf.TEST_LABELS]).reshape(-1)
    cls = _features(arrays, rf.CLS, FEATURES)
    test = _features(arrays, rf.TEST, FEATURES)
    split = classifiers_lib.split_rows(
        len(next(iter(cls.values()))), config.seed, config.cls_holdout
    )
    cset = classifiers_lib.fit(cls, config.classifiers, split, timings=timings)
    scores = cset.score(test)
    metrics = {key: metrics_lib.auroc(labels, s) for key, s in scores.items()}
    for key in cset.failed:
        metrics[key] = math.nan
    if synthetic is not None:
        metrics.update(_synthetic_metrics(cset, *synthetic))
    if rf.TEST_VIEW_LOGITS in arrays:
        for name, s in scorers_lib.rotation_scores(arrays[rf.TEST_VIEW_LOGITS]).items():
            metrics[f"{name}.auc"] = metrics_lib.auroc(labels, s)
            scores[f"{name}.auc"] = s
    if run_dir is not None:
        cset.save(run_dir)
        fitted = {k: v for k, v in scores.items() if k in cset.scorers}
        thresholds = thresholds_lib.run_thresholds(
            cset,
            cls,
            labels,
            fitted,
            evaluated_on="validation" if config.is_validation else "test",
        )
        thresholds_lib.write_thresholds(run_dir, thresholds)
        rf.write_scores(run_dir, scores)
    return metrics, scores


def _features(arrays: Mapping[str, np.ndarray], split: str, features) -> dict[str, np.ndarray]:
    """feature -> the ``split``'s array, for the features present in ``arrays``."""
    keys = {f: rf.feature_key(split, f) for f in features}
    return {f: np.asarray(arrays[k]) for f, k in keys.items() if k in arrays}


def _synthetic_metrics(cset, feats: Mapping[str, np.ndarray], synth: Any) -> dict[str, float]:
    """Image-level synthetic-anomaly AUROCs of fitted classifiers (headline and per kind)."""
    scores = cset.score(feats)
    normal = synth.kind == "normal"
    subsets = {"": normal | np.isin(synth.kind, patch_synthetic.HEADLINE_KINDS)}
    subsets.update({f".{k}": normal | (synth.kind == k) for k in patch_synthetic.KINDS})
    out = {}
    for suffix, rows in subsets.items():
        if rows.sum() > normal.sum():
            for key, s in scores.items():
                out[f"synthetic.{key}{suffix}"] = metrics_lib.auroc(synth.y[rows], s[rows])
    return out


def fit_and_score(config: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """AUROCs of the run's classifiers fit once on ``cls_<f>`` and scored on ``test_<f>`` for
    every feature ``f`` in ``arrays`` (the baselines' protocol; nothing is written)."""
    labels = np.asarray(arrays[rf.TEST_LABELS]).reshape(-1)
    feats = [p[1] for k in arrays if (p := rf.parse_feature_key(k)) and p[0] == rf.CLS]
    cls = _features(arrays, rf.CLS, feats)
    split = classifiers_lib.split_rows(len(cls[feats[0]]), config.seed, config.cls_holdout)
    cset = classifiers_lib.fit(cls, config.classifiers, split)
    scores = cset.score(_features(arrays, rf.TEST, feats))
    metrics = {key: metrics_lib.auroc(labels, s) for key, s in scores.items()}
    metrics.update({key: math.nan for key in cset.failed})
    return metrics


PLUGIN = dict(
    kind="task",
    name="image",
    description="one score per image from features of the whole (resized) image",
    options=[
        baselines_lib.BASELINES_OPTION,
        patch_synthetic.SYNTHETIC_OPTION,
        scratch_lib.SCRATCH_STEPS_OPTION,
    ],
    impl="ImageTask",
)


class ImageTask(Task):
    """One score per image from features of the whole (resized) image."""

    # The paper's headline recipe (contrastive + rotation distribution augmentation), at the
    # dataset's own from-scratch size (32 px for folder).
    scratch_recipe = MappingProxyType(
        {"method": "contrastive", "distaug_type": "rot", "own_size": True}
    )

    @classmethod
    def check_config(cls, config) -> None:
        scratch_lib.check_steps(config)

    def prepare(self, data):
        """Holds out ``synthetic_holdout`` normal training images (the defect datasets)."""
        return patch_synthetic.hold_out_data(data, self.config.synthetic_holdout, self.config.seed)

    def model_input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.config.input_shape)  # type: ignore[return-value]

    def make_views(self) -> Views:
        return image_views(self.config)

    def extract(self, model: Any, data: Any, with_logits: bool) -> dict[str, np.ndarray]:
        """The ``embeddings.npz`` arrays: features of the classifier-train and test images."""
        test_fn = self.views().test
        batch = self.config.eval_batch_size
        cls = features_lib.extract(model, data.cls_x, test_fn, batch, with_logits)
        test = features_lib.extract(model, data.test_x, test_fn, batch, with_logits)
        arrays = rf.feature_arrays(
            {f: cls[f] for f in FEATURES}, {f: test[f] for f in FEATURES}, data.test_y
        )
        arrays[rf.TEST_CLASS] = data.test_class
        if with_logits:
            arrays[rf.TEST_VIEW_LOGITS] = test["view_logits"]
        return arrays

    def evaluate(
        self, model, data, *, with_logits, run_dir=None, writer=None, step=0, scratch_trainer=None
    ):
        del writer, step  # the runner logs the metrics
        timings: dict[str, float] = {}
        t0 = time.time()
        arrays = self.extract(model, data, with_logits)
        timings["extract"] = time.time() - t0
        files: list[str] = []
        if run_dir is not None:
            files.append(rf.write_embeddings(run_dir, arrays))
        synthetic = None
        if data.holdout_x is not None and run_dir is not None:
            # Corrupted copies of the held-out normals, seen through the run's test view.
            t0 = time.time()
            synth = patch_synthetic.synthesize(data.holdout_x, data.holdout_sizes, self.config.seed)
            feats = features_lib.extract(
                model, synth.x, self.views().test, self.config.eval_batch_size
            )
            synthetic = ({f: feats[f] for f in FEATURES}, synth)
            timings["synthetic"] = time.time() - t0
        t0 = time.time()
        metrics, scores = score_saved_features(
            self.config, arrays, run_dir, timings, synthetic=synthetic
        )
        timings["classifiers"] = time.time() - t0
        if run_dir is not None:
            files.append(rf.SCORES)  # written with the classifiers (score_saved_features)
        if self.config.baselines and run_dir is not None:
            t0 = time.time()
            metrics.update(
                baselines_lib.image_baselines(
                    self.config,
                    data,
                    self.views().test,
                    self.model_input_shape(),
                    lambda a: fit_and_score(self.config, a),
                )
            )
            timings["baselines"] = time.time() - t0
        records = {}
        cfg = self.config
        if cfg.baselines and run_dir and scratch_trainer and scratch_lib.applies(cfg):
            t0 = time.time()
            # A finished from-scratch baseline is kept in eval_cache/ until the run is complete.
            cache = patch_cache.PhaseCache(run_dir, patch_cache.fingerprint(model, cfg, data))
            done = scratch_lib.image_baseline(
                cfg,
                data,
                lambda a: fit_and_score(cfg, a),
                cache,
                scratch_trainer,
                lambda c: image_views(c).test,
            )
            metrics.update(done["metrics"])
            records[scratch_lib.NAME] = done["record"]
            timings[scratch_lib.NAME] = time.time() - t0
            cache.clear()
        return Evaluation(metrics, timings, scores, files, records)
