"""Visual explanations of one-class scores: integrated gradients and Grad-CAM.

Both explain a differentiable TensorFlow version of the anomaly score ``F(x)`` (higher = more
anomalous) with respect to the model input ``x`` (``[H, W, C]`` float32 in [0, 1] at the run's
input shape, before its test-time view 0):

* KDE/GDE (and the other feature classifiers) on ``pool``/``embed`` features: the detector's
  fitted parameters in TF (each scorer's ``tf_score``), including the L2 normalisation.
* The rotation classifier's ``dscore = −Σ_k log softmax(logits(rot_k x))[k]`` (rotation runs).

Integrated gradients (Sundararajan et al., 2017): ``(x − x′) ⊙ ∫₀¹ ∇F(x′ + α(x − x′)) dα``
with a black or blurred baseline ``x′``, the integral by the trapezoid rule on ``m`` intervals,
so that the attributions sum to ``F(x) − F(x′)`` (completeness) up to the discretisation error.
Grad-CAM (Selvaraju et al., 2017): ``ReLU(Σ_c mean_hw(∂F/∂A_c) · A_c)`` for the activations
``A`` of the last 4-D layer before the pooled features, upsampled bilinearly to the image.
The CLI renders grids (rows: image | heatmap | overlay) of the k most anomalous and the k most
normal test images (or of ``--images``) into ``<run>/explain/`` and TensorBoard (``<run>/tb``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.augment.photometric import gaussian_blur
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.serving import detector as detector_lib
from deep_representation_one_class.serving.export import exportable
from deep_representation_one_class.training import build

logger = logging.getLogger(__name__)

METHODS = ("ig", "gradcam", "gradcam_classic")
BASELINES = ("black", "blur")
ROTATION_SCORES = ("dscore", "logit")
# Pure rotation ops of the augmentation grammar -> quarter turns (tf.image.rot90's k).
_QUARTER_TURNS = {"rotate90": 1, "rotate180": 2, "rotate270": 3}


class ExplainError(UserError, ValueError):
    """An explanation cannot be computed as requested; the message says what is valid."""


# ----------------------------------------------------------------------------- score functions
def find_cam_layer(model, input_shape: Sequence[int], min_side: int = 16) -> str:
    """The block output Grad-CAM reads: the deepest block output (a 4-D layer named ``*_out``
    before ``pools``) whose maps have at least ``min_side`` positions per side at
    ``input_shape``, else the largest one.

    For ResNet-18 on 32x32 inputs that is ``conv3_b2_out`` (16x16), on 64x64 inputs and on
    256x256 (ImageNet stem) ``conv4_b2_out`` (16x16). The last stage (4x4 at 32x32) is too
    coarse, and its units see the whole image: on the fake data, maps of ``conv5`` found a
    white quadrant 0-14 times out of 32, of ``conv4`` (8x8) 20-32 times, of ``conv3`` 32 times.
    """
    names = []
    for layer in model.layers:
        if layer.name == "pools":
            break
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError, TypeError):
            continue
        if rank == 4 and layer.name.endswith("_out"):
            names.append(layer.name)
    if not names:
        raise ExplainError(f"model {model.name} has no block output before 'pools' for Grad-CAM")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe(np.zeros((1, *[int(v) for v in input_shape]), np.float32), training=False)
    sides = [int(o.shape[1]) for o in (outs if isinstance(outs, list) else [outs])]
    sized = [n for n, side in zip(names, sides) if side >= min_side]
    return sized[-1] if sized else names[int(np.argmax(sides))]


def _rotation_turns(cfg, num_views: int) -> list[int]:
    """Quarter turns of each test view, when every test view is a pure rotation."""
    specs = grammar.parse(cfg.aug_list_for_test) if cfg.aug_list_for_test else ()
    turns = []
    for view in specs[:num_views]:
        k = 0
        for op in view.ops:
            if op.name in _QUARTER_TURNS:
                k += _QUARTER_TURNS[op.name]
            elif op.name != "resize":
                return []
        turns.append(k % 4)
    return turns if len(turns) == num_views else []


class Explainer:
    """Differentiable score, integrated gradients and Grad-CAM of one run and classifier.

    Attributes:
      config: the run's ``Config``.
      model: the restored Keras model.
      classifier: canonical scorer key (``kde``, ``gde``, …) or ``dscore``/``logit``.
      detector: the ``Detector`` for feature classifiers (None for rotation scores).
    """

    def __init__(self, run_dir: str, classifier: str = "kde", feature: str = "pool"):
        name = classifier.strip().lower()
        self.run_dir = run_dir
        self.detector = None
        if name in ROTATION_SCORES:
            self.config = detector_lib.read_run_config(run_dir)
            task = build.task_for(self.config)
            views = task.views()
            test_fn, n_views = views.test, views.num_test
            if self.config.latent_dim != n_views or n_views < 2:
                raise ExplainError(
                    f"'{name}' is the rotation classifier's score; {run_dir} is a "
                    f"{self.config.method} run without one (use kde or gde)"
                )
            self.model = detector_lib.restore_model(run_dir, self.config, task)
            self.classifier = name
            self._views = test_fn
            self._turns = _rotation_turns(self.config, n_views)
            self._head = None
        else:
            if name not in exportable() and name not in scorers_lib.SCORERS:
                valid = ", ".join((*exportable(), *ROTATION_SCORES))
                raise ExplainError(f"cannot explain classifier '{classifier}'; valid: {valid}")
            self.detector = detector_lib.Detector.load(run_dir, [name], feature)
            if getattr(self.detector, "level", "image") == "patches":
                raise ExplainError(
                    f"{run_dir} is a patch-level run: its anomaly maps already localise; write "
                    "them with: python -m deep_representation_one_class.score --model_dir="
                    f"{run_dir} --images=DIR --out=scores.csv --maps=MAPS_DIR"
                )
            self.config = self.detector.config
            self.model = self.detector.model
            self.classifier = self.detector.classifiers[0]
            view0 = detector_lib.view0_fn(self.config)
            self._views = view0
            self._turns = [0]
            scorer = self.detector.scorers[self.classifier]
            if not scorer.tf_state:
                valid = ", ".join((*exportable(), *ROTATION_SCORES))
                raise ExplainError(f"cannot explain classifier '{classifier}'; valid: {valid}")
            state = {k: tf.constant(np.asarray(v, np.float64)) for k, v in scorer.state().items()}
            tf_score = type(scorer).tf_score
            self._head = lambda feats: tf_score(state, feats)
            self._output = "pools" if feature == "pool" else "embeds"
        self._cam_model = None
        self._cam_mean: list[np.ndarray] | None = None
        self._score_tf = tf.function(self.score_tensor, reduce_retracing=True)
        self._grads_tf = tf.function(self._score_and_grad, reduce_retracing=True)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.config.input_shape)  # type: ignore[return-value]

    def _apply_views(self, x):
        """Test views of a batch ``[B, H, W, C]`` -> tuple of ``[B, S, S, C]``, differentiably."""
        seed = tf.zeros([2], tf.int64)
        return tf.vectorized_map(lambda im: tuple(self._views(im, seed)), x)

    def _score_from_outputs(self, outs: Sequence[dict]):
        """``[B]`` float64 scores from the model outputs of each view."""
        if self._head is not None:
            return self._head(outs[0][self._output])
        logits = [tf.cast(o["logits"], tf.float64) for o in outs]
        if self.classifier == "logit":
            return -tf.math.expm1(tf.nn.log_softmax(logits[0])[:, 0])
        # dscore = −Σ_k log p(k | rot_k x), the rotation classifier's score in log form (see
        # scorers.rotation_scores: it ranks like the reference's 1 − Π_k p and is smooth).
        return -tf.add_n([tf.nn.log_softmax(lg)[:, k] for k, lg in enumerate(logits)])

    def score_tensor(self, x):
        """``F(x)``: ``[B, H, W, C]`` float32 in [0, 1] -> ``[B]`` float64 anomaly scores."""
        outs = [self.model(v, training=False) for v in self._apply_views(x)]
        return self._score_from_outputs(outs)

    def _score_and_grad(self, points):
        with tf.GradientTape() as tape:
            tape.watch(points)
            s = self.score_tensor(points)
        # The gradient through vectorized_map can come back as IndexedSlices.
        return s, tf.convert_to_tensor(tape.gradient(s, points))

    def scores(self, x: Any) -> np.ndarray:
        """Anomaly scores of a float batch (numpy in, numpy out), in batches of 64."""
        x = np.asarray(x, np.float32)
        return np.concatenate(
            [self._score_tf(x[i : i + 64]).numpy() for i in range(0, x.shape[0], 64)]
        )

    # ------------------------------------------------------------------------- IG
    def baseline(self, image: np.ndarray, kind: str = "black") -> np.ndarray:
        """The IG baseline of one ``[H, W, C]`` image: all black, or a strong Gaussian blur.

        The blur (sigma = H/8 px, radius 3 sigma capped below the image size for the REFLECT
        padding) keeps the colours and removes the structure, so the attributions point at
        shapes rather than at "brightness versus black".
        """
        if kind == "black":
            return np.zeros_like(image, dtype=np.float32)
        if kind != "blur":
            raise ExplainError(f"unknown baseline '{kind}'; valid: {', '.join(BASELINES)}")

        h = image.shape[0]
        sigma = max(1.0, h / 8.0)
        radius = int(min(math.ceil(3 * sigma), min(image.shape[:2]) - 1))
        return gaussian_blur(tf.constant(image, tf.float32), sigma, radius).numpy()

    def integrated_gradients(
        self,
        images: Any,
        steps: int = 64,
        baseline: str = "black",
        batch_size: int = 33,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Integrated-gradient attributions of ``F`` (trapezoid rule, ``steps`` intervals).

        Args:
          images: ``[B, H, W, C]`` float32 in [0, 1] at the run's input shape.
          steps: number of intervals m (m + 1 gradient evaluations per image); 64+ is
            usually within a few percent of completeness.
          baseline: ``"black"`` or ``"blur"`` (see ``baseline``).
          batch_size: path points per forward/backward pass.

        Returns:
          ``(attributions [B, H, W, C] float32, info)`` with ``info`` holding ``[B]`` arrays
          ``score`` = F(x), ``baseline_score`` = F(x′) and ``attribution_sum``; completeness
          says ``attribution_sum ≈ score − baseline_score``.
        """
        if steps < 1:
            raise ExplainError(f"integrated gradients need steps >= 1, got {steps}")
        x = np.asarray(images, np.float32)
        alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
        # Trapezoid weights: the two end points count half.
        weights = np.full(steps + 1, 1.0 / steps, np.float32)
        weights[[0, -1]] *= 0.5

        grads = self._grads_tf
        attrs = np.zeros_like(x)
        info = {k: np.zeros(x.shape[0]) for k in ("score", "baseline_score", "attribution_sum")}
        for i, image in enumerate(x):
            base = self.baseline(image, baseline)
            diff = image - base
            total = np.zeros_like(image)
            path_scores = np.zeros(steps + 1)
            for start in range(0, steps + 1, batch_size):
                a = alphas[start : start + batch_size]
                points = base[None] + a[:, None, None, None] * diff[None]
                s, g = grads(tf.constant(points))
                total += np.tensordot(weights[start : start + batch_size], g.numpy(), axes=1)
                path_scores[start : start + len(a)] = s.numpy()
            attrs[i] = diff * total
            info["score"][i] = path_scores[-1]
            info["baseline_score"][i] = path_scores[0]
            info["attribution_sum"][i] = float(attrs[i].astype(np.float64).sum())
        return attrs, info

    # ------------------------------------------------------------------------- Grad-CAM
    def _ensure_cam_model(self) -> None:
        if self._cam_model is None:
            name = find_cam_layer(self.model, self.input_shape)
            outputs = dict(self.model.output)
            outputs["cam"] = self.model.get_layer(name).output
            self._cam_model = keras.Model(self.model.inputs, outputs)

    def cam_reference(self, limit: int = 512) -> list[np.ndarray] | None:
        """Mean activation map of the run's classifier-train inliers at the Grad-CAM layer, per
        test view (``[h, w, c]`` each), or None when the training data cannot be loaded.

        A seeded subsample of at most ``limit`` images; computed once per explainer.
        """
        if self._cam_mean is None:
            self._ensure_cam_model()
            try:
                cls_x = build.load_data(self.config).cls_x
            except (UserError, OSError) as e:
                logger.warning(
                    "Grad-CAM without the inlier reference (%s); maps are relative to zero "
                    "activations",
                    str(e).splitlines()[0],
                )
                self._cam_mean = []
                return None
            rng = np.random.default_rng(int(self.config.seed))
            if len(cls_x) > limit:
                cls_x = cls_x[np.sort(rng.choice(len(cls_x), limit, replace=False))]
            sums = None
            for start in range(0, len(cls_x), 64):
                x = tf.constant(cls_x[start : start + 64].astype(np.float32) / 255.0)
                acts = [
                    tf.reduce_sum(tf.cast(self._cam_model(v, training=False)["cam"], tf.float32), 0)
                    for v in self._apply_views(x)
                ]
                sums = acts if sums is None else [s + a for s, a in zip(sums, acts)]
            self._cam_mean = [(s / len(cls_x)).numpy() for s in sums]
        return self._cam_mean or None

    def grad_cam(self, images: Any, classic: bool = False) -> np.ndarray:
        """Grad-CAM maps of ``F``, adapted to one-class scores.

        Default: at every position of the Grad-CAM layer (``find_cam_layer``), the first-order
        contribution to the score of that position's deviation from the inliers' mean
        activation there, ``Σ_c ∂F/∂A_c(h,w) · (A_c(h,w) − μ_c(h,w))``, then ReLU, bilinear
        upsampling and scaling to a maximum of 1. ``classic=True`` is Selvaraju et al.'s
        ``ReLU(Σ_c mean_hw(∂F/∂A_c) · A_c)``. Why not the classic one: a density score on
        L2-normalised features is invariant to scaling the features, so the classic map's
        positions sum to zero and it lights whatever raises the score relative to zero
        activation, often the normal background rather than the defect. On the fake stripes
        data (ResNet-18 width 0.25: untrained, and 2 epochs of contrastive or rotation; GDE and
        KDE), the default found a white quadrant 30-32 times out of 32 and a quadrant cut from
        an outlier 14-31 times (chance: 8); the classic map 1-14 times in 11 of the 12 cases
        (tests/unit/serving/test_explain.py checks the untrained GDE case).

        For the rotation score, the map of each rotated view is rotated back before the views
        are summed (the views must be pure rotations, as in ``x,+rotate90,+rotate180,…``).

        Args:
          images: ``[B, H, W, C]`` float32 in [0, 1] at the run's input shape.
          classic: the original Grad-CAM instead.

        Returns:
          ``[B, H, W]`` float32 maps, non-negative, each scaled to a maximum of 1 (all-zero
          when no location increases the score).
        """
        if not self._turns:
            raise ExplainError(
                "Grad-CAM of the rotation score needs test views that are pure rotations "
                "(e.g. x,+rotate90,+rotate180,+rotate270); use --method=ig"
            )
        self._ensure_cam_model()
        reference = None if classic else self.cam_reference()
        x = tf.constant(np.asarray(images, np.float32))
        h, w = x.shape[1], x.shape[2]
        with tf.GradientTape() as tape:
            views = self._apply_views(x)
            outs = [self._cam_model(v, training=False) for v in views]
            acts = [o["cam"] for o in outs]
            score = self._score_from_outputs(outs)
        grads = tape.gradient(score, acts)
        cam = tf.zeros([x.shape[0], h, w], tf.float32)
        for index, (act, grad, turns) in enumerate(zip(acts, grads, self._turns)):
            act, grad = tf.cast(act, tf.float32), tf.cast(grad, tf.float32)
            if classic:
                alpha = tf.reduce_mean(grad, axis=(1, 2), keepdims=True)
                m = tf.reduce_sum(alpha * act, axis=-1, keepdims=True)
            else:
                base = reference[index] if reference else tf.zeros_like(act[0])
                m = tf.reduce_sum(grad * (act - base), axis=-1, keepdims=True)
            m = tf.image.resize(m, (h, w), method="bilinear")
            # Undo the view's rotation so every view's map lies on the original image.
            cam += tf.image.rot90(m, k=(4 - turns) % 4)[..., 0]
        cam = tf.nn.relu(cam).numpy()
        peak = cam.reshape(cam.shape[0], -1).max(axis=1)
        return (cam / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)


