"""The runner: ``run(config)`` = checks, data, model, the training loop, the task's evaluation.

Run folder (``config.model_dir``)::

    config.json        the resolved configuration (written at start; the category as resolved)
    data.json          what the data resolved to: category given/resolved, classes, test digest
    .droc_run          marker: this folder belongs to a run (guards --force_init)
    .droc_lock         held while a process trains or evaluates the run
    checkpoints/       model + optimizer + step (resume point)
    tb/                TensorBoard events (scalars, augmented-view grid, config, AUROCs, hparams)
    embeddings.npz     features of the classifier-train and test sets (pool/embed[/logits])
    classifiers.npz    the fitted classifiers (+ classifiers.json), served as evaluated
    thresholds.json    inlier-score quantiles of every classifier
    scores.npz         the evaluation's test scores (the report shows these; nothing re-scores)
    summary.json       {"metrics": {"pool.kde": ...}, "config": {...}, "run": {...}}
    report.html        the run's page (+ report_files/), written last (--report)

Order of work: everything that can be checked is checked (config, folder, lock, data) before
the first file is written; see ``training.run_dir``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deep_representation_one_class import datasets
from deep_representation_one_class.config import Config
from deep_representation_one_class.datasets import preprocessing
from deep_representation_one_class.errors import RunError
from deep_representation_one_class.models import backbones
from deep_representation_one_class.reports import hparams, report
from deep_representation_one_class.training import (
    build,
    data_record,
    distribute,
    loop,
    run_dir,
    scratch,
)
from deep_representation_one_class.training.checkpoints import Checkpoints
from deep_representation_one_class.utils import hardware, run_folder

__all__ = ["RunResult", "run"]


@dataclasses.dataclass
class RunResult:
    """What ``run`` returns: metrics (AUROC x100) and bookkeeping."""

    metrics: dict[str, float]
    model_dir: str
    global_step: int
    status: str  # "complete", "already_complete", "worker_done" (non-chief)


def log_metrics(writer, step: int, metrics: dict[str, float]) -> None:
    with writer.as_default(step=step):
        for key, value in metrics.items():
            if np.isfinite(value):
                tf.summary.scalar(f"eval/{key.replace('.', '/')}_auroc", value)


def run(cfg: Config) -> RunResult:
    """Trains (or resumes) and evaluates one run described by a validated ``cfg``."""
    tf.get_logger().setLevel("ERROR")  # checkpoint-saver chatter; our own logs stay at INFO
    # The strategy comes first: MultiWorkerMirroredStrategy must configure the collective ops
    # before anything starts the TensorFlow runtime (data loading may).
    strategy = distribute.make_strategy(cfg.strategy)
    chief = distribute.is_chief(strategy)
    any_worker = distribute.any_worker_fn(strategy)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise RunError(
            f"--batch_size={cfg.batch_size} cannot be split evenly over "
            f"{strategy.num_replicas_in_sync} replicas; use a multiple of "
            f"{strategy.num_replicas_in_sync}"
        )
    # The task and its views, built once for the whole run (and checked: op parameters that
    # fail at this image size are refused here, before anything is written).
    task = build.task_for(cfg)
    # Read-only checks of the folder (marker, lock, settings, completeness). Only the chief
    # owns the folder; the other workers wait here (the all-reduce is a barrier) and learn
    # whether the run is already complete.
    state = run_dir.inspect(cfg) if chief else None
    complete = state is not None and state.complete
    if not complete:
        scratch.check(cfg)  # the from-scratch baseline's recipe works with these settings
    if any_worker(complete) and not chief:
        return RunResult({}, cfg.model_dir, 0, "already_complete")
    if complete:
        logging.info(
            "Run in %s is already complete; printing its results (use --force_init to retrain).",
            cfg.model_dir,
        )
        summary = state.summary
        if cfg.report:
            _finish_report(cfg)
        return RunResult(
            summary["metrics"], cfg.model_dir, summary["run"].get("global_step", 0),
            "already_complete",
        )  # fmt: skip

    # The data validates the category and the files before anything is written.
    t_start, cpu_start = time.time(), time.process_time()
    data = build.load_data(cfg, task)
    given = cfg.category
    if chief and state.is_run and not cfg.force_init:
        data_record.check_data_record(cfg.model_dir, data)  # e.g. '0' now resolves to another class
    if datasets.DATASETS.get(cfg.dataset).categories is None and data.category != cfg.category:
        # Open-set datasets resolve the category at load ('0' -> the first folder): store the
        # name, so that a class folder added later cannot change what the run evaluates.
        cfg = cfg.replace(category=data.category)
        task = task.with_config(cfg)  # the views do not depend on the category
    train_x = datasets.expand_distaug(data.train_x, cfg.distaug_type)
    plan = build.step_plan(cfg, len(train_x))
    folder = run_dir.RunFolder(cfg, state) if chief else None
    if folder is not None:
        folder.start(data_record.data_record(given, data))
        # How the images were prepared, for everything that serves the run (served ==
        # evaluated); rewritten on resume, since the evaluation uses the data as loaded now.
        preprocessing.write(cfg.model_dir, preprocessing.from_config(cfg, data.scale))
    try:
        return _train_and_evaluate(
            cfg, task, strategy, chief, any_worker, data, train_x, plan, (t_start, cpu_start)
        )
    except BaseException:
        if folder is not None and not folder.has_progress():
            folder.abort()
        raise
    finally:
        if folder is not None:
            folder.close()


def _finish_report(cfg: Config) -> None:
    """A complete run whose report.html is missing (the process was stopped while writing it)
    gets it now, under the run's lock, so that rerunning the command finishes the run."""
    if os.path.exists(run_folder.path(cfg.model_dir, run_folder.REPORT)):
        return
    lock = run_dir.Lock(cfg.model_dir)
    lock.acquire()
    try:
        logging.info("Run in %s is complete but has no report.html; writing it.", cfg.model_dir)
        report.try_write_run_report(cfg.model_dir)
    finally:
        lock.release()


