"""Explanations of a finished run: grids for its most anomalous and most normal test images (or
for given files) into ``<run>/explain/`` and TensorBoard, and the ``explain`` command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class import catalog, cli
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.reports import plots
from deep_representation_one_class.serving import detector as detector_lib
from deep_representation_one_class.serving.explain import (
    BASELINES,
    METHODS,
    Explainer,
    ExplainError,
    attribution_heatmap,
    completeness_gap,
)
from deep_representation_one_class.training import build, rescore
from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf


# ----------------------------------------------------------------------------- the run-level task
def _test_set(explainer: Explainer, feature: str):
    """Test images (float), their scores from embeddings.npz and captions."""
    cfg = explainer.config
    test_key = rf.feature_key(rf.TEST, feature)
    arrays = rescore.load_embeddings(
        rf.path(explainer.run_dir, rf.EMBEDDINGS), required=(rf.TEST_LABELS, test_key)
    )
    if explainer.detector is not None:
        scores = explainer.detector.score_features(arrays[test_key])[explainer.classifier]
    elif rf.TEST_VIEW_LOGITS in arrays:
        scores = scorers_lib.rotation_scores(arrays[rf.TEST_VIEW_LOGITS])[explainer.classifier]
    else:
        raise ExplainError("embeddings.npz has no test_view_logits; the run is not a rotation run")
    try:
        data = build.load_data(cfg)
    except ValueError as e:
        raise ExplainError(
            f"cannot load the run's test data ({str(e).splitlines()[0]}); pass --images to "
            "explain your own files instead"
        ) from None
    if data.test_x.shape[0] != scores.shape[0] or not np.array_equal(
        data.test_y, arrays[rf.TEST_LABELS]
    ):
        raise ExplainError(
            "the test data loaded now differ from the run's embeddings.npz (changed data?); "
            "pass --images instead"
        )
    names = data.class_names
    captions = [
        f"{'out' if y else 'in'} {names[c] if c < len(names) else c}"
        for y, c in zip(data.test_y, data.test_class)
    ]
    return data.test_x, scores, captions


def explain_run(
    run_dir: str,
    k: int = 8,
    classifier: str = "kde",
    method: str = "ig",
    *,
    feature: str = "pool",
    steps: int = 64,
    baseline: str = "black",
    images: str | Sequence[str] | None = None,
    out_dir: str | None = None,
    log_tensorboard: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Writes explanation grids of the k most anomalous and the k most normal images.

    Args:
      run_dir: a finished run folder.
      k: images per grid.
      classifier: ``kde``, ``gde``, ``kocsvm``, ``auc``, ``locsvm``, or ``dscore``/``logit``
        (rotation runs).
      method: ``ig`` (integrated gradients), ``gradcam`` (one-class Grad-CAM) or
        ``gradcam_classic``.
      feature: features of the feature classifiers.
      steps: IG intervals.
      baseline: IG baseline, ``black`` or ``blur``.
      images: explain these files (file, folder, glob) instead of the run's test set (which
        needs the run's data to be loadable).
      out_dir: where the PNGs go (default ``<run_dir>/explain``).
      log_tensorboard: also write the grids to ``<run_dir>/tb``.
      overwrite: replace PNGs that exist in a given ``out_dir`` (refused otherwise, before
        any work; the run's own ``explain/`` folder is always rewritten).

    Returns:
      The paths of the PNG files written: ``<classifier>_<method>_most_anomalous.png``,
      ``…_most_normal.png`` and ``<classifier>_<method>.png`` (both grids stacked).
    """
    if method not in METHODS:
        raise ExplainError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")
    if k < 1:
        raise ExplainError(f"--k must be >= 1, got {k}")
    explainer = Explainer(run_dir, classifier, feature)
    if out_dir is not None:
        for tag in ("_most_anomalous", "_most_normal", ""):
            name = f"{explainer.classifier}_{method}{tag}.png"
            io.Output(os.path.join(out_dir, name), overwrite).check()
    if images is not None:
        # Prepared as the run prepared its images (preprocessing.json).
        spec = detector_lib.read_preprocessing(explainer.run_dir, explainer.config)
        raw, paths = detector_lib.load_images(images, spec)
        x_all = raw.astype(np.float32) / 255.0
        scores = explainer.scores(x_all)
        captions = [os.path.basename(p) for p in paths]
        source = "images"
    else:
        raw, scores, captions = _test_set(explainer, feature)
        x_all = None
        source = "test set"
    order = np.argsort(-np.asarray(scores), kind="stable")
    picks = {"most_anomalous": order[:k], "most_normal": order[::-1][:k]}
    out_dir = out_dir or rf.path(run_dir, rf.EXPLAIN)
    written = []
    grids = {}
    for tag, idx in picks.items():
        x = x_all[idx] if x_all is not None else raw[idx].astype(np.float32) / 255.0
        what = f"{explainer.classifier}" + (f" ({feature})" if explainer.detector else "")
        if method == "ig":
            attrs, info = explainer.integrated_gradients(x, steps=steps, baseline=baseline)
            heat = attribution_heatmap(attrs)
            s = info["score"]
            how = f"IG ({baseline} baseline, {steps} steps, gap {completeness_gap(info):.1%})"
        else:
            heat = explainer.grad_cam(x, classic=method == "gradcam_classic")
            s = explainer.scores(x)
            how = "Grad-CAM"
        labels = [f"score {v:.4g}\n{captions[j]}" for v, j in zip(s, idx)]
        title = f"{what}, {how}: {len(idx)} {tag.replace('_', ' ')} ({source})"
        grid = plots.explanation_grid(x, heat, labels, title)
        path = os.path.join(out_dir, f"{explainer.classifier}_{method}_{tag}.png")
        plots.save_png(path, grid)
        written.append(path)
        grids[tag] = grid
    # Both grids in one figure (anomalous on top), the form shown in docs/serving.md.
    width = max(g.shape[1] for g in grids.values())
    both = np.concatenate(
        [
            np.pad(g, ((0, 8), (0, width - g.shape[1]), (0, 0)), constant_values=255)
            for g in grids.values()
        ]
    )
    path = os.path.join(out_dir, f"{explainer.classifier}_{method}.png")
    plots.save_png(path, both)
    written.append(path)
    if log_tensorboard:
        step = 0
        summary = rf.read_summary(run_dir)
        if summary is not None:
            step = int(summary.get("run", {}).get("global_step", 0))
        writer = tf.summary.create_file_writer(rf.path(run_dir, rf.TENSORBOARD))
        with writer.as_default(step=step):
            for tag, grid in grids.items():
                tf.summary.image(f"explain/{explainer.classifier}_{method}/{tag}", grid[None])
        writer.flush()
        writer.close()
    return written


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.explain"),
        description="Explain one-class scores with integrated gradients or Grad-CAM: PNG grids "
        "(image | heatmap | overlay) of the k most anomalous and k most normal test images.",
    )
    p.add_argument("--model_dir", required=True, help="run folder of a finished training run")
    p.add_argument("--k", type=int, default=8, help="images per grid (default 8)")
    p.add_argument(
        "--classifier",
        default="kde",
        help=f"score to explain: {catalog.summary('scorer')}, or dscore/logit (rotation runs)",
    )
    p.add_argument(
        "--method",
        default="ig",
        choices=METHODS,
        help="ig, gradcam (against the inliers' mean activations) or gradcam_classic",
    )
    p.add_argument("--feature", default="pool", choices=("pool", "embed"), help="features")
    p.add_argument("--steps", type=int, default=64, help="IG intervals (default 64)")
    p.add_argument("--baseline", default="black", choices=BASELINES, help="IG baseline")
    p.add_argument(
        "--images",
        help="explain these files (file, folder or glob) instead of the run's test set",
    )
    p.add_argument("--out", help="output folder (default: <model_dir>/explain)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace PNGs that already exist in --out"
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        paths = explain_run(
            args.model_dir,
            args.k,
            args.classifier,
            args.method,
            feature=args.feature,
            steps=args.steps,
            baseline=args.baseline,
            images=args.images,
            out_dir=args.out,
            overwrite=args.overwrite,
        )
        for path in paths:
            print(f"wrote {path}")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    """Console-script entry point."""
    cli.entry_point(main)


if __name__ == "__main__":
    run_cli()
