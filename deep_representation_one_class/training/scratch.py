"""Training the from-scratch baseline of a pretrained run (``tasks/scratch.py`` has the what and
why): the recipe's config and its training with the project's own loop.

``scratch_config(cfg)`` is what ``--dataset=<the run's> --method=<the task's recipe>`` resolves
to, with the run's network (the untrained baseline's trunk), seed, data settings, classifiers
and task options, the recipe's settings (``Task.scratch_recipe``) and
``--train_steps=--scratch_steps``. ``train`` runs it through ``loop.Trainer`` and
``loop.train_loop``: the same data stream, schedule, checkpoints and stop-signal handling as a
run. The runner hands ``train`` to ``Task.evaluate`` (``scratch_trainer``) and checks the
recipe's config before the run writes anything (``check``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class import datasets, resolve
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.tasks import scratch as scratch_lib
from deep_representation_one_class.training import build, distribute, loop
from deep_representation_one_class.training.checkpoints import Checkpoints

logger = logging.getLogger(__name__)

__all__ = ["check", "scratch_config", "train"]

# Settings of the run the from-scratch config keeps (the data it was given, how it scores).
_KEPT = (
    "dataset",
    "category",
    "root",
    "seed",
    "is_validation",
    "cache_dir",
    "skip_corrupt",
    "max_cls",
    "resize_policy",
    "net_type",
    "net_width",
    "classifiers",
    "eval_batch_size",
    "cls_holdout",
    "deterministic",
)


def scratch_config(cfg: Any) -> Any:
    """The validated config of the from-scratch recipe for run ``cfg``.

    Raises:
      ConfigError: the recipe does not work with these settings.
    """
    task = build.task_for(cfg)
    recipe = dict(task.scratch_recipe)
    recipe.pop("own_size", None)
    given: dict[str, Any] = {k: getattr(cfg, k) for k in _KEPT}
    # The task's options (patch size, stride, bank ...), not the method's (--pretrained_size).
    given.update({o.name: cfg.options[o.name] for o in task.options if o.name in cfg.options})
    given.update(recipe)
    given.update(
        input_shape=scratch_lib.input_shape(cfg, task.scratch_recipe),
        train_steps=int(cfg.options["scratch_steps"]),
        baselines=False,
        scratch_steps=0,
        strategy="default",
        report=False,
    )
    return resolve.build(**given).replace(model_dir=cfg.model_dir)


def check(cfg: Any) -> None:
    """Raises ConfigError (one line) when the run's from-scratch baseline cannot be built, so
    that the run fails before its first side effect, not after its evaluation."""
    if not scratch_lib.applies(cfg):
        return
    try:
        scratch_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"the from-scratch baseline (--scratch_steps; 0 = off): {e}") from None


@contextlib.contextmanager
def _stop_on_signals(flag):
    """SIGTERM/SIGINT set ``flag`` while training (the loop saves and leaves with 128 + n)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, flag) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(cfg: Any, train_x: np.ndarray, work_dir: str | None) -> scratch_lib.Scratch:
    """Trains the from-scratch recipe of run ``cfg`` on ``train_x`` (uint8, the run's training
    images; resized to the recipe's input), resuming from the checkpoints in ``work_dir``
    (None: a temporary folder, nothing to resume).

    Raises:
      NonFiniteLossError: the loss diverged.
      SystemExit: 128 + signal after SIGTERM/SIGINT (a checkpoint is saved first).
    """
    scfg = scratch_config(cfg)
    t0, cpu0 = time.time(), time.process_time()
    keras.utils.set_random_seed(int(scfg.seed))
    views = build.task_for(scfg).views()
    images = datasets.expand_distaug(
        scratch_lib.resized(train_x, tuple(scfg.input_shape)), scfg.distaug_type
    )
    plan = build.step_plan(scfg, len(images))
    trainer = loop.Trainer(scfg, distribute.make_strategy("default"), views.num_train, plan)
    # The folder is named after the recipe's settings: a changed recipe starts afresh.
    temporary = tempfile.mkdtemp(prefix="droc_scratch_") if work_dir is None else None
    digest = hashlib.sha256(scfg.to_json().encode()).hexdigest()[:12]
    folder = os.path.join(work_dir, digest) if work_dir else temporary
    checkpoints = Checkpoints(trainer.model, folder, True, trainer.optimizer, trainer.step)
    start = step = 0
    try:
        if checkpoints.restore_latest():
            start = step = int(trainer.step.numpy())
            logger.info("From-scratch baseline resumed at step %d.", start)
        logger.info(
            "From-scratch baseline: %s on %d images at %dx%d, %d steps of %d.",
            scfg.method,
            len(images),
            scfg.input_shape[0],
            scfg.input_shape[1],
            plan.total_steps,
            scfg.batch_size,
        )
        stop = loop.StopFlag()
        state = loop.TrainState(
            scfg,
            trainer,
            images,
            views.train,
            plan,
            checkpoints,
            tf.summary.create_noop_writer(),
            stop,
            chief=True,
        )
        with _stop_on_signals(stop):
            if start < plan.total_steps:
                step = loop.train_loop(state, start)
    finally:
        checkpoints.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    record = {
        "method": scfg.method,
        "distaug_type": scfg.distaug_type,
        "train_steps": int(step),
        "batch_size": scfg.batch_size,
        "learning_rate": scfg.learning_rate,
        "input_shape": list(scfg.input_shape),
        "net_type": scfg.net_type,
        "net_width": scfg.net_width,
        "head_dims": list(scfg.head_dims),
        "precision": scfg.precision,
        "train_images": len(images),
        "resumed_at_step": start,
        # This process's part only when it resumed.
        "train_seconds": round(time.time() - t0, 2),
        "train_cpu_seconds": round(time.process_time() - cpu0, 2),
    }
    return scratch_lib.Scratch(trainer.model, scfg, record)
