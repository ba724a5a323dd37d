"""Export a trained detector as a self-contained TensorFlow SavedModel.

The SavedModel maps a batch of uint8 images ``[B, H, W, C]`` at the run's ``input_shape`` to a
dict of float64 anomaly scores, one per classifier, computed entirely in TensorFlow: the run's
test-time view 0, the encoder, and each classifier's ``tf_score`` on its saved state (stored as
non-trainable variables). Loading it needs only TensorFlow::

    m = tf.saved_model.load("export_dir")
    scores = m.serve(images)                     # or m.signatures["serving_default"](images=...)

The scores equal ``Detector.score``: the same classifiers the run fitted and evaluated.
Patch-level runs export image scores and the anomaly map instead (``export_patches.py``).
``assets.extra/droc_export.json`` records the classifiers, the feature, the input shape and the
run's inlier-score thresholds. Every scorer with a ``tf_score`` (``Scorer.tf_state`` non-empty)
can be exported; a new scorer needs nothing here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class import catalog, cli
from deep_representation_one_class import config as config_lib
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation.scorers import SCORERS
from deep_representation_one_class.serving import convert, saved_model_io
from deep_representation_one_class.serving.detector import Detector, read_run_config, view0_fn
from deep_representation_one_class.serving.export_patches import export_patch_saved_model
from deep_representation_one_class.training import build
from deep_representation_one_class.training.run_dir import is_run_output

EXPORT_INFO = saved_model_io.EXPORT_INFO
# The scorers whose descriptions mark them as export defaults (catalog.py).
DEFAULT_CLASSIFIERS = catalog.default_scorers("export")


class ExportError(UserError, ValueError):
    """The export cannot be written; the message says why and what to do."""


def exportable() -> list[str]:
    """Canonical names of the scorers that have a TensorFlow version."""
    return [n for n in SCORERS.names() if SCORERS.get(n).tf_state]


def build_module(detector: Detector) -> tf.Module:
    """A ``tf.Module`` whose ``serve`` maps uint8 images to the detector's scores.

    Args:
      detector: a loaded ``Detector``; all its classifiers must be exportable.

    Returns:
      The module (``serve``: uint8 ``[B, H, W, C]`` -> {classifier: [B] float64}).
    """
    h, w, c = detector.input_shape
    output_key = "pools" if detector.feature == "pool" else "embeds"
    view0 = view0_fn(detector.config)
    module = tf.Module(name="droc_detector")
    module.model = detector.model
    module.constants = {}
    fns = {}
    for name, scorer in detector.scorers.items():
        if not scorer.tf_state:
            raise ExportError(
                f"classifier '{name}' cannot be exported; valid: {', '.join(exportable())}"
            )
        state = scorer.state()
        variables = {
            key: tf.Variable(
                np.asarray(state[key], np.float64), trainable=False, name=f"{name}_{key}"
            )
            for key in scorer.tf_state
        }
        module.constants[name] = variables
        fns[name] = (type(scorer).tf_score, variables)

    def preprocess(image):
        return view0(image, tf.zeros([2], tf.int64))[0]

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
    def serve(images):
        x = tf.map_fn(preprocess, images, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        feats = module.model(x, training=False)[output_key]
        return {name: fn(variables, feats) for name, (fn, variables) in fns.items()}

    module.serve = serve
    return module


def _is_patch_run(run_dir: str) -> bool:
    """Whether the run is patch-level (served densely by ``export_patches.py``)."""
    return not build.task_for(read_run_config(run_dir)).servable


def _check_out(run_dir: str, out_dir: str, overwrite: bool) -> None:
    """Refuses an existing ``out_dir`` unless ``overwrite`` and it is an earlier export."""
    if is_run_output(run_dir, out_dir):
        raise ExportError(
            f"--out {out_dir} is the run folder or one of its own files; pick another"
        )
    inner = os.path.relpath(os.path.realpath(run_dir), os.path.realpath(out_dir))
    if not (inner == os.pardir or inner.startswith(os.pardir + os.sep)):
        # The other direction: replacing --out would delete the run inside it.
        raise ExportError(
            f"--model_dir {run_dir} lies inside --out {out_dir}; replacing it would delete the "
            "run; pick another --out"
        )
    if not os.path.lexists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise ExportError(f"--out {out_dir} exists and is a file; pick a new folder")
    if not os.listdir(out_dir):
        return
    if not os.path.exists(os.path.join(out_dir, EXPORT_INFO)):
        raise ExportError(
            f"--out {out_dir} is a non-empty folder that is not an earlier export; pick "
            "another folder"
        )
    if not overwrite:
        raise ExportError(f"--out {out_dir} holds an earlier export; add --overwrite to replace it")


def export_saved_model(
    run_dir: str,
    out_dir: str,
    classifiers: Sequence[str] = DEFAULT_CLASSIFIERS,
    feature: str = "pool",
    overwrite: bool = False,
) -> str:
    """Writes the run's detector as a SavedModel.

    Args:
      run_dir: a finished run folder.
      out_dir: destination folder: new or empty, or (with ``overwrite``) an earlier export.
      classifiers: scorers to include (any of ``exportable()``).
      feature: ``"pool"`` or ``"embed"``.
      overwrite: replace an earlier export in ``out_dir``.

    Returns:
      ``out_dir``. The SavedModel is written to a temporary folder next to it and renamed, so
      a crash never leaves a half-written export.

    Raises:
      ExportError: a classifier without a TF version, or an ``out_dir`` that may not be used.
      DetectorError: unusable run folder.
    """
    if _is_patch_run(run_dir):
        # Patch-level runs: image in, image scores and the anomaly map out.
        names = None if tuple(classifiers) == DEFAULT_CLASSIFIERS else list(classifiers)
        return export_patch_saved_model(run_dir, out_dir, names, feature, overwrite, _check_out)
    unknown = [n for n in classifiers if n not in SCORERS]
    names = classifiers_lib.canonical_names([n for n in classifiers if n in SCORERS])
    bad = unknown + [n for n in names if not SCORERS.get(n).tf_state]
    if bad:
        raise ExportError(
            f"classifier '{bad[0]}' cannot be exported; valid: {', '.join(exportable())}"
        )
    _check_out(run_dir, out_dir, overwrite)
    out_dir = os.path.abspath(out_dir)
    detector = Detector.load(run_dir, names, feature)
    module = build_module(detector)
    info = {
        "run_dir": os.path.abspath(run_dir),
        "classifiers": detector.classifiers,
        "feature": detector.feature,
        "input_shape": list(detector.input_shape),
        "input": (
            "uint8 [B, H, W, C] at input_shape, each image prepared by 'preprocessing'; "
            "scores: higher = more anomalous"
        ),
        "preprocessing": detector.spec.to_dict(),
        # The network's compute precision, the one the run's evaluation used.
        "compute_precision": config_lib.eval_compute_precision(detector.config),
        "thresholds": detector.thresholds,
    }
    saved_model_io.save_aside(module, out_dir, EXPORT_INFO, info)
    return out_dir


def export_model(
    run_dir: str,
    out_dir: str,
    fmt: str = "savedmodel",
    quantize: str = "none",
    classifiers: Sequence[str] = DEFAULT_CLASSIFIERS,
    feature: str = "pool",
    overwrite: bool = False,
) -> str:
    """Writes the run's detector in ``fmt``: ``savedmodel``, ``tflite`` or ``onnx``.

    TFLite and ONNX are converted from the SavedModel (``serving/convert.py``); ``quantize``
    (``"dynamic_int8"``) applies to TFLite. Arguments otherwise as ``export_saved_model``.

    Returns:
      ``out_dir`` (the model file inside it: ``convert.FORMATS[fmt].filename``).
    """
    spec = convert.check_format(fmt, quantize)
    if spec.convert is None:
        return export_saved_model(run_dir, out_dir, classifiers, feature, overwrite)
    _check_float32_run(run_dir, fmt)
    return convert.export_converted(
        run_dir,
        out_dir,
        fmt,
        quantize,
        classifiers,
        feature,
        overwrite,
        export_saved_model=export_saved_model,
        check_out=_check_out,
        info_path=EXPORT_INFO,
    )


def _check_float32_run(run_dir: str, fmt: str) -> None:
    """TFLite and ONNX compute in float32 (``convert.lower_to_float32``): a run evaluated in
    another precision (``--eval_precision=train`` of a mixed run) would be served with scores
    it never evaluated, so it is refused before anything is written."""
    evaluated = config_lib.eval_compute_precision(read_run_config(run_dir))
    if evaluated != "float32":
        raise ExportError(
            f"--format={fmt} computes in float32 but {run_dir} was evaluated in {evaluated}; "
            "re-evaluate it in float32 first: python -m deep_representation_one_class.evaluate "
            f"--model_dir={run_dir} --reextract --eval_precision=float32"
        )


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.export"),
        description="Export a trained run as a TensorFlow SavedModel, TFLite or ONNX model that "
        "maps uint8 images [B, H, W, C] to anomaly scores (loadable without this package).",
    )
    p.add_argument("--model_dir", required=True, help="run folder of a finished training run")
    p.add_argument("--out", required=True, help="destination folder of the SavedModel")
    p.add_argument(
        "--classifiers",
        default=",".join(DEFAULT_CLASSIFIERS),
        help=f"comma-separated scorers to include (auc = 1-NN); valid: {catalog.summary('scorer')}",
    )
    p.add_argument(
        "--feature",
        default="pool",
        choices=("pool", "embed"),
        help="features the classifiers use: pool = f (paper), embed = g(f)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument(
        "--format",
        default="savedmodel",
        choices=convert.FORMATS.names(),
        help="savedmodel (TensorFlow), tflite (model.tflite, LiteRT) or onnx (model.onnx; needs "
        "the [export] extra); see serving/convert.py",
    )
    p.add_argument(
        "--quantize",
        default="none",
        choices=convert.QUANTIZE,
        help="tflite only: dynamic_int8 stores weights as int8 (smaller; scores shift a little)",
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        names = [n.strip() for n in args.classifiers.split(",") if n.strip()]
        if args.format != "savedmodel" or args.quantize != "none":
            out = export_model(
                args.model_dir,
                args.out,
                args.format,
                args.quantize,
                names,
                args.feature,
                args.overwrite,
            )
            model_file = os.path.join(out, convert.FORMATS.get(args.format).filename)
            print(
                f"wrote {args.format} model {model_file} (classifiers: {', '.join(names)}; "
                f"{args.feature})"
            )
            return 0
        out = export_saved_model(args.model_dir, args.out, names, args.feature, args.overwrite)
        print(f"wrote SavedModel to {out} (classifiers: {', '.join(names)}; {args.feature})")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    """Console-script entry point."""
    cli.entry_point(main)


if __name__ == "__main__":
    run_cli()
