"""Export a trained detector as a self-contained TensorFlow SavedModel.

The SavedModel maps a batch of uint8 images ``[B, H, W, C]`` at the run's ``input_shape`` to a
dict of float64 anomaly scores, one per classifier, computed entirely in TensorFlow: the run's
test-time view 0, the encoder, the L2 normalisation the scorers apply, and the fitted
classifier parameters stored as (non-trainable) variables. Loading it needs only TensorFlow::

    m = tf.saved_model.load("export_dir")
    scores = m.serve(images)                     # or m.signatures["serving_default"](images=...)

The scores equal ``Detector.score`` (same fitted classifiers, including the 90% fit rows of
``cls_holdout`` thresholds). ``assets.extra/droc_export.json`` records the classifiers, the
feature, the input shape and the run's inlier-score thresholds. The TF scoring functions here
(``tf_scorer``) are differentiable and are reused by the explanations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.utils import io

EXPORT_INFO = os.path.join("assets.extra", "droc_export.json")
DEFAULT_CLASSIFIERS = ("kde", "gde", "kocsvm")
# Every feature-based scorer of evaluation/scorers.py has a TF twin below.
TF_SCORERS = ("kde", "gde", "kocsvm", "auc", "locsvm")


class ExportError(ValueError):
    """The export cannot be written; the message says why and what to do."""


# ----------------------------------------------------------------------------- TF scorers
def _normalize(z):
    import tensorflow as tf

    # Same rule as scorers.l2_normalize: divide by max(norm, 1e-12).
    return z / tf.maximum(tf.norm(z, axis=-1, keepdims=True), tf.constant(1e-12, z.dtype))


def tf_scorer(name: str, state: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A TensorFlow function computing one fitted scorer's anomaly score.

    Args:
      name: canonical scorer key, one of ``TF_SCORERS``.
      state: ``Scorer.state()`` of the fitted scorer (numpy arrays, or tf variables/tensors of
        the same names and float64 dtype).

    Returns:
      ``fn(feats [B, D] float) -> [B] float64``, differentiable in ``feats``, equal to
      ``Scorer.score`` up to float64 round-off.
    """
    import tensorflow as tf

    def const(key):
        value = state[key]
        if isinstance(value, (tf.Variable, tf.Tensor)):
            return value
        return tf.constant(np.asarray(value, dtype=np.float64))

    if name == "kde":

        def kde(feats):
            z = _normalize(tf.cast(feats, tf.float64))
            gamma = const("gamma")
            # s = -(1/γ) logsumexp_j(2γ ⟨z̄, b_j⟩); reduce_logsumexp subtracts the row maximum,
            # so large 2γ (concentrated features) cannot overflow.
            logits = (2.0 * gamma) * tf.matmul(z, const("bank"), transpose_b=True)
            return -tf.reduce_logsumexp(logits, axis=1) / gamma

        return kde
    if name == "gde":

        def gde(feats):
            z = _normalize(tf.cast(feats, tf.float64))
            # The Cholesky factor U of the precision (UUᵀ = Σ⁻¹) is better conditioned than
            # the explicit quadratic form with Σ⁻¹.
            y = tf.matmul(z - const("mean"), const("precision_cholesky"))
            return 0.5 * tf.reduce_sum(tf.square(y), axis=1) + const("log_norm")

        return gde
    if name == "kocsvm":

        def kocsvm(feats):
            z = _normalize(tf.cast(feats, tf.float64))
            sv = const("support_vectors")
            sq = (
                tf.reduce_sum(tf.square(z), axis=1, keepdims=True)
                + tf.reduce_sum(tf.square(sv), axis=1)[None, :]
                - 2.0 * tf.matmul(z, sv, transpose_b=True)
            )
            kernel = tf.exp(-const("gamma") * tf.maximum(sq, 0.0))
            return -tf.linalg.matvec(kernel, const("dual_coef"))

        return kocsvm
    if name == "auc":

        def nearest(feats):
            z = _normalize(tf.cast(feats, tf.float64))
            return 1.0 - tf.reduce_max(tf.matmul(z, const("bank"), transpose_b=True), axis=1)

        return nearest
    if name == "locsvm":

        def linear(feats):
            # Reference behaviour: the linear OC-SVM sees the raw (un-normalised) features.
            return -tf.linalg.matvec(tf.cast(feats, tf.float64), const("coef"))

        return linear
    raise ExportError(f"no TensorFlow scorer for '{name}'; valid: {', '.join(TF_SCORERS)}")


# Only the arrays a TF scorer reads are exported (e.g. not the GDE's explicit precision).
_STATE_KEYS = {
    "kde": ("bank", "gamma"),
    "gde": ("mean", "precision_cholesky", "log_norm"),
    "kocsvm": ("support_vectors", "dual_coef", "gamma"),
    "auc": ("bank",),
    "locsvm": ("coef",),
}


