"""The from-scratch baseline of a pretrained run: the task's own self-supervised recipe, trained.

A pretrained run (``--method=imagenet`` on ``folder``, ``patchcore`` on ``mvtec``; any run whose
``--backbone`` brings ImageNet weights) skips the training the paper's recipe pays for. Whether
that is worth it shows only next to the recipe it replaces, so with ``--baselines`` such a run
also trains that recipe from scratch on the same training images, for ``--scratch_steps`` steps,
and scores it like the raw-pixel and untrained-network baselines (``baselines.py``):

* the recipe is the run's task's ``scratch_recipe`` (``Task.scratch_recipe``): a method and the
  settings that differ from the dataset's from-scratch defaults, e.g. contrastive learning with
  rotation distribution augmentation for images and contrastive learning on random patches for
  the patch task (the from-scratch defaults those datasets had before the pretrained ones);
* everything else is what ``--dataset=<the run's> --method=<recipe>`` resolves to (batch,
  learning rate, schedule, views, head, precision), with the run's network (``--net_type``,
  ``--net_width``: the untrained baseline's), seed, data settings, classifiers and task options,
  and ``--train_steps=--scratch_steps``;
* it trains with the project's own loop (``training.loop``): the same data stream, schedule,
  checkpoints and stop-signal handling as a run;
* image tasks train and score at the recipe's input size when it differs (the run's images
  area-resized: the same rows, held-out images and test set);
* metric keys ``baseline_scratch.pool.<scorer>[.<kind>]``; ``summary.json`` records the recipe,
  the steps and the seconds under ``baseline_scratch``.

Resume: the training checkpoints live in the evaluation's phase cache (``eval_cache/scratch/``)
and the finished baseline's metrics in ``eval_cache/baseline_scratch.json``, so a rerun after a
cut resumes the training at its last checkpoint, and a finished baseline is never recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from deep_representation_one_class.registry import Option

logger = logging.getLogger(__name__)

__all__ = [
    "NAME",
    "SCRATCH_STEPS_OPTION",
    "Scratch",
    "applies",
    "check",
    "scratch_config",
    "train",
]

NAME = "baseline_scratch"  # metric prefix, phase-cache name and summary.json key
SCRATCH_DIR = "scratch"  # the training checkpoints, inside the phase cache
# Steps of the default budget: with the baselines, the bare bottle run stays under about 6
# CPU-minutes and a folder run of a few hundred photos well under 10 (docs/pretrained.md).
DEFAULT_STEPS = 300

SCRATCH_STEPS_OPTION = Option(
    "scratch_steps",
    DEFAULT_STEPS,
    "Pretrained runs with --baselines: also train the task's from-scratch recipe (contrastive) "
    "this many steps on the same images and score it like the other baselines "
    "(baseline_scratch.* metrics); 0 = no from-scratch baseline.",
)
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


def applies(cfg: Any) -> bool:
    """Whether a run gets the from-scratch baseline: pretrained weights, ``--baselines`` and a
    positive ``--scratch_steps`` (a from-scratch run is its own from-scratch row)."""
    from deep_representation_one_class.models.backbones import BACKBONES

    options = getattr(cfg, "options", {})
    return (
        bool(options.get("baselines"))
        and int(options.get("scratch_steps", 0)) > 0
        and cfg.backbone in BACKBONES
        and BACKBONES.get(cfg.backbone).pretrained
    )


def _recipe(cfg: Any) -> Mapping[str, Any]:
    from deep_representation_one_class import datasets, tasks

    return tasks.TASKS.get(datasets.DATASETS.get(cfg.dataset).task).scratch_recipe


def input_shape(cfg: Any) -> tuple[int, int, int]:
    """The from-scratch input: the run's, or (``own_size`` recipes) the dataset's default side
    when that is smaller (the paper's 32 px for a folder of photos fed at 224 px)."""
    from deep_representation_one_class import datasets

    h, w, c = (int(v) for v in cfg.input_shape)
    if not _recipe(cfg).get("own_size"):
        return (h, w, c)
    side = int(datasets.DATASETS.get(cfg.dataset).default_input_shape[0])
    return (min(h, side), min(w, side), c)


def scratch_config(cfg: Any) -> Any:
    """The validated config of the from-scratch recipe for run ``cfg`` (see the module doc).

    Raises:
      ConfigError: the recipe does not work with these settings.
    """
    from deep_representation_one_class import resolve

    recipe = dict(_recipe(cfg))
    recipe.pop("own_size", None)
    given: dict[str, Any] = {k: getattr(cfg, k) for k in _KEPT}
    # The task's options (patch size, stride, bank ...), not the method's (--pretrained_size).
    given.update({o.name: cfg.options[o.name] for o in _task_options(cfg) if o.name in cfg.options})
    given.update(recipe)
    given.update(
        input_shape=input_shape(cfg),
        train_steps=int(cfg.options["scratch_steps"]),
        baselines=False,
        scratch_steps=0,
        strategy="default",
        report=False,
    )
    return resolve.build(**given).replace(model_dir=cfg.model_dir)


def _task_options(cfg: Any):
    from deep_representation_one_class import datasets, tasks

    return tasks.TASKS.get(datasets.DATASETS.get(cfg.dataset).task).options


def check(cfg: Any) -> None:
    """Raises ValueError (one line) when the run's from-scratch baseline cannot be built, so
    that the run fails before its first side effect, not after its evaluation."""
    from deep_representation_one_class.errors import ConfigError

    steps = int(cfg.options.get("scratch_steps", 0))
    if steps < 0:
        raise ValueError(f"--scratch_steps must be >= 0 (0 = off), got {steps}")
    if not applies(cfg):
        return
    try:
        scratch_config(cfg)
    except ConfigError as e:
        raise ValueError(f"the from-scratch baseline (--scratch_steps; 0 = off): {e}") from None


@dataclasses.dataclass
class Scratch:
    """A trained from-scratch network and what ``summary.json`` records about it."""

    model: Any
    config: Any
    record: dict[str, Any]


def resized(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images area-resized to ``shape`` (H, W); the same array when already that size."""
    if tuple(images.shape[1:3]) == tuple(shape[:2]):
        return images
    out = []
    for start in range(0, len(images), 256):
        x = tf.cast(images[start : start + 256], tf.float32)
        out.append(tf.image.resize(x, shape[:2], method="area").numpy())
    x = np.concatenate(out) if out else np.zeros((0, *shape), np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


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


def train(cfg: Any, train_x: np.ndarray, work_dir: str | None) -> Scratch:
    """Trains the from-scratch recipe of run ``cfg`` on ``train_x`` (uint8, at the recipe's
    input size), resuming from the checkpoints in ``work_dir`` (None: no checkpoints kept).

    Raises:
      NonFiniteLossError: the loss diverged.
      SystemExit: 128 + signal after SIGTERM/SIGINT (a checkpoint is saved first).
    """
    import keras

    from deep_representation_one_class import datasets
    from deep_representation_one_class.training import build, distribute, loop, run_dir

    scfg = scratch_config(cfg)
    t0, cpu0 = time.time(), time.process_time()
    keras.utils.set_random_seed(int(scfg.seed))
    views = build.task_for(scfg).views()
    images = datasets.expand_distaug(train_x, scfg.distaug_type)
    plan = build.step_plan(scfg, len(images))
    strategy = distribute.make_strategy("default")
    trainer = loop.Trainer(scfg, strategy, views.num_train, plan)
    ckpt = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer, step=trainer.step)
    # Without a run folder the checkpoints go to a temporary folder (nothing to resume). In
    # one, the folder is named after the recipe's settings: a changed recipe starts afresh.
    temporary = tempfile.mkdtemp(prefix="droc_scratch_") if work_dir is None else None
    digest = hashlib.sha256(scfg.to_json().encode()).hexdigest()[:12]
    folder = os.path.join(work_dir, digest) if work_dir else temporary
    checkpoints = run_dir.Checkpoints(ckpt, trainer.model, folder, chief=True)
    start = 0
    try:
        if checkpoints.restore_latest():
            start = int(trainer.step.numpy())
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
            step = loop.train_loop(state, start) if start < plan.total_steps else start
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
    return Scratch(trainer.model, scfg, record)


def finish_record(record: dict[str, Any], t0: float, cpu0: float) -> dict[str, Any]:
    """``record`` plus the seconds of its scoring and the total since (``t0``, ``cpu0``)."""
    total, total_cpu = time.time() - t0, time.process_time() - cpu0
    return {
        **record,
        "score_seconds": round(total - record["train_seconds"], 2),
        "score_cpu_seconds": round(total_cpu - record["train_cpu_seconds"], 2),
        "seconds": round(total, 2),
        "cpu_seconds": round(total_cpu, 2),
    }


def work_dir(cache: Any) -> str | None:
    """Where the training checkpoints go: inside the evaluation's phase cache (None: none)."""
    return os.path.join(cache.path, SCRATCH_DIR) if cache.path else None


def image_baseline(cfg: Any, data: Any, fit_and_score, cache: Any) -> dict[str, Any]:
    """The image-level from-scratch baseline (``cache``: the evaluation's ``PhaseCache``).

    Trains the recipe (``train``) on the run's training images, extracts the ``pool`` features
    of the classifier-train and test images through its test view, and fits the run's
    classifiers on them (``fit_and_score``, the other baselines' protocol).

    Returns:
      ``{"metrics": {"baseline_scratch.pool.<clf>": AUROC}, "record": {...}}``; a finished
      baseline in ``cache`` is returned as it was stored.
    """
    from deep_representation_one_class.evaluation import features as features_lib
    from deep_representation_one_class.training import build

    done = cache.load_metrics(NAME)
    if done is not None:
        return done
    t0, cpu0 = time.time(), time.process_time()
    shape = input_shape(cfg)
    trained = train(cfg, resized(data.train_x, shape), work_dir(cache))
    test_fn = build.task_for(trained.config).views().test
    batch = cfg.eval_batch_size
    arrays = {
        "cls_pool": features_lib.extract(trained.model, resized(data.cls_x, shape), test_fn, batch)[
            "pool"
        ],
        "test_pool": features_lib.extract(
            trained.model, resized(data.test_x, shape), test_fn, batch
        )["pool"],
        "test_y": data.test_y,
    }
    metrics = {f"{NAME}.{k}": v for k, v in fit_and_score(arrays).items()}
    done = {"metrics": metrics, "record": finish_record(trained.record, t0, cpu0)}
    cache.save_metrics(NAME, done)
    return done
