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

from deep_representation_one_class import cli, resolve
from deep_representation_one_class import config as config_lib
from deep_representation_one_class.datasets import preprocessing
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.reports import report
from deep_representation_one_class.tasks import image as image_task
from deep_representation_one_class.training import build, checkpoints, data_record, run_dir, scratch
from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf


def load_embeddings(
    path: str, required: Sequence[str] = rf.EMBEDDING_KEYS
) -> dict[str, np.ndarray]:
    """A run's ``embeddings.npz``, checked: keys, one row per image, [N, D] features of the
    same width for the classifier-train and the test set, labels in {0, 1}.

    Raises:
      CorruptFileError: naming the file and what is wrong with it.
    """
    arrays = io.load_npz(path, required=required, rows=rf.EMBEDDING_ROWS)
    for f in rf.FEATURES:
        cls, test = arrays.get(rf.feature_key(rf.CLS, f)), arrays.get(rf.feature_key(rf.TEST, f))
        shapes = [a.shape for a in (cls, test) if a is not None]
        if any(len(s) != 2 for s in shapes) or len({s[1] for s in shapes}) > 1:
            raise io.CorruptFileError(
                f"{path}: the {f} features have shapes {shapes}, expected [N, D] arrays of one "
                "width; restore it or rerun the command that writes it"
            )
    labels = arrays.get(rf.TEST_LABELS)
    if labels is not None and (labels.ndim != 1 or not np.isin(labels, (0, 1)).all()):
        raise io.CorruptFileError(f"{path}: {rf.TEST_LABELS} must be a [T] array of 0/1 labels")
    return arrays


def evaluate_run(
    run_path: str,
    classifiers: Sequence[str] | None = None,
    reextract: bool = False,
    root: str | None = None,
    precision: str | None = None,
    eval_precision: str | None = None,
) -> dict[str, float]:
    """Scores a saved run and updates its outputs; returns the metrics (AUROC x100).

    ``eval_precision`` (with ``reextract``) sets the run's ``--eval_precision`` (``float32``
    or ``train``): the features are extracted again in it, the classifiers refit, and
    ``config.json`` records it, so that the run is served as it was just evaluated (the
    checkpointed weights are float32 under every policy, so any precision restores them). This
    is how a run evaluated in bfloat16 becomes a float32-served one. ``precision`` names the
    extraction precision instead: float32, or the run's training precision (``auto`` resolved).
    """
    cfg_path = rf.path(run_path, rf.CONFIG)
    if not os.path.exists(cfg_path):
        raise ConfigError(f"{run_path} is not a run folder (no {rf.CONFIG})")
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
    cfg = resolve.validate(cfg)
    changed = _eval_precision_from_flags(cfg, precision, eval_precision, reextract)
    if changed:
        cfg = cfg.replace(eval_precision=changed)
    task = build.task_for(cfg)
    patches = not isinstance(task, image_task.ImageTask)
    if patches and not reextract:
        raise ConfigError(
            f"{run_path} is a {task.name}-level run, which keeps no features to re-score; add "
            "--reextract to evaluate it again from its checkpoint"
        )
    emb_path = rf.path(run_path, rf.EMBEDDINGS)
    lock = run_dir.Lock(run_path)
    lock.acquire()
    raw = io.read_json(cfg_path, expect=dict)
    records: dict = {}
    try:
        if changed:
            # config.json first, summary.json last: a process killed in between leaves the two
            # disagreeing, which serving refuses (run_loading.check_eval_precision); an error
            # puts the old config.json back.
            io.write_json(cfg_path, {**raw, "eval_precision": changed})
        if patches:
            data = build.load_data(cfg, task)
            data_record.check_data_record(run_path, data)
            preprocessing.write(run_path, preprocessing.from_config(cfg, data.scale))
            model = _restored_model(cfg, run_path, task)
            evaluation = task.evaluate(
                model, data, with_logits=False, run_dir=run_path, scratch_trainer=scratch.train
            )
            metrics, records = evaluation.metrics, evaluation.records
        elif reextract:
            arrays = _reextract(cfg, run_path, task)
            rf.write_embeddings(run_path, arrays)
        else:
            if not os.path.exists(emb_path):
                raise ConfigError(f"{emb_path} is missing; finish the run or use --reextract")
            arrays = load_embeddings(emb_path)
        if not patches:
            metrics, _ = image_task.score_saved_features(cfg, arrays, run_path)
        summary = rf.read_summary(run_path) or {"config": cfg.to_dict(), "run": {"complete": False}}
        if not patches:
            # The baselines do not depend on the trained model: keep the ones the run measured.
            old = summary.get("metrics", {})
            metrics.update({k: v for k, v in old.items() if k.startswith("baseline_")})
        summary["metrics"] = metrics
        summary.update(records)  # e.g. the from-scratch baseline trained again
        summary["config"] = cfg.to_dict()
        if reextract:
            # Without --reextract the saved features keep the precision already recorded.
            summary["eval_precision"] = config_lib.eval_compute_precision(cfg)
        rf.write_summary(run_path, summary)
    except BaseException:
        if changed:
            io.write_json(cfg_path, raw)
        raise
    finally:
        lock.release()
    return metrics