def _train_and_evaluate(cfg, task, strategy, chief, any_worker, data, train_x, plan, start):
    t_start, cpu_start = start
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    views = task.views()
    logging.info(
        "Data %s/%s: %d train inliers (x%d distribution augmentation -> %d), %d "
        "classifier-train, %d test (%d outliers). %d steps of %d (%d steps/epoch, %d epochs).",
        cfg.dataset,
        cfg.category,
        len(data.train_x),
        datasets.distaug_factor(cfg.distaug_type),
        len(train_x),
        len(data.cls_x),
        len(data.test_x),
        int(data.test_y.sum()),
        plan.total_steps,
        cfg.batch_size,
        plan.steps_per_epoch,
        plan.num_epochs,
    )
    trainer = loop.Trainer(cfg, strategy, views.num_train, plan, task=task)
    model = trainer.model
    # Evaluation (and everything served later) computes in --eval_precision, from the same
    # float32 master weights: a separate network only when that differs from --precision.
    eval_model = build.EvalModel(cfg, model)
    logging.info(
        "Model %s: %d parameters; %d replica(s); precision %s, evaluated in %s.",
        model.name,
        model.count_params(),
        strategy.num_replicas_in_sync,
        cfg.precision,
        eval_model.cfg.precision,
    )
    checkpoints = Checkpoints(model, cfg.model_dir, chief, trainer.optimizer, trainer.step)
    # Every worker restores the chief's checkpoint (the run folder must be on a file system
    # all workers share).
    try:
        latest = checkpoints.restore_latest()
    except RunError:
        checkpoints.close()
        raise
    if latest:
        logging.info("Resumed from %s at step %d.", latest, int(trainer.step.numpy()))
    start_step = int(trainer.step.numpy())
    checkpoints.saved_step = start_step if latest else None
    writer = (
        tf.summary.create_file_writer(run_folder.path(cfg.model_dir, run_folder.TENSORBOARD))
        if chief
        else tf.summary.create_noop_writer()
    )
    with writer.as_default(step=start_step):
        tf.summary.text("config", "```\n" + cfg.to_json() + "\n```")
    with_logits = trainer.method.extra_eval != ()

    def periodic_eval(step: int, epoch: int) -> dict[str, float]:
        metrics = task.evaluate(eval_model.sync(), data, with_logits=with_logits).metrics
        log_metrics(writer, step, metrics)
        logging.info(
            "epoch %d eval: %s",
            epoch,
            ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
        )
        return metrics

    stop = loop.StopFlag()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    state = loop.TrainState(
        cfg,
        trainer,
        train_x,
        views.train,
        plan,
        checkpoints,
        writer,
        stop,
        chief,
        any_worker,
        periodic_eval if task.periodic_eval else None,
    )
    try:
        global_step = start_step
        if start_step < plan.total_steps:
            global_step = loop.train_loop(state, start_step)
        # Evaluation-only runs (random init, fixed ImageNet features) save their weights too,
        # so that every finished run can be served, exported and explained.
        checkpoints.save(global_step)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        checkpoints.close()
    if not chief:
        # Evaluation and every output file are the chief's; nothing below is collective.
        return RunResult({}, cfg.model_dir, global_step, "worker_done")
    train_seconds = time.time() - t_start
    train_cpu = time.process_time() - cpu_start

    t_eval, cpu_eval = time.time(), time.process_time()
    evaluation = task.evaluate(
        eval_model.sync(),
        data,
        with_logits=with_logits,
        run_dir=cfg.model_dir,
        writer=writer,
        step=global_step,
        scratch_trainer=scratch.train,
    )
    eval_seconds = time.time() - t_eval
    eval_cpu = time.process_time() - cpu_eval
    log_metrics(writer, global_step, evaluation.metrics)
    hparams.log_run(writer, cfg, evaluation.metrics)
    writer.flush()
    summary: dict[str, Any] = {
        "metrics": evaluation.metrics,
        "config": cfg.to_dict(),
        "backbone": backbones.describe(cfg),
        # What the evaluated features were computed in; serving checks it against config.json.
        "eval_precision": eval_model.cfg.precision,
        "run": {
            "global_step": global_step,
            "steps_per_epoch": plan.steps_per_epoch,
            "total_steps": plan.total_steps,
            "train_examples": len(train_x),
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            # CPU seconds of this process (all threads): unlike wall time, about the same on a
            # busy and on a quiet machine, so budgets can be compared across runs. This
            # session's part only when the run was resumed.
            "train_cpu_seconds": round(train_cpu, 2),
            "eval_cpu_seconds": round(eval_cpu, 2),
            "timings": {k: round(v, 4) for k, v in evaluation.timings.items()},
            "history": state.history,
            "complete": True,
            "num_replicas": strategy.num_replicas_in_sync,
            "classifier_fit": run_folder.CLASSIFIERS_META,
            "runtime": hardware.runtime_record(),
        },
        **evaluation.records,
    }
    run_folder.write_summary(cfg.model_dir, summary)
    if cfg.report:
        # After summary.json: the run is complete whatever happens to its report.
        t_report = time.time()
        if report.try_write_run_report(cfg.model_dir, data):
            logging.info("report.html written in %.1f s.", time.time() - t_report)
    return RunResult(evaluation.metrics, cfg.model_dir, global_step, "complete")
