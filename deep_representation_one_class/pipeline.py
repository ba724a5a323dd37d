"""Generic tf.data pipelines over in-memory uint8 arrays (knows nothing about any dataset).

Training order and augmentation randomness are pure functions of ``(seed, global step)``:
epoch ``e`` visits ``argsort(stateless_uniform(seed, e))`` and the example at position ``p``
of that epoch gets the stateless augmentation seed ``(seed, e * n_use + p)``. A run resumed
from step ``t`` therefore sees exactly the batches an uninterrupted run would have seen, with
no iterator state in the checkpoint. (The reference cached after a full shuffle, which froze
the epoch order, and drew augmentation noise from the global RNG; spec §11 items 14 and 16.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

ViewFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, as in the reference)."""
    return num_examples // global_batch


def _image_store(images: np.ndarray) -> tf.Variable:
    # A variable (not a graph constant) so that large arrays do not hit the 2 GB GraphDef
    # limit, created outside any strategy scope so it stays a plain CPU variable.
    with tf.device("/cpu:0"):
        return tf.Variable(images, trainable=False, name="image_store")


def make_train_dataset(
    images: np.ndarray,
    view_fn: ViewFn,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    total_steps: int | None = None,
) -> tf.data.Dataset:
    """Infinite (or ``total_steps``-long) stream of batches of augmented views.

    Args:
      images: [N, H, W, C] uint8 training images (after distribution augmentation).
      view_fn: maps (image [H, W, C] uint8, seed int32 [2]) to a tuple of V views.
      global_batch: images per step across all replicas.
      seed: run seed; fixes the epoch orders and every augmentation draw.
      start_step: first global step to produce (for resuming).
      total_steps: stop after this global step (None: repeat forever).

    Returns:
      A dataset of tuples of V tensors [global_batch, S, S, C] float32.
    """
    n = int(images.shape[0])
    if n < 1:
        raise ValueError("no training images")
    # Fewer images than one batch (small user folders, MVTec categories at large batches):
    # cycle through ceil(batch / n) virtual copies per epoch, like the reference's repeat().
    reps = -(-global_batch // n)
    n_virtual = n * reps
    spe = steps_per_epoch(n_virtual, global_batch)
    n_use = spe * global_batch
    store = _image_store(images)
    seed = int(seed) % (2**31 - 1)
    start_epoch, offset = divmod(int(start_step), spe)

    def epoch_items(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch32 = tf.cast(epoch, tf.int32)
        keys = tf.random.stateless_uniform([n_virtual], seed=tf.stack([seed, epoch32]))
        order = (tf.argsort(keys) % n)[:n_use]
        pos = tf.range(n_use, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices(
            (tf.fill([n_use], tf.cast(epoch, tf.int64)), pos, order)
        )

    def load(epoch, pos, index):
        counter = epoch * n_use + pos
        aug_seed = tf.stack([tf.constant(seed, tf.int64), counter])
        image = tf.gather(store, index)
        return view_fn(image, tf.cast(aug_seed % (2**31 - 1), tf.int32))

    epochs = tf.data.Dataset.range(start_epoch, 2**62)
    ds = epochs.flat_map(epoch_items).skip(offset)
    if total_steps is not None:
        ds = ds.take(max(0, (int(total_steps) - int(start_step)) * global_batch))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(images: np.ndarray, view_fn: ViewFn, batch: int) -> tf.data.Dataset:
    """One ordered pass over ``images`` (no shuffle, last batch kept) with fixed view seeds."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.map(
        lambda im: view_fn(im, tf.constant([0, 0], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)
