"""Serve a patch-level run (MVTec-layout data): image scores and per-pixel anomaly maps.

``PatchDetector.load(run_dir)`` (also what ``Detector.load`` returns for such a run) restores
the network, loads the scorers the run fitted on its patch bank (``classifiers.npz``: nothing
is refit) and the run's preprocessing spec, then scores new images exactly as the run's dense
evaluation scored its test images (``tasks/patch_dense.py``): each image is prepared onto the
run's canvas (resize policy, ``same_scale`` factor, padding), every window of the dense grid is
embedded and scored, the image score is the run's ``--patch_agg`` over the windows whose centre
lies in the image content, and the map averages the covering windows' scores and is smoothed
by ``--smooth_sigma``. ``anomaly_map`` then cuts the content out of the canvas and resizes it
(bilinear) to the image's own resolution.

Thresholds (``thresholds.json`` of the run, ``tasks/patch_serving.py``): quantiles of the image
scores and of the map pixels of normal images held out of training; ``f1_thresholds`` picks
F1-optimal ones on a few labelled images instead. ``normalize`` maps scores to [0, 1] with the
threshold at 0.5.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from deep_representation_one_class import catalog
from deep_representation_one_class.datasets import images as images_lib
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.serving import run_loading
from deep_representation_one_class.serving.image_input import (
    DataError,
    DetectorError,
    PathSource,
    expand_source,
    prepare_batch,
)
from deep_representation_one_class.tasks import patch_dense
from deep_representation_one_class.tasks import patch_grid as patches_lib

__all__ = ["PatchDetector", "iter_images", "normalize", "resize_map"]

# Images per dense pass of score_and_maps: bounds the canvases, window scores and maps held.
CHUNK_IMAGES = 16


def resize_map(amap: np.ndarray, content: Sequence[int], own: Sequence[int]) -> np.ndarray:
    """A canvas map [H, W] -> the content's map at the image's own (H0, W0), bilinear."""
    h, w = int(content[0]), int(content[1])
    cut = np.ascontiguousarray(amap[:h, :w], np.float32)
    oh, ow = int(own[0]), int(own[1])
    if (oh, ow) == (h, w):
        return cut
    return np.asarray(Image.fromarray(cut, mode="F").resize((ow, oh), Image.Resampling.BILINEAR))


def normalize(scores: Any, threshold: float, reference: Mapping[str, float]) -> np.ndarray:
    """Scores on [0, 1] with ``threshold`` at 0.5: ``0.5 + (s - t) / (2 (max - q50))``, clipped.

    ``reference`` holds the held-out normals' ``q50`` and ``max`` (a quantile table), so a
    normal image at the median lands near ``0.5 - (t - q50) / (2 (max - q50))`` and the
    scale does not depend on the images being scored.
    """
    spread = max(float(reference["max"]) - float(reference["q50"]), 1e-12)
    s = np.asarray(scores, np.float64)
    return np.clip(0.5 + (s - float(threshold)) / (2.0 * spread), 0.0, 1.0)


class PatchDetector:
    """A patch-level run's encoder and bank scorers, serving image scores and anomaly maps.

    Attributes:
      run_dir, config, model, feature: as for ``Detector``.
      spec: the run's ``PreprocessingSpec``.
      classifiers: canonical scorer names (the first one makes the maps by default).
      thresholds: the run's ``thresholds.json`` (``quantiles`` for image scores,
        ``pixel_quantiles`` for map pixels), ``{}`` if it has none.
    """

    level = "patches"

    def __init__(self, run_dir, config, model, feature, cset, thresholds, spec):
        self.run_dir = run_dir
        self.config = config
        self.model = model
        self.feature = feature
        self.thresholds = thresholds
        self.spec = spec
        self.classifiers = [k.split(".", 1)[1] for k in cset.scorers]
        size = int(config.patch_size)
        channels = int(config.input_shape[2])
        embed = patch_dense.Embedder(model, size, channels, config.eval_batch_size, (feature,))
        self.dense = patch_dense.DenseScorer(
            embed, tuple(self.classifiers), size, int(config.patch_stride)
        ).use(cset)

    @classmethod
    def load(
        cls, run_dir: str, classifiers: Sequence[str] | None = None, feature: str = "pool"
    ) -> PatchDetector:
        """Loads a finished patch-level run (nothing is refit).

        Args:
          run_dir: the run folder (``config.json``, ``checkpoints/``, ``classifiers.npz``).
          classifiers: scorer names (``auc`` = 1-NN, ``kde``, ``gde``); None = the run's.
          feature: ``pool`` or ``embed``.

        Raises:
          DetectorError: not a finished patch run, or an unknown/unfitted scorer.
        """
        if feature not in run_loading.FEATURES:
            raise DetectorError(
                f"unknown feature '{feature}'; valid: {', '.join(run_loading.FEATURES)}"
            )
        cfg = run_loading.read_run_config(run_dir)
        spec = run_loading.read_preprocessing(run_dir, cfg)
        try:
            names = classifiers_lib.canonical_names(
                classifiers if classifiers is not None else cfg.classifiers
            )
        except UserError as e:
            raise DetectorError(str(e)) from None
        usable = catalog.scorers_for("patches")
        if classifiers is None:
            names = [n for n in names if n in usable] or list(catalog.default_scorers("patches"))
        bad = [n for n in names if n not in usable]
        if bad or not names:
            raise DetectorError(
                f"patch-level runs serve the scorers {', '.join(usable)}; "
                f"got {', '.join(bad) or 'none'}"
            )
        try:
            cset = classifiers_lib.ClassifierSet.load(run_dir, [f"{feature}.{n}" for n in names])
            thresholds = thresholds_lib.load_thresholds(run_dir) or {}
        except UserError as e:
            raise DetectorError(str(e)) from None
        model = run_loading.restore_model(run_dir, cfg)
        return cls(run_dir, cfg, model, feature, cset, thresholds, spec)

    # ------------------------------------------------------------------------- inputs
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.config.input_shape)  # type: ignore[return-value]

    def load_images(
        self,
        source: PathSource,
        skip_corrupt: bool = False,
        skipped: list[tuple[str, str]] | None = None,
    ) -> tuple[list[np.ndarray], list[str]]:
        """Decodes image files at their own size (``score``/``anomaly_map`` prepare them).

        Returns:
          (a list of [H0, W0, C] uint8 images, their paths).
        """
        entries = list(iter_images(source, skip_corrupt, skipped))
        if not entries:
            raise DetectorError(f"none of the image files in {source} could be decoded")
        return [a for _, a in entries], [p for p, _ in entries]

    def prepare(self, images: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 canvases [N, H, W, C], content sizes [N, 2], own sizes [N, 2]).

        Float input in [0, 1] is quantised to 8 bits, as the run's images were.
        """
        canvases, sizes, own = prepare_batch(images, self.spec)
        if canvases.dtype != np.uint8:
            canvases = np.clip(np.rint(canvases * 255.0), 0, 255).astype(np.uint8)
        return canvases, sizes, own

    # ------------------------------------------------------------------------- scoring
    def _dense(self, canvases: np.ndarray, sizes: np.ndarray, names, map_names=()):
        scores, ys, xs = self.dense.score(canvases)
        size = int(self.config.patch_size)
        valid = patch_dense.valid_windows(sizes, len(canvases), ys, xs, size)
        image, maps = {}, {}
        for name in names:
            patch_scores = scores[self.feature, name]
            image[name] = patch_dense.aggregate(patch_scores, self.config.patch_agg, valid)
            if name in map_names:
                maps[name] = patches_lib.anomaly_maps(
                    patch_scores, ys, xs, size, canvases.shape[1:3], self.config.smooth_sigma
                )
        return image, maps

    def score_and_maps(
        self, images: Any, classifier: str | None = None, with_maps: bool = True
    ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """Image scores of every scorer and the maps of one, in chunks of ``CHUNK_IMAGES``.

        Args:
          images: ``[N, H, W, C]``/``[N, H, W]`` or a list of images of any sizes, uint8 or
            float in [0, 1], 1/3/4 channels.
          classifier: the scorer whose maps are returned (default: the first).
          with_maps: False skips the maps (faster).

        Returns:
          (scorer -> [N] float64 image scores, higher = more anomalous; a list of N float32
          maps, each at its image's own resolution; empty without maps).
        """
        main = self._check_name(classifier)
        scores, maps = self.score_and_all_maps(images, [main] if with_maps else [])
        return scores, maps.get(main, [])

    def score_and_all_maps(
        self, images: Any, map_classifiers: Sequence[str] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
        """Image scores of every scorer and the maps of several in one dense pass.

        Args:
          images: see ``score_and_maps``.
          map_classifiers: scorers whose maps are returned (None: all loaded ones).

        Returns:
          (scorer -> [N] image scores, scorer -> list of N maps at the images' own sizes).
        """
        names = self.classifiers if map_classifiers is None else list(map_classifiers)
        names = [self._check_name(n) for n in names]
        items = _split(images)
        scores: dict[str, list[np.ndarray]] = {n: [] for n in self.classifiers}
        maps: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, len(items), CHUNK_IMAGES):
            chunk = items[start : start + CHUNK_IMAGES]
            canvases, sizes, own = self.prepare(chunk)
            image, canvas_maps = self._dense(canvases, sizes, self.classifiers, names)
            for n in self.classifiers:
                scores[n].append(image[n])
            for n in names:
                maps[n] += [resize_map(m, c, o) for m, c, o in zip(canvas_maps[n], sizes, own)]
        return {n: np.concatenate(v) for n, v in scores.items()}, maps

    def score(self, images: Any, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Image scores (the run's aggregation of its window scores), per scorer."""
        del batch_size  # windows are batched by the run's eval_batch_size
        return self.score_and_maps(images, with_maps=False)[0]

    def anomaly_map(self, images: Any, classifier: str | None = None) -> list[np.ndarray]:
        """Per-pixel anomaly maps at each image's own resolution (a list of [H0, W0])."""
        return self.score_and_maps(images, classifier)[1]

    # ------------------------------------------------------------------------- decisions
    def _check_name(self, classifier: str | None) -> str:
        name = self.classifiers[0] if classifier is None else str(classifier).lower()
        if name not in self.classifiers:
            raise DetectorError(
                f"scorer '{classifier}' is not loaded; loaded: {', '.join(self.classifiers)}"
            )
        return name

    def threshold(self, classifier: str, spec: str | float = thresholds_lib.DEFAULT_SPEC):
        """The image-score threshold of ``classifier`` (``q95`` of held-out normals, or a
        number)."""
        return self._resolve("quantiles", classifier, spec)

    def pixel_threshold(self, classifier: str, spec: str | float = thresholds_lib.DEFAULT_SPEC):
        """The map-pixel threshold of ``classifier`` (the region outlined in map PNGs)."""
        return self._resolve("pixel_quantiles", classifier, spec)

    def _resolve(self, table: str, classifier: str, spec) -> float:
        value = thresholds_lib.parse_spec(spec)
        if isinstance(value, float):
            return value
        if not self.thresholds.get(table):
            raise DetectorError(
                f"{self.run_dir} has no {table.replace('_', ' ')} of held-out normal images "
                f"({thresholds_lib.FILENAME}, written by runs of this version with "
                "--synthetic_holdout >= 2; re-evaluate an older run with python -m "
                f"deep_representation_one_class.evaluate --model_dir={self.run_dir} "
                "--reextract); pass a numeric threshold or --threshold=f1 --val_images=DIR"
            )
        return thresholds_lib.resolve_threshold(
            {"quantiles": self.thresholds[table]}, classifier, value, feature=self.feature
        )

    def reference(self, classifier: str, table: str = "quantiles") -> Mapping[str, float]:
        """The held-out normals' quantile table of ``classifier`` (for ``normalize``)."""
        key = f"{self.feature}.{classifier}"
        ref = self.thresholds.get(table, {}).get(key)
        if ref is None:
            raise DetectorError(f"{self.run_dir} has no {table} for {key} to normalise with")
        return ref

    def decide(self, scores: Mapping[str, Any], threshold=thresholds_lib.DEFAULT_SPEC):
        """``score >= threshold`` per scorer (one spec, or a mapping scorer -> spec)."""
        out = {}
        for name, s in scores.items():
            spec = threshold[name] if isinstance(threshold, Mapping) else threshold
            out[name] = np.asarray(s, np.float64) >= self.threshold(name, spec)
        return out

    def __repr__(self) -> str:
        return (
            f"PatchDetector(run_dir={self.run_dir!r}, feature={self.feature!r}, "
            f"classifiers={self.classifiers}, policy={self.spec.resize_policy!r})"
        )


def _split(images: Any) -> list[np.ndarray]:
    if isinstance(images, (list, tuple)):
        return list(images)
    x = np.asarray(images)
    if x.ndim in (3, 4) and x.shape[0] > 0:
        return list(x)
    raise DetectorError(
        f"images must be a non-empty [N, H, W, C] or [N, H, W] array or a list of images, got "
        f"shape {x.shape}"
    )


def iter_images(
    source: PathSource,
    skip_corrupt: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """(path, [H0, W0, C] uint8) of every image file at its own size ('L' -> C = 1), one at a
    time (a folder of large photos is never held in memory at once)."""
    for path, why in expand_source(source):
        try:
            if why is not None:
                raise DataError(why)
            arr = np.asarray(images_lib.open_image(path), np.uint8)
        except DataError as e:
            if not skip_corrupt:
                raise
            if skipped is not None:
                skipped.append((path, str(e)))
            continue
        yield path, (arr[..., None] if arr.ndim == 2 else arr)
