"""The training loop: the distributed train step and the loop over one ``TrainState``.

Methods supply per-example losses; the step averages them over the *global* batch
(``tf.nn.compute_average_loss``) and adds the L2 term scaled per replica, so one and several
replicas take the same update (fix of reference bug 3). The loop runs epoch by epoch (epochs
are the logging, checkpoint and per-epoch schedule unit); the data stream itself is a pure
function of ``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deep_representation_one_class import methods
from deep_representation_one_class.config import Config
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.errors import NonFiniteLossError
from deep_representation_one_class.training import build
from deep_representation_one_class.training.checkpoints import Checkpoints

# Epoch-end checkpoints (other than the last) are skipped when the previous one is more recent
# than this: a step budget on a small dataset means epochs of a few steps, and a save per epoch
# would cost more than the training. A resumed run is exact whichever checkpoint it starts
# from (the data stream depends only on the step).
MIN_CHECKPOINT_SECONDS = 60.0
# Likewise, epoch-end log lines and TensorBoard scalars at most this often (and at the end).
MIN_LOG_SECONDS = 10.0


class Trainer:
    """Owns the distributed train step of one run (model, optimizer, method)."""

    def __init__(
        self,
        cfg: Config,
        strategy: tf.distribute.Strategy,
        num_views: int,
        plan: build.StepPlan,
        model_options: dict[str, Any] | None = None,
        task: Any = None,
    ):
        """``model_options`` go to ``build.make_model`` (the benchmark's reference layers);
        ``task``: the run's (its model input), else built from ``cfg``."""
        self.cfg = cfg
        self.strategy = strategy
        self.num_views = num_views
        self.method: methods.Method = build.method_for(cfg)
        with strategy.scope():
            self.model = build.make_model(cfg, self.method, task, **(model_options or {}))
            self.optimizer, self.schedule = build.make_optimizer(cfg, plan)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.decay_vars = build.decayed_variables(self.model, cfg.regularize_bn)
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


def view_grid(views: tuple[tf.Tensor, ...], n: int = 8) -> tf.Tensor:
    """[1, V*H, n*W, C] grid: one row per view, one column per example."""
    rows = [tf.concat(tf.unstack(tf.clip_by_value(v[:n], 0.0, 1.0)), axis=1) for v in views]
    return tf.concat(rows, axis=0)[None]


class StopFlag:
    """Signal handler recording SIGTERM/SIGINT; the loop saves and stops at the next step."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        del frame
        self.signum = signum


@dataclasses.dataclass
class TrainState:
    """Everything the loop reads and advances.

    ``evaluate`` (or None) is called at epoch ends selected by ``--eval_every`` with the
    step and epoch; it returns the metrics, which the loop stores in ``history``.
    """

    cfg: Config
    trainer: Trainer
    train_x: np.ndarray
    view_fn: Any
    plan: build.StepPlan
    checkpoints: Checkpoints
    writer: Any
    stop: StopFlag
    chief: bool
    any_worker: Callable[[bool], bool] = bool
    evaluate: Callable[[int, int], dict[str, float]] | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _log_epoch(state: TrainState, epoch: int, step: int, sums: np.ndarray, n: int, dt: float):
    cfg, trainer = state.cfg, state.trainer
    lr = float(trainer.schedule(step - 1))
    loss, xe, l2, acc = (sums / max(n, 1)).tolist()
    logging.info(
        "epoch %d/%d step %d/%d: loss %.4f (xe %.4f l2 %.4f) acc %.3f lr %.4g %.2f steps/s",
        epoch + 1,
        state.plan.num_epochs,
        step,
        state.plan.total_steps,
        loss,
        xe,
        l2,
        acc,
        lr,
        n / max(dt, 1e-9),
    )
    with state.writer.as_default(step=step):
        tf.summary.scalar("train/loss", loss)
        tf.summary.scalar("train/xe", xe)
        tf.summary.scalar("train/l2", l2)
        tf.summary.scalar("train/acc", acc)
        tf.summary.scalar("monitor/lr", lr)
        tf.summary.scalar("monitor/steps_per_sec", n / max(dt, 1e-9))
        # Images through the network: batch x views (2 for contrastive, 4 for rotation).
        imgs = n * cfg.batch_size * trainer.num_views
        tf.summary.scalar("monitor/images_per_sec", imgs / max(dt, 1e-9))


def _stop_now(state: TrainState, step: int) -> None:
    """Saves a checkpoint at ``step`` and leaves with exit status 128 + signal."""
    path = state.checkpoints.save(step)
    signum = state.stop.signum or signal.SIGTERM
    why = (
        f"{signal.Signals(signum).name} received"
        if state.stop.signum
        else "another worker was interrupted"
    )
    logging.warning(
        "%s: saved %s at step %d. Rerun the same command to resume.",
        why,
        path or state.checkpoints.latest_checkpoint,
        step,
    )
    raise SystemExit(128 + signum)


def train_loop(state: TrainState, start_step: int) -> int:
    """Trains from ``start_step`` to the plan's total; returns the final step.

    Raises:
      NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint stays newest).
      SystemExit: 128 + signal after SIGTERM/SIGINT (a checkpoint is saved first).
    """
    from tqdm import tqdm  # the progress bar is the CLI's; tqdm is imported only to train

    cfg, plan, trainer = state.cfg, state.plan, state.trainer
    if start_step == 0 and state.chief:
        first = pipeline.make_train_dataset(
            state.train_x, state.view_fn, cfg.batch_size, cfg.seed, 0, 1
        )
        with state.writer.as_default(step=0):
            tf.summary.image("augmented_views", view_grid(tuple(next(iter(first)))), step=0)
        del first
    iterator = iter(
        distributed_train_dataset(
            trainer.strategy,
            state.train_x,
            state.view_fn,
            cfg.batch_size,
            cfg.seed,
            start_step,
            plan.total_steps,
        )
    )
    fn = trainer.train_fn()
    step = start_step
    show_bar = sys.stderr.isatty() or os.environ.get("DROC_PROGRESS") == "1"
    last_save = last_log = time.time()
    sums = np.zeros(4)
    n = 0
    t_log = time.time()
    while step < plan.total_steps:
        epoch = step // plan.steps_per_epoch
        epoch_end = min((epoch + 1) * plan.steps_per_epoch, plan.total_steps)
        bar = tqdm(
            total=epoch_end - step,
            desc=f"epoch {epoch + 1}/{plan.num_epochs}",
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
                    f"({state.checkpoints.latest_checkpoint or 'none'}) is kept. Lower "
                    "--learning_rate or check the data"
                )
            sums += total.numpy()
            n += k
            step += k
            bar.update(k)
            bar.set_postfix(loss=f"{sums[0] / n:.3f}", acc=f"{sums[3] / n:.3f}")
            # With several workers the stop request is shared (a collective), so that every
            # worker saves and leaves at the same step instead of waiting forever for the one
            # that left.
            if state.any_worker(state.stop.signum is not None):
                bar.close()
                _stop_now(state, step)
            if cfg.ckpt_steps and step % cfg.ckpt_steps == 0:
                state.checkpoints.save(step)
                last_save = time.time()
        bar.close()
        done_epochs = step // plan.steps_per_epoch
        final = step == plan.total_steps
        now = time.time()
        if final or now - last_log >= MIN_LOG_SECONDS:
            _log_epoch(state, epoch, step, sums, n, now - t_log)
            sums, n, t_log, last_log = np.zeros(4), 0, now, now
        due = cfg.ckpt_epoch and done_epochs % cfg.ckpt_epoch == 0
        # Every worker must make the same save decision (saves may be collective).
        recent = state.any_worker(now - last_save < MIN_CHECKPOINT_SECONDS) and not cfg.ckpt_steps
        if final or (due and not recent):
            state.checkpoints.save(step)
            last_save = time.time()
        if (
            state.chief
            and state.evaluate is not None
            and cfg.eval_every
            and done_epochs % cfg.eval_every == 0
            and not final
        ):
            metrics = state.evaluate(step, done_epochs)
            state.history.append({"step": step, "epoch": done_epochs, "metrics": metrics})
        state.writer.flush()
    return step
