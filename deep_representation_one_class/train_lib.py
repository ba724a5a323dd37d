"""The runner: data, model, distributed training loop, checkpoints, TensorBoard, evaluation.

``run(config)`` composes the small modules; methods only supply per-example losses.

Run folder (``config.model_dir``)::

    config.json        the resolved configuration (written at start)
    .droc_run          marker: this folder belongs to a run (guards --force_init)
    checkpoints/       model + optimizer + step (resume point)
    tb/                TensorBoard events (scalars, augmented-view grid, config text, AUROCs)
    embeddings.npz     features of the classifier-train and test sets (pool/embed[/logits])
    summary.json       {"metrics": {"pool.kde": ...}, "config": {...}, "run": {...}}
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import datasets, distribute, methods, pipeline, plots
from deep_representation_one_class import thresholds as thresholds_lib
from deep_representation_one_class.augment import grammar
from deep_representation_one_class.evaluation import features as features_lib
from deep_representation_one_class.evaluation import metrics as metrics_lib
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.models import build_model
from deep_representation_one_class.utils import io
from deep_representation_one_class.utils.schedules import ReferenceSchedule

# Flags that may change between a run and its resumption without invalidating checkpoints.
RESUMABLE_CHANGES = {
    "model_dir",
    "force_init",
    "eval_batch_size",
    "classifiers",
    "steps_per_call",
    "jit_compile",
    "eval_every",
    "ckpt_epoch",
    "ckpt_steps",
    "strategy",
    "deterministic",
    "cache_dir",
    "skip_corrupt",
    "root",
    "sync_bn",
}


class RunError(RuntimeError):
    """A run cannot proceed; the message says why and what to do."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or Inf."""


@dataclasses.dataclass
class RunResult:
    """What ``run`` returns: metrics (AUROC x100) and bookkeeping."""

    metrics: dict[str, float]
    model_dir: str
    global_step: int
    status: str  # "complete", "already_complete", "interrupted", "worker_done" (non-chief)


# ----------------------------------------------------------------------------- run folder
def _prepare_run_dir(cfg: config_lib.Config) -> str | None:
    """Creates/validates the run folder. Returns 'complete' if a finished run is there."""
    run_dir = cfg.model_dir
    marker = os.path.join(run_dir, io.RUN_MARKER)
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if cfg.force_init:
            if not os.path.exists(marker):
                raise RunError(
                    f"--force_init refuses to delete {run_dir}: it is not a run folder "
                    f"(no {io.RUN_MARKER} marker); pick another --model_dir"
                )
            shutil.rmtree(run_dir)
        elif not os.path.exists(marker):
            raise RunError(
                f"--model_dir {run_dir} exists and is not a run folder; pick an empty or new folder"
            )
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise RunError(f"cannot write to --model_dir {run_dir}: {e.strerror}") from None
    old_cfg_path = os.path.join(run_dir, "config.json")
    summary = os.path.join(run_dir, "summary.json")
    old_cfg = None
    if os.path.exists(old_cfg_path):
        old_cfg = io.read_json(old_cfg_path)
    elif os.path.exists(summary):
        # config.json lost (deleted by hand): the summary's copy still protects the results.
        old_cfg = io.read_json(summary).get("config")
    if old_cfg is not None:
        # Keys absent from an older config.json take today's defaults (forward compatible).
        old = {**config_lib.Config().to_dict(), **old_cfg}
        new = cfg.to_dict()
        diff = sorted(
            k
            for k in set(old) | set(new)
            if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)
        )
        if diff:
            shown = ", ".join(f"--{k}={old.get(k)!r}->{new.get(k)!r}" for k in diff[:4])
            raise RunError(
                f"{run_dir} holds a run with different settings ({shown}); use "
                f"another --model_dir or --force_init to start over"
            )
    with open(marker, "w") as f:
        f.write("deep_representation_one_class run folder\n")
    io.write_json(old_cfg_path, cfg.to_dict())
    if os.path.exists(summary) and io.read_json(summary).get("run", {}).get("complete"):
        return "complete"
    return None


# ----------------------------------------------------------------------------- building blocks
def is_patch_task(cfg: config_lib.Config) -> bool:
    """Patch-level tasks (MVTec AD) train on random patches and score densely."""
    return cfg.dataset == "mvtec"


