"""Standalone evaluation of a saved run: re-fit and re-score its classifiers, or re-extract.

    python -m deep_representation_one_class.evaluate --model_dir=RUN [--classifiers=kde,gde]
    python -m deep_representation_one_class.evaluate --model_dir=RUN --reextract

Without ``--reextract`` only ``embeddings.npz`` is read, so classifiers can be compared on old
runs in seconds. Patch-level runs keep no features to re-score: with ``--reextract`` their whole
dense evaluation runs again from the checkpoint (e.g. after a change of the synthetic kinds).
With it, the model is rebuilt from ``config.json``, the latest checkpoint restored and the
features extracted again from the data. Either way the classifiers are fit once with the run's
protocol (``evaluation.classifiers``) and ``classifiers.npz``, ``thresholds.json`` and the
``summary.json`` metrics are rewritten (atomically), so the detector serves what was just
evaluated; the CLI then rewrites ``report.html`` if the run has one. This is also how a run
evaluated by an older version of the package (no ``classifiers.npz``) becomes servable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class import cli, resolve
from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import preprocessing
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.reports import report
from deep_representation_one_class.tasks import image as image_task
from deep_representation_one_class.training import build, data_record, run_dir, scratch
from deep_representation_one_class.utils import io

_EMBEDDING_KEYS = ("cls_pool", "cls_embed", "test_pool", "test_embed", "test_y")
# Arrays of embeddings.npz that must have one row per classifier-train / test image.
_EMBEDDING_ROWS = (
    ("cls_pool", "cls_embed"),
    ("test_pool", "test_embed", "test_y", "test_class"),
)


def load_embeddings(path: str, required: Sequence[str] = _EMBEDDING_KEYS) -> dict[str, np.ndarray]:
    """A run's ``embeddings.npz``, checked: keys, one row per image, [N, D] features of the
    same width for the classifier-train and the test set, labels in {0, 1}.

    Raises:
      CorruptFileError: naming the file and what is wrong with it.
    """
    arrays = io.load_npz(path, required=required, rows=_EMBEDDING_ROWS)
    for f in ("pool", "embed"):
        cls, test = arrays.get(f"cls_{f}"), arrays.get(f"test_{f}")
        shapes = [a.shape for a in (cls, test) if a is not None]
        if any(len(s) != 2 for s in shapes) or len({s[1] for s in shapes}) > 1:
            raise io.CorruptFileError(
                f"{path}: the {f} features have shapes {shapes}, expected [N, D] arrays of one "
                "width; restore it or rerun the command that writes it"
            )
    labels = arrays.get("test_y")
    if labels is not None and (labels.ndim != 1 or not np.isin(labels, (0, 1)).all()):
        raise io.CorruptFileError(f"{path}: test_y must be a [T] array of 0/1 labels")
    return arrays


def evaluate_run(
    run_path: str,
    classifiers: Sequence[str] | None = None,
    reextract: bool = False,
    root: str | None = None,
    precision: str | None = None,
) -> dict[str, float]:
    """Scores a saved run and updates its outputs; returns the metrics (AUROC x100).

    ``precision`` (with ``reextract``) extracts in another compute precision than the run was
    trained in, e.g. float32 features from a ``mixed_bfloat16`` run: the checkpointed weights
    are float32 under every policy, so any precision can restore them.
    """
    cfg_path = os.path.join(run_path, run_dir.CONFIG)
    if not os.path.exists(cfg_path):
        raise ConfigError(f"{run_path} is not a run folder (no config.json)")
    try:
        cfg = resolve.load(io.read_json(cfg_path, expect=dict))
    except (TypeError, ValueError) as e:
        if isinstance(e, io.CorruptFileError):
            raise
        raise io.CorruptFileError(f"cannot read {cfg_path}: {str(e).splitlines()[0]}") from None
    if classifiers:
        cfg = cfg.replace(classifiers=tuple(classifiers))
    if root:
        cfg = cfg.replace(root=root)
    if precision:
        if not reextract:
            raise ConfigError("--precision changes how features are extracted; add --reextract")
        cfg = cfg.replace(precision=precision)
    cfg = resolve.validate(cfg)
    task = build.task_for(cfg)
    patches = not isinstance(task, image_task.ImageTask)
    if patches and not reextract:
        raise ConfigError(
            f"{run_path} is a {task.name}-level run, which keeps no features to re-score; add "
            "--reextract to evaluate it again from its checkpoint"
        )
    emb_path = os.path.join(run_path, image_task.EMBEDDINGS)
    lock = run_dir.Lock(run_path)
    lock.acquire()
    records: dict = {}
    try:
        if patches:
            data = build.load_data(cfg)
            data_record.check_data_record(run_path, data)
            preprocessing.write(run_path, preprocessing.from_config(cfg, data.scale))
            model = _restored_model(cfg, run_path)
            evaluation = task.evaluate(
                model, data, with_logits=False, run_dir=run_path, scratch_trainer=scratch.train
            )
            metrics, records = evaluation.metrics, evaluation.records
        elif reextract:
            arrays = _reextract(cfg, run_path, task)
            io.write_npz(emb_path, **arrays)
        else:
            if not os.path.exists(emb_path):
                raise ConfigError(f"{emb_path} is missing; finish the run or use --reextract")
            arrays = load_embeddings(emb_path)
        if not patches:
            metrics, _ = image_task.score_saved_features(cfg, arrays, run_path)
        summary_path = os.path.join(run_path, run_dir.SUMMARY)
        summary = (
            io.read_json(summary_path, expect=dict)
            if os.path.exists(summary_path)
            else {"config": cfg.to_dict(), "run": {"complete": False}}
        )
        if not patches:
            # The baselines do not depend on the trained model: keep the ones the run measured.
            old = summary.get("metrics", {})
            metrics.update({k: v for k, v in old.items() if k.startswith("baseline_")})
        summary["metrics"] = metrics
        summary.update(records)  # e.g. the from-scratch baseline trained again
        summary["config"] = cfg.to_dict()
        if precision:
            summary["eval_precision"] = cfg.precision  # resolved ("auto" -> what ran)
        io.write_json(summary_path, summary)
    finally:
        lock.release()
    return metrics


def _restored_model(cfg, run_path):
    model = build.make_model(cfg)
    ckpt_dir = os.path.join(run_path, run_dir.CHECKPOINTS)
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise ConfigError(f"no checkpoint in {ckpt_dir}; nothing to re-extract")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model


def _reextract(cfg, run_path, task):
    data = build.load_data(cfg)
    data_record.check_data_record(run_path, data)  # the class evaluated is the run's, or refused
    # Records (or upgrades an older folder with) how the images were prepared.
    preprocessing.write(run_path, preprocessing.from_config(cfg, data.scale))
    model = _restored_model(cfg, run_path)
    with_logits = build.method_for(cfg).extra_eval != ()
    return task.extract(model, data, with_logits)


def build_parser() -> argparse.ArgumentParser:
    # argparse, not absl flags: only main.py defines absl flags, so that this module can be
    # imported next to the trainer without flag clashes.
    p = argparse.ArgumentParser(
        prog="python -m deep_representation_one_class.evaluate",
        description=__doc__.splitlines()[0],
    )
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
        choices=config_lib.PRECISION_CHOICES,
        help="extract in this precision instead of the run's (--reextract), "
        "e.g. float32 for a mixed_bfloat16 run",
    )
    p.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        classifiers = args.classifiers.split(",") if args.classifiers else None
        metrics = evaluate_run(
            args.model_dir, classifiers, args.reextract, args.root, args.precision
        )
        print(cli.format_table(metrics))
        if os.path.exists(os.path.join(args.model_dir, report.REPORT)):
            page = report.try_write_run_report(args.model_dir)
            if page:
                print(f"rewrote {page}")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    cli.entry_point(main)
