"""Use a finished run as an anomaly detector: score new images and turn scores into decisions.

``Detector.load(run_dir)`` rebuilds the network from ``config.json``, restores the latest
checkpoint (model weights only) and loads the one-class classifiers the run fitted and evaluated
(``classifiers.npz``): nothing is refitted, so the scores are those behind the run's
``summary.json`` AUROCs and ``thresholds.json``, and no training data is needed. New images go
through the run's test-time preprocessing: decoded to 'L'/'RGB', converted to the run's
channels and brought to its canvas by the run's preprocessing spec (``preprocessing.json``: the
resize policy and the dataset's own steps, as the loaders did), then view 0 of the test views
(the un-rotated, un-augmented image). Patch-level runs load as a ``PatchDetector``
(``serving/patch_detector.py``): image scores and per-pixel anomaly maps. Scores follow the
package convention (higher = more anomalous); ``decide`` flags ``score >= threshold``, where a
threshold is a number or an inlier-score quantile such as ``q95`` (see
``evaluation/thresholds.py`` for where the quantiles come from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.datasets import preprocessing as prep_lib
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.serving.image_input import (
    DataError,
    DetectorError,
    PathSource,
    fit_to_input,
    load_images,
)
from deep_representation_one_class.serving.patch_detector import PatchDetector
from deep_representation_one_class.serving.run_loading import (
    FEATURES,
    _read_config,
    read_preprocessing,
    read_run_config,
    restore_model,
)
from deep_representation_one_class.training import build
from deep_representation_one_class.utils.run_folder import CONFIG


# ----------------------------------------------------------------------------- run loading
def view0_fn(cfg: config_lib.Config):
    """The run's test-time preprocessing of one image: view 0 of its test views.

    Returns:
      ``fn(image [H, W, C] uint8 or float, seed) -> (view0,)``, a float32 [S, S, C] image.
    """
    test_fn = build.task_for(cfg).views().test

    def fn(image, seed):
        # The other views (rotations) are dropped here; tf.data traces this function into a
        # graph, which prunes their unused ops.
        return test_fn(image, seed)[:1]

    return fn


class Detector:
    """A trained run's encoder plus one-class classifiers fitted on its saved features.

    Attributes:
      run_dir: the run folder.
      config: the run's ``Config``.
      model: the restored Keras model ([B, H, W, C] float32 in [0, 1] -> {"pools", "embeds",
        "logits"}), built in the run's evaluation precision (``--eval_precision``: float32
        unless the run evaluated in its training precision), so its features are the
        evaluated ones.
      feature: ``"pool"`` (f, the paper's) or ``"embed"`` (g∘f).
      scorers: canonical classifier name -> the run's fitted ``Scorer``.
      thresholds: the run's ``thresholds.json`` (quantiles of these same fits).
    """

    def __init__(self, run_dir, config, model, feature, scorers, thresholds, spec=None):
        self.run_dir = run_dir
        self.spec = spec if spec is not None else prep_lib.from_config(config, source=CONFIG)
        self.config = config
        self.model = model
        self.feature = feature
        self.scorers = scorers
        self.thresholds = thresholds
        self._view0 = None
        self._forward = None

    @classmethod
    def load(
        cls,
        run_dir: str,
        classifiers: Sequence[str] | None = None,
        feature: str = "pool",
    ) -> Detector:
        """Loads a finished run: its network and the classifiers it fitted (none are refit).

        Args:
          run_dir: a finished run folder (``config.json``, ``checkpoints/``,
            ``classifiers.npz``/``.json``, ``thresholds.json``).
          classifiers: scorer keys or aliases (``kde``, ``gde``, ``kocsvm``, ``auc`` = 1-NN,
            ``locsvm``); None = the run's ``--classifiers``.
          feature: ``"pool"`` or ``"embed"``.

        Returns:
          A ready ``Detector``.

        Raises:
          DetectorError: not a (finished) run folder, unknown classifier or feature, a run
            evaluated by an older version (the message says how to re-evaluate it).
        """
        if feature not in FEATURES:
            raise DetectorError(f"unknown feature '{feature}'; valid: {', '.join(FEATURES)}")
        cfg, raw = _read_config(run_dir)
        task = build.task_for(cfg)
        if not task.servable:
            # Patch-level runs score densely: served by the patch detector (image scores and
            # anomaly maps).
            return PatchDetector.load(run_dir, classifiers, feature)  # type: ignore[return-value]
        try:
            spec = prep_lib.for_run(run_dir, cfg, raw)
        except prep_lib.PreprocessingError as e:
            raise DetectorError(str(e)) from None
        requested = classifiers if classifiers is not None else cfg.classifiers
        try:
            names = classifiers_lib.canonical_names(requested)
        except UserError as e:
            raise DetectorError(str(e)) from None
        if not names:
            raise DetectorError("no classifier requested; pass e.g. classifiers=['kde']")
        try:
            cset = classifiers_lib.ClassifierSet.load(run_dir, [f"{feature}.{n}" for n in names])
            thresholds = thresholds_lib.load_thresholds(run_dir) or {}
        except UserError as e:
            raise DetectorError(str(e)) from None
        model = restore_model(run_dir, cfg, task)
        return cls(run_dir, cfg, model, feature, cset.for_feature(feature), thresholds, spec)

    # ------------------------------------------------------------------------- properties
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The run's (H, W, C)."""
        return tuple(int(v) for v in self.config.input_shape)  # type: ignore[return-value]

    @property
    def classifiers(self) -> list[str]:
        """Canonical names of the fitted classifiers, in request order."""
        return list(self.scorers)

    # ------------------------------------------------------------------------- inputs
    def load_images(
        self,
        source: PathSource,
        skip_corrupt: bool = False,
        skipped: list[tuple[str, str]] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """``load_images`` prepared by this run's preprocessing spec (its canvas, resize policy
        and dataset steps)."""
        return load_images(source, self.spec, skip_corrupt=skip_corrupt, skipped=skipped)

    def prepare(self, images: Any) -> np.ndarray:
        """``fit_to_input`` with this run's preprocessing spec."""
        return fit_to_input(images, self.spec)

    # ------------------------------------------------------------------------- scoring
    def features(self, images: Any, batch_size: int | None = None) -> np.ndarray:
        """Features of ``images`` exactly as the run's evaluation extracted them.

        Args:
          images: see ``fit_to_input``.
          batch_size: images per forward pass (default: the run's ``eval_batch_size``).

        Returns:
          ``[N, D]`` float32 (``pools`` or ``embeds`` of view 0).
        """
        x = self.prepare(images)
        if self._forward is None:
            # Built once and traced for any batch size, so that scoring a stream of small
            # batches does not retrace; the same pipeline and model call as
            # evaluation.features.extract, which produced the saved features.
            key = "pools" if self.feature == "pool" else "embeds"
            h, w, c = self.input_shape
            model = self.model
            self._view0 = view0_fn(self.config)
            self._forward = tf.function(
                lambda v: model(v, training=False)[key],
                input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)],
            )
        batch = batch_size or self.config.eval_batch_size
        out = [
            self._forward(views[0]).numpy()
            for views in pipeline.make_eval_dataset(x, self._view0, batch)
        ]
        return np.concatenate(out)

    def score_features(self, feats: Any) -> dict[str, np.ndarray]:
        """Anomaly scores of precomputed ``[N, D]`` features, per classifier ([N] float64)."""
        return {name: scorer.score(feats) for name, scorer in self.scorers.items()}

    def score(self, images: Any, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Anomaly scores of images.

        Args:
          images: ``[N, H, W, C]``/``[N, H, W]`` uint8 or float in [0, 1], any size and
            1/3/4 channels (converted like the dataset loaders do).
          batch_size: images per forward pass.

        Returns:
          Classifier name -> ``[N]`` float64 scores, higher = more anomalous.
        """
        return self.score_features(self.features(images, batch_size))

    # ------------------------------------------------------------------------- decisions
    def threshold(self, classifier: str, spec: str | float = thresholds_lib.DEFAULT_SPEC) -> float:
        """The numeric threshold of ``classifier`` for ``spec`` (``'q95'`` or a number)."""
        return thresholds_lib.resolve_threshold(
            self.thresholds, classifier, spec, feature=self.feature
        )

    def decide(
        self,
        scores: Mapping[str, Any],
        threshold: str | float | Mapping[str, str | float] = thresholds_lib.DEFAULT_SPEC,
    ) -> dict[str, np.ndarray]:
        """Anomaly decisions ``score >= threshold``.

        Args:
          scores: classifier -> ``[N]`` scores (as returned by ``score``).
          threshold: one spec for every classifier (``'q95'``, ``'max'``, a number) or a
            mapping classifier -> spec.

        Returns:
          Classifier -> ``[N]`` bool, True = anomalous.
        """
        out = {}
        for name, s in scores.items():
            spec = threshold[name] if isinstance(threshold, Mapping) else threshold
            out[name] = np.asarray(s, dtype=np.float64) >= self.threshold(name, spec)
        return out

    def __repr__(self) -> str:
        return (
            f"Detector(run_dir={self.run_dir!r}, feature={self.feature!r}, "
            f"classifiers={self.classifiers}, thresholds={self.thresholds.get('source')!r})"
        )


__all__ = [
    "FEATURES",
    "DataError",
    "Detector",
    "DetectorError",
    "fit_to_input",
    "load_images",
    "read_preprocessing",
    "read_run_config",
    "restore_model",
    "view0_fn",
]