def make_view_fns(cfg: config_lib.Config):
    """Returns (train view fn, test view fn, number of train views, number of test views)."""
    size = int(cfg.input_shape[0])
    train_views = grammar.parse(cfg.aug_list)
    train_fn = grammar.build_view_fn(
        train_views, size, training=True, reference_blur=cfg.blur_as_reference
    )
    if cfg.aug_list_for_test:
        test_views = grammar.parse(cfg.aug_list_for_test)
        test_fn = grammar.build_view_fn(
            test_views, size, training=True, reference_blur=cfg.blur_as_reference
        )
    else:
        # The reference's test pipeline: view 0 in test mode (random ops off, crops -> resize).
        test_views = train_views[:1]
        test_fn = grammar.build_view_fn(test_views, size, training=False)
    if is_patch_task(cfg):
        from deep_representation_one_class.mvtec import patches

        train_fn = patches.patch_view_fn(train_views, cfg)
    return train_fn, test_fn, len(train_views), len(test_views)


def make_model(cfg: config_lib.Config) -> keras.Model:
    dtype = None if cfg.precision == "float32" else cfg.precision
    shape = cfg.input_shape
    if is_patch_task(cfg):  # the stem is chosen by the patch size, not the image size
        shape = (cfg.patch_size, cfg.patch_size, cfg.input_shape[2])
    return build_model(
        cfg.net_type,
        cfg.net_width,
        shape,
        cfg.head_dims,
        cfg.latent_dim,
        sync_bn=cfg.sync_bn,
        dtype=dtype,
        float32_stages=cfg.float32_stages,
    )


def make_optimizer(cfg: config_lib.Config, total_steps: int, spe: int):
    period = spe if cfg.sched_freq == "epoch" else 1
    schedule = ReferenceSchedule(
        cfg.learning_rate,
        cfg.sched_type,
        total_steps,
        period=period,
        min_rate=cfg.sched_min_rate,
        step_size=cfg.sched_step_size,
        gamma=cfg.sched_gamma,
        level=cfg.sched_level,
    )
    if cfg.optim_type == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        opt = keras.optimizers.Adam(schedule, amsgrad=True)
    if cfg.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt, schedule


def decayed_variables(model: keras.Model, regularize_bn: bool) -> list:
    """Variables in the L2 term. ``regularize_bn=False`` drops BatchNorm gamma/beta.

    Fix of reference bug 2: there ``regularize_bn=True`` *excluded* BN variables. Here the flag
    means what it says; the default (True) decays everything, which is what the reference
    actually did with its default.
    """
    if regularize_bn:
        return list(model.trainable_variables)
    bn_ids = set()
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            bn_ids.update(id(v) for v in layer.trainable_variables)
    return [v for v in model.trainable_variables if id(v) not in bn_ids]


def load_data(cfg: config_lib.Config) -> datasets.OneClassData:
    return datasets.load_one_class(
        cfg.dataset,
        root=cfg.root,
        category=cfg.category,
        input_shape=tuple(cfg.input_shape),
        is_validation=cfg.is_validation,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        skip_corrupt=cfg.skip_corrupt,
        max_cls=cfg.max_cls,
    )


class Trainer:
    """Owns the distributed train step of one run (model, optimizer, method)."""

    def __init__(
        self,
        cfg: config_lib.Config,
        strategy: tf.distribute.Strategy,
        num_views: int,
        total_steps: int,
        spe: int,
    ):
        self.cfg = cfg
        self.strategy = strategy
        self.num_views = num_views
        self.method = methods.METHODS.get(cfg.method)(cfg)
        with strategy.scope():
            self.model = self.method.build_model(lambda: make_model(cfg))
            self.optimizer, self.schedule = make_optimizer(cfg, total_steps, spe)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.decay_vars = decayed_variables(self.model, cfg.regularize_bn)
        self.n_examples = self.method.examples_per_step(cfg.batch_size, num_views)
        self._train_fn = None

    def replica_step(self, views):
        cfg = self.cfg
        with tf.GradientTape() as tape:
            per_ex, acc = self.method.per_example(self.model, views, training=True)
            xe = tf.nn.compute_average_loss(per_ex, global_batch_size=self.n_examples)
            l2 = tf.constant(0.0)
            if cfg.weight_decay > 0 and self.decay_vars:
                l2 = cfg.weight_decay * tf.add_n(
                    [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.decay_vars]
                )
                l2 = tf.nn.scale_regularization_loss(l2)
            loss = xe + l2
            scaled = (
                self.optimizer.scale_loss(loss)
                if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
                else loss
            )
        grads = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        acc_sum = tf.reduce_sum(acc) / float(self.n_examples)
        return tf.stack([loss, xe, l2, acc_sum])

    def train_fn(self):
        """A tf.function running ``k`` steps; returns summed [loss, xe, l2, acc] and the
        0-based index (within the call) of the first non-finite loss, or -1."""
        if self._train_fn is not None:
            return self._train_fn
        strategy = self.strategy
        step_fn = self.replica_step
        if self.cfg.jit_compile:
            # XLA compiles the per-replica step only: the loop around it pulls batches from a
            # tf.data iterator (IteratorGetNext), which XLA cannot compile, so jit-compiling the
            # whole loop failed at the first call.
            step_fn = tf.function(self.replica_step, jit_compile=True)

        def run(iterator, k):
            total = tf.zeros([4])
            bad = tf.constant(-1, tf.int64)
            for i in tf.range(k):
                per_replica = strategy.run(step_fn, args=(next(iterator),))
                stats = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
                self.step.assign_add(1)
                finite = tf.reduce_all(tf.math.is_finite(stats))
                bad = tf.where(
                    tf.logical_and(bad < 0, tf.logical_not(finite)), tf.cast(i, tf.int64), bad
                )
                total += stats
            return total, bad

        self._train_fn = tf.function(run)
        return self._train_fn


