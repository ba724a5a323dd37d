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

This module is the tasks' part (when, at which size, the scoring, the record); the training and
the recipe's config are the training layer's (``training/scratch.py``), which the runner hands
to ``Task.evaluate`` as ``scratch_trainer`` (tasks sit below the training layer).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from deep_representation_one_class import datasets
from deep_representation_one_class.evaluation import features as features_lib
from deep_representation_one_class.models.backbones import BACKBONES
from deep_representation_one_class.registry import Option
from deep_representation_one_class.utils import run_folder as rf

__all__ = [
    "NAME",
    "SCRATCH_STEPS_OPTION",
    "Scratch",
    "ScratchTrainer",
    "applies",
    "check_steps",
    "image_baseline",
    "input_shape",
]

NAME = "baseline_scratch"  # metric prefix, phase-cache name and summary.json key
SCRATCH_DIR = "scratch"  # the training checkpoints, inside the phase cache
# Steps of the default budget: with every baseline, the bare bottle run took 3.9 CPU-minutes
# and a folder run of 500 photos 2.1 (docs/pretrained.md, results/pretrained_*.md).
DEFAULT_STEPS = 300

SCRATCH_STEPS_OPTION = Option(
    "scratch_steps",
    DEFAULT_STEPS,
    "Pretrained runs with --baselines: also train the task's from-scratch recipe (contrastive) "
    "this many steps on the same images and score it like the other baselines "
    "(baseline_scratch.* metrics); 0 = no from-scratch baseline.",
)


@dataclasses.dataclass
class Scratch:
    """A trained from-scratch network, its config and what ``summary.json`` records."""

    model: Any
    config: Any
    record: dict[str, Any]


# fn(run config, training images uint8 at the recipe's input size, checkpoint folder or None)
ScratchTrainer = Callable[[Any, np.ndarray, "str | None"], Scratch]


def applies(cfg: Any) -> bool:
    """Whether a run gets the from-scratch baseline: pretrained weights, ``--baselines`` and a
    positive ``--scratch_steps`` (a from-scratch run is its own from-scratch row)."""
    options = getattr(cfg, "options", {})
    return (
        bool(options.get("baselines"))
        and int(options.get("scratch_steps", 0)) > 0
        and cfg.backbone in BACKBONES
        and BACKBONES.get(cfg.backbone).pretrained
    )


def check_steps(cfg: Any) -> None:
    """Raises ValueError (one line) for a negative ``--scratch_steps``."""
    steps = int(cfg.options.get("scratch_steps", 0))
    if steps < 0:
        raise ValueError(f"--scratch_steps must be >= 0 (0 = off), got {steps}")


def input_shape(cfg: Any, recipe: Mapping[str, Any]) -> tuple[int, int, int]:
    """The from-scratch input: the run's, or (``own_size`` recipes) the dataset's default side
    when that is smaller (the paper's 32 px for a folder of photos fed at 224 px)."""
    h, w, c = (int(v) for v in cfg.input_shape)
    if not recipe.get("own_size"):
        return (h, w, c)
    side = int(datasets.DATASETS.get(cfg.dataset).default_input_shape[0])
    return (min(h, side), min(w, side), c)


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


def work_dir(cache: Any) -> str | None:
    """Where the training checkpoints go: inside the evaluation's phase cache (None: none)."""
    return os.path.join(cache.path, SCRATCH_DIR) if cache.path else None


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


def image_baseline(
    cfg: Any, data: Any, fit_and_score, cache: Any, trainer: ScratchTrainer, test_views
) -> dict[str, Any]:
    """The image-level from-scratch baseline (``cache``: the evaluation's ``PhaseCache``).

    Trains the recipe (``trainer``) on the run's training images at ``input_shape``, extracts
    the ``pool`` features of the classifier-train and test images through its test view
    (``test_views(trained config)``), and fits the run's classifiers on them
    (``fit_and_score``, the other baselines' protocol).

    Returns:
      ``{"metrics": {"baseline_scratch.pool.<clf>": AUROC}, "record": {...}}``; a finished
      baseline in ``cache`` is returned as it was stored.
    """
    done = cache.load_metrics(NAME)
    if done is not None:
        return done
    t0, cpu0 = time.time(), time.process_time()
    trained = trainer(cfg, data.train_x, work_dir(cache))
    shape = tuple(trained.config.input_shape)
    test_fn, batch = test_views(trained.config), cfg.eval_batch_size

    def pool(images):
        return features_lib.extract(trained.model, resized(images, shape), test_fn, batch)["pool"]

    arrays = rf.feature_arrays({"pool": pool(data.cls_x)}, {"pool": pool(data.test_x)}, data.test_y)
    metrics = {f"{NAME}.{k}": v for k, v in fit_and_score(arrays).items()}
    done = {"metrics": metrics, "record": finish_record(trained.record, t0, cpu0)}
    cache.save_metrics(NAME, done)
    return done
