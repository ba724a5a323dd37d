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
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import datasets, distribute, methods, pipeline
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
    status: str  # "complete", "already_complete", "interrupted"


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
    if os.path.exists(old_cfg_path):
        # Keys absent from an older config.json take today's defaults (forward compatible).
        old = {**config_lib.Config().to_dict(), **io.read_json(old_cfg_path)}
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
    summary = os.path.join(run_dir, "summary.json")
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

        def run(iterator, k):
            total = tf.zeros([4])
            bad = tf.constant(-1, tf.int64)
            for i in tf.range(k):
                per_replica = strategy.run(self.replica_step, args=(next(iterator),))
                stats = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
                self.step.assign_add(1)
                finite = tf.reduce_all(tf.math.is_finite(stats))
                bad = tf.where(
                    tf.logical_and(bad < 0, tf.logical_not(finite)), tf.cast(i, tf.int64), bad
                )
                total += stats
            return total, bad

        self._train_fn = tf.function(run, jit_compile=self.cfg.jit_compile or None)
        return self._train_fn


# ----------------------------------------------------------------------------- evaluation
def evaluate_model(
    model,
    data: datasets.OneClassData,
    test_fn,
    num_test_views: int,
    cfg: config_lib.Config,
    with_logits: bool,
):
    """Extracts features and scores every classifier. Returns (metrics, arrays, timings)."""
    t0 = time.time()
    cls = features_lib.extract(model, data.cls_x, test_fn, cfg.eval_batch_size, with_logits)
    test = features_lib.extract(model, data.test_x, test_fn, cfg.eval_batch_size, with_logits)
    t_extract = time.time() - t0
    timings: dict[str, float] = {}
    metrics = metrics_lib.evaluate_features(
        {"pool": cls["pool"], "embed": cls["embed"]},
        {"pool": test["pool"], "embed": test["embed"]},
        data.test_y,
        scorers=cfg.classifiers,
        timings=timings,
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
        arrays["test_view_logits"] = test["view_logits"]
    timings["extract"] = t_extract
    timings["images_per_sec_extract"] = (
        (len(data.cls_x) + len(data.test_x)) * num_test_views / max(t_extract, 1e-9)
    )
    return metrics, arrays, timings


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


def run(cfg: config_lib.Config) -> RunResult:
    """Trains (or resumes) and evaluates one run described by a validated ``cfg``."""
    tf.get_logger().setLevel("ERROR")  # checkpoint-saver chatter; our own logs stay at INFO
    status = _prepare_run_dir(cfg)
    run_dir = cfg.model_dir
    summary_path = os.path.join(run_dir, "summary.json")
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

    strategy = distribute.make_strategy(cfg.strategy)
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
    manager = tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        try:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise RunError(
                f"checkpoint {manager.latest_checkpoint} does not match this model "
                f"({type(e).__name__}); use --force_init or another --model_dir"
            ) from None
        logging.info(
            "Resumed from %s at step %d.", manager.latest_checkpoint, int(trainer.step.numpy())
        )
    start_step = int(trainer.step.numpy())

    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tb"))
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
            )
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    global_step = int(trainer.step.numpy())
    if status_out == "interrupted":
        return RunResult({}, run_dir, global_step, "interrupted")
    if total_steps > 0:
        manager.save(checkpoint_number=global_step)
    train_seconds = time.time() - t_start

    t_eval = time.time()
    with_logits = trainer.method.extra_eval != ()
    if is_patch_task(cfg):
        from deep_representation_one_class.mvtec import evaluate as patch_eval

        metrics, arrays, timings = patch_eval.evaluate(model, data, cfg, run_dir, writer)
    else:
        metrics, arrays, timings = evaluate_model(
            model, data, test_fn, n_test_views, cfg, with_logits
        )
    io.write_npz(os.path.join(run_dir, "embeddings.npz"), **arrays)
    eval_seconds = time.time() - t_eval
    with writer.as_default(step=global_step):
        for key, value in metrics.items():
            feat, clf = key.split(".")
            tf.summary.scalar(f"eval/{feat}/{clf}_auroc", value)
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
) -> str:
    from tqdm import tqdm

    ds = pipeline.make_train_dataset(
        train_x, view_fn, cfg.batch_size, cfg.seed, start_step=start_step, total_steps=total_steps
    )
    if start_step == 0:
        with writer.as_default(step=0):
            first = next(iter(ds.take(1)))
            tf.summary.image("augmented_views", _view_grid(tuple(first)), step=0)
    iterator = iter(strategy.experimental_distribute_dataset(ds))
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
            if stop.signum is not None:
                bar.close()
                path = manager.save(checkpoint_number=step)
                name = "SIGTERM" if stop.signum == signal.SIGTERM else "SIGINT"
                logging.warning(
                    "%s received: saved %s at step %d. Rerun the same command to resume.",
                    name,
                    path,
                    step,
                )
                raise SystemExit(128 + stop.signum)
            if cfg.ckpt_steps and step % cfg.ckpt_steps == 0:
                manager.save(checkpoint_number=step)
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
            tf.summary.scalar("monitor/images_per_sec", n * cfg.batch_size / max(dt, 1e-9))
        done_epochs = step // spe
        if step == total_steps or (cfg.ckpt_epoch and done_epochs % cfg.ckpt_epoch == 0):
            manager.save(checkpoint_number=step)
        if (
            cfg.eval_every
            and done_epochs % cfg.eval_every == 0
            and step < total_steps
            and not is_patch_task(cfg)
        ):
            metrics, _, _ = evaluate_model(
                trainer.model, data, test_fn, n_test_views, cfg, with_logits
            )
            history.append({"step": step, "epoch": done_epochs, "metrics": metrics})
            with writer.as_default(step=step):
                for key, value in metrics.items():
                    feat, clf = key.split(".")
                    tf.summary.scalar(f"eval/{feat}/{clf}_auroc", value)
            logging.info(
                "epoch %d eval: %s",
                done_epochs,
                ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
            )
        writer.flush()
    return "complete"