def _eval_precision_from_flags(cfg, precision, eval_precision, reextract) -> str | None:
    """The run's new ``--eval_precision`` from evaluate's flags (None: unchanged).

    Raises:
      ConfigError: a flag without ``--reextract``, an extraction precision that is neither
        float32 nor the training one, or the two flags disagreeing.
    """
    if not (precision or eval_precision):
        return None
    flag = "--precision" if precision else "--eval_precision"
    if not reextract:
        raise ConfigError(f"{flag} changes how features are extracted; add --reextract")
    wanted = eval_precision
    if precision:
        resolved = resolve.resolve_precision(precision)
        if resolved == "float32":
            from_precision = "float32"
        elif resolved == cfg.precision:
            from_precision = "train"
        else:
            raise ConfigError(
                f"--precision={precision} is neither float32 nor the run's training precision "
                f"({cfg.precision}); evaluation computes in one of them (--eval_precision)"
            )
        if wanted and wanted != from_precision:
            raise ConfigError(
                f"--precision={precision} and --eval_precision={wanted} disagree; give one"
            )
        wanted = from_precision
    if wanted not in config_lib.EVAL_PRECISIONS:
        raise ConfigError(
            f"unknown --eval_precision '{wanted}'; valid: {', '.join(config_lib.EVAL_PRECISIONS)}"
        )
    return wanted


def _restored_model(cfg, run_path, task):
    # The network of the run's evaluation precision; the float32 checkpoint restores into it.
    model = build.make_model(build.eval_config(cfg), task=task)
    checkpoints.restore(run_path, model, missing_hint="nothing to re-extract")
    return model


def _reextract(cfg, run_path, task):
    data = build.load_data(cfg, task)
    data_record.check_data_record(run_path, data)  # the class evaluated is the run's, or refused
    # Records (or upgrades an older folder with) how the images were prepared.
    preprocessing.write(run_path, preprocessing.from_config(cfg, data.scale))
    model = _restored_model(cfg, run_path, task)
    with_logits = build.method_for(cfg).extra_eval != ()
    return task.extract(model, data, with_logits)


def build_parser() -> argparse.ArgumentParser:
    # argparse, not absl flags: only main.py defines absl flags, so that this module can be
    # imported next to the trainer without flag clashes.
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.evaluate"),
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
        help="extract in this precision (--reextract): float32 or the run's training "
        "precision; recorded as the run's --eval_precision",
    )
    p.add_argument(
        "--eval_precision",
        default=None,
        choices=config_lib.EVAL_PRECISIONS,
        help="set the run's --eval_precision and extract in it (--reextract): float32, or "
        "train (its training precision); the run is then served the same way",
    )
    p.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        classifiers = args.classifiers.split(",") if args.classifiers else None
        metrics = evaluate_run(
            args.model_dir,
            classifiers,
            args.reextract,
            args.root,
            args.precision,
            args.eval_precision,
        )
        print(cli.format_table(metrics))
        if os.path.exists(rf.path(args.model_dir, rf.REPORT)):
            page = report.try_write_run_report(args.model_dir)
            if page:
                print(f"rewrote {page}")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    cli.entry_point(main)