def distributed_train_dataset(
    strategy: tf.distribute.Strategy,
    images: np.ndarray,
    view_fn,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    total_steps: int | None = None,
) -> tf.distribute.DistributedDataset:
    """The training stream split over ``strategy``'s replicas without changing its content.

    Global replica ``r`` gets rows ``[r * b, (r + 1) * b)`` of every global batch (``b`` the
    per-replica batch): each worker builds only its contiguous slice of the global batch and
    its local replicas split that further, in order. Replica ids of MultiWorkerMirroredStrategy
    are worker-major, so the all-gathered batch of the contrastive loss is the global batch in
    its original order, exactly as with one replica. (``experimental_distribute_dataset``
    would auto-shard across workers by whole batches or files instead.)
    """

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.make_train_dataset(
            images,
            view_fn,
            global_batch,
            seed,
            start_step=start_step,
            total_steps=total_steps,
            num_shards=ctx.num_input_pipelines,
            shard_index=ctx.input_pipeline_id,
            out_batch=ctx.get_per_replica_batch_size(global_batch),
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


# ----------------------------------------------------------------------------- evaluation
def evaluate_model(
    model,
    data: datasets.OneClassData,
    test_fn,
    num_test_views: int,
    cfg: config_lib.Config,
    with_logits: bool,
    scores_out: dict[str, np.ndarray] | None = None,
):
    """Extracts features and scores every classifier. Returns (metrics, arrays, timings).

    ``scores_out``, when given, receives the per-test-image anomaly scores by metric key.
    """
    t0 = time.time()
    cls = features_lib.extract(model, data.cls_x, test_fn, cfg.eval_batch_size, with_logits)
    test = features_lib.extract(model, data.test_x, test_fn, cfg.eval_batch_size, with_logits)
    t_extract = time.time() - t0
    timings: dict[str, float] = {}
    metrics, scores = metrics_lib.evaluate_features(
        {"pool": cls["pool"], "embed": cls["embed"]},
        {"pool": test["pool"], "embed": test["embed"]},
        data.test_y,
        scorers=cfg.classifiers,
        timings=timings,
        return_scores=True,
    )
    arrays = {
        "cls_pool": cls["pool"],
        "cls_embed": cls["embed"],
        "test_pool": test["pool"],
        "test_embed": test["embed"],
        "test_y": data.test_y,
        "test_class": data.test_class,
    }
    if with_logits:
        rot = scorers_lib.rotation_scores(test["view_logits"])
        for key, s in rot.items():
            metrics[f"{key}.auc"] = metrics_lib.auroc(data.test_y, s)
            scores[f"{key}.auc"] = s
        arrays["test_view_logits"] = test["view_logits"]
    if scores_out is not None:
        scores_out.update(scores)
    timings["extract"] = t_extract
    timings["images_per_sec_extract"] = (
        (len(data.cls_x) + len(data.test_x)) * num_test_views / max(t_extract, 1e-9)
    )
    return metrics, arrays, timings


def _log_eval(writer, step: int, metrics: dict[str, float]) -> None:
    """AUROCs to TensorBoard as eval/<feature>/<classifier>_auroc (patch tasks add a level)."""
    with writer.as_default(step=step):
        for key, value in metrics.items():
            parts = key.split(".")
            suffix = "" if parts[-1].endswith(("auroc", "pro")) else "_auroc"
            tf.summary.scalar("eval/" + "/".join(parts) + suffix, value)


def format_table(metrics: dict[str, float]) -> str:
    """Renders metrics as a feature x classifier AUROC table."""
    feats = sorted({k.split(".")[0] for k in metrics})
    clfs = sorted({k.split(".")[1] for k in metrics})
    header = "AUROC".ljust(8) + "".join(c.rjust(9) for c in clfs)
    rows = [header, "-" * len(header)]
    for f in feats:
        cells = [
            f"{metrics[f + '.' + c]:9.2f}" if f + "." + c in metrics else " " * 9 for c in clfs
        ]
        rows.append(f.ljust(8) + "".join(cells))
    return "\n".join(rows)


def _view_grid(views: tuple[tf.Tensor, ...], n: int = 8) -> tf.Tensor:
    """[1, V*H, n*W, C] grid: one row per view, one column per example."""
    rows = [tf.concat(tf.unstack(tf.clip_by_value(v[:n], 0.0, 1.0)), axis=1) for v in views]
    return tf.concat(rows, axis=0)[None]


# ----------------------------------------------------------------------------- the run
class _StopFlag:
    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        self.signum = signum


class _Checkpoints:
    """The run's checkpoints: numbered by global step, written only with finite weights.

    The chief writes into ``<run>/checkpoints``; other workers must take part in every save
    too (a save may need collectives) but write into a private temporary folder, deleted by
    ``close``. Everyone restores from the chief's folder (``latest_checkpoint``).
    """

    def __init__(self, ckpt: tf.train.Checkpoint, model: keras.Model, run_dir: str, chief: bool):
        self.directory = os.path.join(run_dir, "checkpoints")
        self._tmp = None if chief else tempfile.mkdtemp(prefix="droc_worker_ckpt_")
        self._manager = tf.train.CheckpointManager(
            ckpt, self._tmp or self.directory, max_to_keep=2 if chief else 1
        )
        self._model = model
        self.saved_step: int | None = None

    @property
    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def save(self, step: int) -> str | None:
        """Saves the step-``step`` checkpoint unless it is already the newest one.

        Raises:
          NonFiniteLossError: a weight is NaN/Inf (an update blew up after the last finite
            loss); nothing is written, so the last good checkpoint stays the newest.
        """
        if self.saved_step == step:
            return self.latest_checkpoint
        if not all(np.isfinite(v.numpy()).all() for v in self._model.weights):
            raise NonFiniteLossError(
                f"weights became NaN/Inf by step {step}; the last good checkpoint "
                f"({self.latest_checkpoint or 'none'}) is kept. Lower --learning_rate or "
                f"check the data"
            )
        path = self._manager.save(checkpoint_number=step)
        self.saved_step = step
        return path

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def run(cfg: config_lib.Config) -> RunResult:
    """Trains (or resumes) and evaluates one run described by a validated ``cfg``."""
    tf.get_logger().setLevel("ERROR")  # checkpoint-saver chatter; our own logs stay at INFO
    # The strategy comes first: MultiWorkerMirroredStrategy must configure the collective ops
    # before anything starts the TensorFlow runtime (data loading may).
    strategy = distribute.make_strategy(cfg.strategy)
    chief = distribute.is_chief(strategy)
    any_worker = distribute.any_worker_fn(strategy)
    # Only the chief creates, checks or clears the run folder; the other workers wait here
    # (the all-reduce is a barrier) and learn whether the run is already complete.
    status = _prepare_run_dir(cfg) if chief else None
    run_dir = cfg.model_dir
    summary_path = os.path.join(run_dir, "summary.json")
    if any_worker(status == "complete") and not chief:
        return RunResult({}, run_dir, 0, "already_complete")
    if status == "complete":
        summary = io.read_json(summary_path)
        logging.info(
            "Run in %s is already complete; printing its results (use --force_init to retrain).",
            run_dir,
        )
        return RunResult(
            summary["metrics"], run_dir, summary["run"].get("global_step", 0), "already_complete"
        )
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()

    t_start = time.time()
    data = load_data(cfg)
    train_x = datasets.expand_distaug(data.train_x, cfg.distaug_type)
    spe = (
        cfg.num_batch
        if cfg.num_batch > 0
        else max(1, pipeline.steps_per_epoch(len(train_x), cfg.batch_size))
    )
    total_steps = cfg.num_epoch * spe
    logging.info(
        "Data %s/%s: %d train inliers (x%d distribution augmentation -> %d), %d "
        "classifier-train, %d test (%d outliers). %d steps/epoch x %d epochs = %d "
        "steps of %d.",
        cfg.dataset,
        cfg.category,
        len(data.train_x),
        datasets.distaug_factor(cfg.distaug_type),
        len(train_x),
        len(data.cls_x),
        len(data.test_x),
        int(data.test_y.sum()),
        spe,
        cfg.num_epoch,
        total_steps,
        cfg.batch_size,
    )

    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise RunError(
            f"--batch_size={cfg.batch_size} cannot be split evenly over "
            f"{strategy.num_replicas_in_sync} replicas; use a multiple of "
            f"{strategy.num_replicas_in_sync}"
        )
    train_fn_views, test_fn, n_views, n_test_views = make_view_fns(cfg)
    trainer = Trainer(cfg, strategy, n_views, total_steps, spe)
    model = trainer.model
    logging.info(
        "Model %s: %d parameters; %d replica(s); precision %s.",
        model.name,
        model.count_params(),
        strategy.num_replicas_in_sync,
        cfg.precision,
    )

    ckpt = tf.train.Checkpoint(model=model, optimizer=trainer.optimizer, step=trainer.step)
    manager = _Checkpoints(ckpt, model, run_dir, chief)
    latest = manager.latest_checkpoint
    if latest:
        # Every worker restores the chief's checkpoint (the run folder must be on a file
        # system all workers share).
        try:
            ckpt.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            manager.close()
            raise RunError(
                f"checkpoint {latest} does not match this model "
                f"({type(e).__name__}); use --force_init or another --model_dir"
            ) from None
        logging.info("Resumed from %s at step %d.", latest, int(trainer.step.numpy()))
    start_step = int(trainer.step.numpy())
    manager.saved_step = start_step if latest else None

    writer = (
        tf.summary.create_file_writer(os.path.join(run_dir, "tb"))
        if chief
        else tf.summary.create_noop_writer()
    )
    with writer.as_default(step=start_step):
        tf.summary.text("config", "```\n" + cfg.to_json() + "\n```")

    stop = _StopFlag()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status_out = "complete"
    history: list[dict[str, Any]] = []
    try:
        if start_step < total_steps:
            status_out = _train_loop(
                cfg,
                trainer,
                strategy,
                train_x,
                train_fn_views,
                spe,
                total_steps,
                start_step,
                manager,
                writer,
                stop,
                data,
                test_fn,
                n_test_views,
                history,
                any_worker,
            )
        global_step = int(trainer.step.numpy())
        if total_steps > 0 and status_out != "interrupted":
            manager.save(global_step)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        manager.close()
    if status_out == "interrupted":
        return RunResult({}, run_dir, global_step, "interrupted")
    if not chief:
        # Evaluation and every output file are the chief's; nothing below is collective.
        return RunResult({}, run_dir, global_step, "worker_done")
    train_seconds = time.time() - t_start

    t_eval = time.time()
    with_logits = trainer.method.extra_eval != ()
    if is_patch_task(cfg):
        from deep_representation_one_class.mvtec import evaluate as patch_eval

        metrics, arrays, timings = patch_eval.evaluate(
            model, data, cfg, run_dir, writer, step=global_step
        )
    else:
        scores: dict[str, np.ndarray] = {}
        metrics, arrays, timings = evaluate_model(
            model, data, test_fn, n_test_views, cfg, with_logits, scores_out=scores
        )
    io.write_npz(os.path.join(run_dir, "embeddings.npz"), **arrays)
    if not is_patch_task(cfg):
        # Decision thresholds (inlier-score quantiles on a held-out 10% of the classifier-train
        # features) and ROC / histogram plots, for using the model after training.
        thresholds_lib.write_run_thresholds(
            run_dir, arrays, cfg.classifiers, cfg.seed, is_validation=cfg.is_validation
        )
        plots.write_run_plots(run_dir, arrays["test_y"], scores)
    eval_seconds = time.time() - t_eval
    _log_eval(writer, global_step, metrics)
    writer.flush()
    summary = {
        "metrics": metrics,
        "config": cfg.to_dict(),
        "run": {
            "global_step": global_step,
            "steps_per_epoch": spe,
            "total_steps": total_steps,
            "train_examples": len(train_x),
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "history": history,
            "complete": True,
            "num_replicas": strategy.num_replicas_in_sync,
        },
    }
    io.write_json(summary_path, summary)
    return RunResult(metrics, run_dir, global_step, "complete")


def _train_loop(
    cfg,
    trainer,
    strategy,
    train_x,
    view_fn,
    spe,
    total_steps,
    start_step,
    manager,
    writer,
    stop,
    data,
    test_fn,
    n_test_views,
    history,
    any_worker=bool,
) -> str:
    from tqdm import tqdm

    chief = distribute.is_chief(strategy)
    if start_step == 0 and chief:
        first = pipeline.make_train_dataset(train_x, view_fn, cfg.batch_size, cfg.seed, 0, 1)
        with writer.as_default(step=0):
            tf.summary.image("augmented_views", _view_grid(tuple(next(iter(first)))), step=0)
        del first
    iterator = iter(
        distributed_train_dataset(
            strategy, train_x, view_fn, cfg.batch_size, cfg.seed, start_step, total_steps
        )
    )
    fn = trainer.train_fn()
    step = start_step
    show_bar = sys.stderr.isatty() or os.environ.get("DROC_PROGRESS") == "1"
    with_logits = trainer.method.extra_eval != ()
    while step < total_steps:
        epoch = step // spe
        epoch_end = min((epoch + 1) * spe, total_steps)
        sums = np.zeros(4)
        n = 0
        t0 = time.time()
        bar = tqdm(
            total=epoch_end - step,
            desc=f"epoch {epoch + 1}/{cfg.num_epoch}",
            disable=not show_bar,
            leave=False,
            unit="step",
        )
        while step < epoch_end:
            k = min(cfg.steps_per_call, epoch_end - step)
            total, bad = fn(iterator, tf.constant(k, tf.int64))
            bad = int(bad.numpy())
            if bad >= 0:
                raise NonFiniteLossError(
                    f"loss became NaN/Inf at step {step + bad + 1}; the last good checkpoint "
                    f"({manager.latest_checkpoint or 'none'}) is kept. Lower --learning_rate "
                    f"or check the data"
                )
            sums += total.numpy()
            n += k
            step += k
            bar.update(k)
            bar.set_postfix(loss=f"{sums[0] / n:.3f}", acc=f"{sums[3] / n:.3f}")
            # With several workers the stop request is shared (a collective), so that every
            # worker saves and leaves at the same step instead of waiting forever for the one
            # that left.
            if any_worker(stop.signum is not None):
                bar.close()
                path = manager.save(step)
                signum = stop.signum or signal.SIGTERM
                why = (
                    f"{signal.Signals(signum).name} received"
                    if stop.signum
                    else "another worker was interrupted"
                )
                logging.warning(
                    "%s: saved %s at step %d. Rerun the same command to resume.",
                    why,
                    path or manager.latest_checkpoint,
                    step,
                )
                raise SystemExit(128 + signum)
            if cfg.ckpt_steps and step % cfg.ckpt_steps == 0:
                manager.save(step)
        bar.close()
        dt = time.time() - t0
        lr = float(trainer.schedule(step - 1))
        loss, xe, l2, acc = (sums / max(n, 1)).tolist()
        logging.info(
            "epoch %d/%d step %d: loss %.4f (xe %.4f l2 %.4f) acc %.3f lr %.4g %.2f steps/s",
            epoch + 1,
            cfg.num_epoch,
            step,
            loss,
            xe,
            l2,
            acc,
            lr,
            n / max(dt, 1e-9),
        )
        with writer.as_default(step=step):
            tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/xe", xe)
            tf.summary.scalar("train/l2", l2)
            tf.summary.scalar("train/acc", acc)
            tf.summary.scalar("monitor/lr", lr)
            tf.summary.scalar("monitor/steps_per_sec", n / max(dt, 1e-9))
            # Images through the network: batch x views (2 for contrastive, 4 for rotation).
            imgs = n * cfg.batch_size * trainer.num_views
            tf.summary.scalar("monitor/images_per_sec", imgs / max(dt, 1e-9))
        done_epochs = step // spe
        if step == total_steps or (cfg.ckpt_epoch and done_epochs % cfg.ckpt_epoch == 0):
            manager.save(step)
        if (
            chief
            and cfg.eval_every
            and done_epochs % cfg.eval_every == 0
            and step < total_steps
            and not is_patch_task(cfg)
        ):
            metrics, _, _ = evaluate_model(
                trainer.model, data, test_fn, n_test_views, cfg, with_logits
            )
            history.append({"step": step, "epoch": done_epochs, "metrics": metrics})
            _log_eval(writer, step, metrics)
            logging.info(
                "epoch %d eval: %s",
                done_epochs,
                ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
            )
        writer.flush()
    return "complete"