def build_module(detector):
    """A ``tf.Module`` whose ``serve`` maps uint8 images to the detector's scores.

    Args:
      detector: a loaded ``Detector``; all its classifiers must be in ``TF_SCORERS``.

    Returns:
      The module (``serve``: uint8 ``[B, H, W, C]`` -> {classifier: [B] float64}).
    """
    import tensorflow as tf

    from deep_representation_one_class.detector import view0_fn

    h, w, c = detector.input_shape
    output_key = "pools" if detector.feature == "pool" else "embeds"
    view0 = view0_fn(detector.config)
    module = tf.Module(name="droc_detector")
    module.model = detector.model
    module.constants = {}
    fns = {}
    for name, scorer in detector.scorers.items():
        if name not in _STATE_KEYS:
            raise ExportError(
                f"classifier '{name}' cannot be exported; valid: {', '.join(TF_SCORERS)}"
            )
        state = scorer.state()
        variables = {
            key: tf.Variable(
                np.asarray(state[key], np.float64), trainable=False, name=f"{name}_{key}"
            )
            for key in _STATE_KEYS[name]
        }
        module.constants[name] = variables
        fns[name] = tf_scorer(name, variables)

    def preprocess(image):
        return view0(image, tf.zeros([2], tf.int64))[0]

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
    def serve(images):
        x = tf.map_fn(preprocess, images, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        feats = module.model(x, training=False)[output_key]
        return {name: fn(feats) for name, fn in fns.items()}

    module.serve = serve
    return module


def export_saved_model(
    run_dir: str,
    out_dir: str,
    classifiers: Sequence[str] = DEFAULT_CLASSIFIERS,
    feature: str = "pool",
) -> str:
    """Writes the run's detector as a SavedModel.

    Args:
      run_dir: a finished run folder.
      out_dir: destination folder; a previous export there is replaced, any other non-empty
        folder is refused.
      classifiers: scorers to include (any of ``TF_SCORERS``).
      feature: ``"pool"`` or ``"embed"``.

    Returns:
      ``out_dir``. The SavedModel is written to a temporary folder next to it and renamed, so
      a crash never leaves a half-written export.

    Raises:
      ExportError: unknown classifier or a non-empty ``out_dir`` that is not an export.
      DetectorError: unusable run folder.
    """
    import tensorflow as tf

    from deep_representation_one_class.detector import Detector

    for name in classifiers:
        if name.lower() not in TF_SCORERS:
            raise ExportError(
                f"classifier '{name}' cannot be exported; valid: {', '.join(TF_SCORERS)}"
            )
    out_dir = os.path.abspath(out_dir)
    if (
        os.path.isdir(out_dir)
        and os.listdir(out_dir)
        and not os.path.exists(os.path.join(out_dir, EXPORT_INFO))
    ):
        raise ExportError(
            f"--out {out_dir} is a non-empty folder that is not an earlier export; pick "
            "another folder"
        )
    detector = Detector.load(run_dir, classifiers, feature)
    module = build_module(detector)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_export_", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        io.write_json(
            os.path.join(tmp, EXPORT_INFO),
            {
                "run_dir": os.path.abspath(run_dir),
                "classifiers": detector.classifiers,
                "feature": detector.feature,
                "input_shape": list(detector.input_shape),
                "input": "uint8 [B, H, W, C] at input_shape; scores: higher = more anomalous",
                "thresholds": detector.thresholds,
            },
        )
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=".tmp_old_export_", dir=parent)
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m deep_representation_one_class.export",
        description="Export a trained run as a TensorFlow SavedModel that maps uint8 images "
        "[B, H, W, C] to anomaly scores (loadable with tf.saved_model.load alone).",
    )
    p.add_argument("--model_dir", required=True, help="run folder of a finished training run")
    p.add_argument("--out", required=True, help="destination folder of the SavedModel")
    p.add_argument(
        "--classifiers",
        default=",".join(DEFAULT_CLASSIFIERS),
        help=f"comma-separated scorers to include, from {', '.join(TF_SCORERS)}",
    )
    p.add_argument(
        "--feature",
        default="pool",
        choices=("pool", "embed"),
        help="features the classifiers use: pool = f (paper), embed = g(f)",
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from deep_representation_one_class import cli
    from deep_representation_one_class.detector import DetectorError

    args = build_parser().parse_args(argv)

    def run() -> int:
        try:
            names = [n.strip() for n in args.classifiers.split(",") if n.strip()]
            out = export_saved_model(args.model_dir, args.out, names, args.feature)
        except (ExportError, DetectorError) as e:
            print(f"error: {e}", file=sys.stderr)
            return cli.EXIT_USAGE
        print(f"wrote SavedModel to {out} (classifiers: {', '.join(names)}; {args.feature})")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    """Console-script entry point."""
    from deep_representation_one_class import cli

    cli.entry_point(main)


if __name__ == "__main__":
    run_cli()
