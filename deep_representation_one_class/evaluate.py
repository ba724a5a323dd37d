"""Standalone evaluation of a saved run: re-score its embeddings, or re-extract them.

    python -m deep_representation_one_class.evaluate --model_dir=RUN [--classifiers=kde,gde]
    python -m deep_representation_one_class.evaluate --model_dir=RUN --reextract

Without ``--reextract`` only ``embeddings.npz`` is read (no data, no TensorFlow model), so
classifiers can be compared on old runs in seconds. With it, the model is rebuilt from
``config.json``, the latest checkpoint restored and the features extracted again from the data.
The metrics are written back into ``summary.json`` (atomically) and printed.
"""

from __future__ import annotations

import argparse
import os
import sys

from absl import logging

from deep_representation_one_class import cli


def evaluate_run(
    run_dir: str,
    classifiers=None,
    reextract: bool = False,
    root: str | None = None,
    precision: str | None = None,
) -> dict[str, float]:
    """Scores a saved run and updates its summary.json; returns the metrics (AUROC x100).

    ``precision`` (with ``reextract``) extracts in another compute precision than the run was
    trained in, e.g. float32 features from a ``mixed_bfloat16`` run: the checkpointed weights
    are float32 under every policy, so any precision can restore them.
    """
    import numpy as np

    from deep_representation_one_class import config as config_lib
    from deep_representation_one_class.evaluation import metrics as metrics_lib
    from deep_representation_one_class.evaluation import scorers as scorers_lib
    from deep_representation_one_class.utils import io

    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise config_lib.ConfigError(f"{run_dir} is not a run folder (no config.json)")
    cfg = config_lib.Config.from_dict(io.read_json(cfg_path))
    if classifiers:
        cfg = cfg.replace(classifiers=tuple(classifiers))
    if root:
        cfg = cfg.replace(root=root)
    if precision:
        if not reextract:
            raise config_lib.ConfigError(
                "--precision changes how features are extracted; add --reextract"
            )
        cfg = cfg.replace(precision=precision)
    cfg = config_lib.validate(cfg)
    emb_path = os.path.join(run_dir, "embeddings.npz")
    if reextract:
        metrics, arrays = _reextract(cfg, run_dir)
        io.write_npz(emb_path, **arrays)
    else:
        if not os.path.exists(emb_path):
            raise config_lib.ConfigError(
                f"{emb_path} is missing; finish the run or use --reextract"
            )
        emb = dict(np.load(emb_path))
        if "cls_pool" not in emb:
            raise config_lib.ConfigError(
                f"{emb_path} holds patch-level results; re-run the training command to re-evaluate"
            )
        metrics = metrics_lib.evaluate_features(
            {"pool": emb["cls_pool"], "embed": emb["cls_embed"]},
            {"pool": emb["test_pool"], "embed": emb["test_embed"]},
            emb["test_y"],
            scorers=cfg.classifiers,
        )
        if "test_view_logits" in emb:
            for key, s in scorers_lib.rotation_scores(emb["test_view_logits"]).items():
                metrics[f"{key}.auc"] = metrics_lib.auroc(emb["test_y"], s)
    summary_path = os.path.join(run_dir, "summary.json")
    summary = (
        io.read_json(summary_path)
        if os.path.exists(summary_path)
        else {"config": cfg.to_dict(), "run": {"complete": False}}
    )
    summary["metrics"] = metrics
    if precision:
        summary["eval_precision"] = precision
    io.write_json(summary_path, summary)
    return metrics


def _reextract(cfg, run_dir):
    import tensorflow as tf

    from deep_representation_one_class import methods, train_lib

    data = train_lib.load_data(cfg)
    model = train_lib.make_model(cfg)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest is None:
        logging.warning("No checkpoint in %s: evaluating the initial weights.", ckpt_dir)
    else:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    _, test_fn, _, n_test = train_lib.make_view_fns(cfg)
    with_logits = methods.METHODS.get(cfg.method).extra_eval != ()
    metrics, arrays, _ = train_lib.evaluate_model(model, data, test_fn, n_test, cfg, with_logits)
    return metrics, arrays


def build_parser() -> argparse.ArgumentParser:
    # argparse, not absl flags: only main.py defines absl flags, so that this module can be
    # imported next to the trainer without flag clashes.
    p = argparse.ArgumentParser(prog="droc-evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="run folder with config.json")
    p.add_argument(
        "--classifiers", default=None, help="comma-separated classifiers (default: the run's)"
    )
    p.add_argument(
        "--reextract",
        action="store_true",
        help="rebuild the model from its checkpoint and extract the features again "
        "(needs the dataset)",
    )
    p.add_argument("--root", default=None, help="override the run's data root (--reextract)")
    p.add_argument(
        "--precision",
        default=None,
        help="extract in this precision instead of the run's (--reextract), "
        "e.g. float32 for a mixed_bfloat16 run",
    )
    p.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deep_representation_one_class import train_lib

    classifiers = args.classifiers.split(",") if args.classifiers else None
    metrics = evaluate_run(args.model_dir, classifiers, args.reextract, args.root, args.precision)
    print(train_lib.format_table(metrics))
    return 0


def run_cli() -> None:
    cli.quiet_tensorflow()
    cli.require_tensorflow()
    logging.set_verbosity(logging.INFO)
    sys.exit(cli.guard(main, verbose="--verbose" in sys.argv))


if __name__ == "__main__":
    run_cli()
