"""A run's checkpoints: the one place that restores them, and the saver of the training loop.

``restore`` is used by everything that loads a run's weights: training when it resumes (model,
optimizer and step), ``evaluate --reextract`` (the model), and serving's ``Detector``,
``PatchDetector``, ``export`` and ``explain`` (the model, through
``serving.run_loading.restore_model``). One function means one rule for what a matching
checkpoint is: every variable of the objects passed must be found in it (Keras functional
models are checkpointed by layer position, so a network built by other code fails here instead
of silently keeping random weights).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class.errors import NonFiniteLossError, RunError
from deep_representation_one_class.utils import run_folder

__all__ = ["CheckpointError", "Checkpoints", "latest", "restore"]


class CheckpointError(RunError):
    """A run has no checkpoint where one is needed, or its checkpoint does not fit the model."""


def directory(run_dir: str) -> str:
    return run_folder.path(run_dir, run_folder.CHECKPOINTS)


def _objects(model, optimizer, step) -> dict:
    objects = {"model": model}
    if optimizer is not None:
        objects["optimizer"] = optimizer
    if step is not None:
        objects["step"] = step
    return objects


def latest(run_dir: str) -> str | None:
    """The newest checkpoint of a run (its path prefix), or None."""
    return tf.train.latest_checkpoint(directory(run_dir))


def restore(
    run_dir: str,
    model: keras.Model,
    optimizer=None,
    step: tf.Variable | None = None,
    *,
    required: bool = True,
    missing_hint: str = "train the run first (or rerun its command to finish it)",
    mismatch_hint: str = "was it written by another version of the code?",
) -> str | None:
    """Restores a run's newest checkpoint into ``model`` (and ``optimizer``/``step`` when given:
    training's resume); returns the checkpoint's path, or None when there is none and
    ``required`` is False.

    Only the objects passed are restored (``expect_partial``: serving needs no optimizer
    state), but every variable they hold must be found in the checkpoint.

    Raises:
      CheckpointError: no checkpoint (``required``), or one that does not match; the message
        ends with ``missing_hint`` / ``mismatch_hint``.
    """
    path = latest(run_dir)
    if path is None:
        if required:
            raise CheckpointError(f"no checkpoint in {directory(run_dir)}; {missing_hint}")
        return None
    try:
        status = tf.train.Checkpoint(**_objects(model, optimizer, step)).restore(path)
        if optimizer is None:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} does not match this model ({first}); {mismatch_hint}"
        ) from None
    return path


def _fsync_checkpoint(path: str) -> None:
    """Flushes a checkpoint's files and the folder's index (TF renames without fsync)."""
    folder = os.path.dirname(path)
    prefix = os.path.basename(path)
    for name in os.listdir(folder):
        if name.startswith(prefix) or name == run_folder.CHECKPOINT_INDEX:
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class Checkpoints:
    """The run's checkpoints: numbered by global step, written only with finite weights.

    The chief writes into ``<run>/checkpoints``; other workers must take part in every save
    too (a save may need collectives) but write into a private temporary folder, deleted by
    ``close``. Everyone restores from the chief's folder (``restore_latest``).
    """

    def __init__(
        self,
        model: keras.Model,
        run_dir: str,
        chief: bool,
        optimizer=None,
        step: tf.Variable | None = None,
    ):
        self.run_dir = run_dir
        self.directory = directory(run_dir)
        self._tmp = None if chief else tempfile.mkdtemp(prefix="droc_worker_ckpt_")
        self._objects = (model, optimizer, step)
        # The same structure ``restore`` reads back: model[, optimizer, step].
        ckpt = tf.train.Checkpoint(**_objects(model, optimizer, step))
        self._manager = tf.train.CheckpointManager(
            ckpt, self._tmp or self.directory, max_to_keep=2 if chief else 1
        )
        self._model = model
        self.saved_step: int | None = None

    @property
    def latest_checkpoint(self) -> str | None:
        return latest(self.run_dir)

    def restore_latest(self) -> str | None:
        """Restores the newest checkpoint (model, optimizer, step); None when there is none.

        Raises:
          RunError: the checkpoint does not match this model.
        """
        return restore(
            self.run_dir,
            *self._objects,
            required=False,
            mismatch_hint="use --force_init or another --model_dir",
        )

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
        _fsync_checkpoint(path)
        return path

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