# ----------------------------------------------------------------------------- IG helpers
def completeness_gap(info: dict[str, np.ndarray]) -> float:
    """Largest IG completeness error relative to the largest score change, ``[0, inf)``.

    ``max_i |Σ attr_i − (F(x_i) − F(x′_i))| / max_i |F(x_i) − F(x′_i)|``: normalising by the
    largest change of the batch keeps images whose score barely changes along the path (where a
    per-image ratio is noise over noise) from dominating. A few percent is typical at 64 steps;
    more steps shrink it.
    """
    delta = info["score"] - info["baseline_score"]
    gap = np.abs(info["attribution_sum"] - delta)
    scale = float(np.abs(delta).max())
    return float(gap.max() / scale) if scale > 0 else 0.0


def attribution_heatmap(attributions: np.ndarray) -> np.ndarray:
    """IG attributions ``[B, H, W, C]`` -> ``[B, H, W]`` in [0, 1].

    The magnitude of the per-pixel sum over channels, scaled by each image's 99th percentile
    (a few extreme pixels would otherwise make the rest of the map black).
    """
    mag = np.abs(attributions.sum(axis=-1))
    scale = np.percentile(mag.reshape(mag.shape[0], -1), 99, axis=1)
    return np.clip(mag / np.where(scale > 0, scale, 1.0)[:, None, None], 0.0, 1.0)
