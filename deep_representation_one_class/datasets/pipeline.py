"""Generic tf.data pipelines over in-memory uint8 arrays (knows nothing about any dataset).

Training order and augmentation randomness are pure functions of ``(seed, global step)``:
epoch ``e`` visits ``argsort(stateless_uniform(seed, e))`` and the example at position ``p``
of that epoch gets the stateless augmentation seed ``(seed, e * n_use + p)``. A run resumed
from step ``t`` therefore sees exactly the batches an uninterrupted run would have seen, with
no iterator state in the checkpoint. (The reference cached after a full shuffle, which froze
the epoch order, and drew augmentation noise from the global RNG; spec §11 items 14 and 16.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

ViewFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]


def _parallelism() -> int:
    """Map parallelism: one call per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _fixed_threading(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Fixed map parallelism and prefetch depth, with tf.data's autotuner off.

    On the 2-core development machine the autotuner (``AUTOTUNE`` parallelism and prefetch
    buffers) made feature extraction bimodal: in about one pass out of three the model ran at
    half speed (exactly 2x slower, as if on one core), for both float32 and bfloat16. With a
    fixed parallelism of one map call per core, a prefetch of two batches and autotuning
    disabled, every pass ran at full speed, and the augmentation pipeline still produces
    batches many times faster than the model consumes them.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


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
    num_shards: int = 1,
    shard_index: int = 0,
    out_batch: int | None = None,
) -> tf.data.Dataset:
    """Infinite (or ``total_steps``-long) stream of batches of augmented views.

    Sharding (several workers): shard ``k`` of ``K`` keeps rows ``[k * B / K, (k + 1) * B / K)``
    of every global batch and augments only those; the union over shards is exactly the global
    batch of the unsharded stream (same images, same augmentation seeds), so training with
    ``K`` workers matches one worker on the same global batch. The shard's rows are emitted in
    consecutive ``out_batch``-sized pieces (one per local replica, in replica order).

    Args:
      images: [N, H, W, C] uint8 training images (after distribution augmentation).
      view_fn: maps (image [H, W, C] uint8, seed int32 [2]) to a tuple of V views.
      global_batch: images per step across all replicas.
      seed: run seed; fixes the epoch orders and every augmentation draw.
      start_step: first global step to produce (for resuming).
      total_steps: stop after this global step (None: repeat forever).
      num_shards: K, the number of input pipelines (workers) sharing each global batch.
      shard_index: k in [0, K), this pipeline's shard.
      out_batch: rows per emitted batch; must divide ``global_batch / K`` (default: all of it).

    Returns:
      A dataset of tuples of V tensors [out_batch, S, S, C] float32 (``out_batch`` defaults
      to ``global_batch / num_shards``); ``global_batch / out_batch`` consecutive elements
      (over all shards) make one global step.
    """
    n = int(images.shape[0])
    if n < 1:
        raise ValueError("no training images")
    if global_batch % num_shards or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"cannot take shard {shard_index} of {num_shards} of a batch of {global_batch}"
        )
    local = global_batch // num_shards
    out_batch = local if out_batch is None else int(out_batch)
    if out_batch < 1 or local % out_batch:
        raise ValueError(f"per-replica batch {out_batch} does not divide the shard of {local}")
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
    # ``offset`` counts steps into the epoch and the stream is still per example here, so a
    # mid-epoch resume skips ``offset`` whole batches.
    ds = epochs.flat_map(epoch_items).skip(offset * global_batch)
    if total_steps is not None:
        ds = ds.take(max(0, (int(total_steps) - int(start_step)) * global_batch))
    if num_shards > 1:
        lo = shard_index * local
        ds = ds.batch(global_batch, drop_remainder=True)
        ds = ds.map(lambda e, p, i: (e[lo : lo + local], p[lo : lo + local], i[lo : lo + local]))
        ds = ds.unbatch()
    ds = ds.map(load, num_parallel_calls=_parallelism(), deterministic=True)
    ds = ds.batch(out_batch, drop_remainder=True)
    return _fixed_threading(ds.prefetch(2))


def make_eval_dataset(images: np.ndarray, view_fn: ViewFn, batch: int) -> tf.data.Dataset:
    """One ordered pass over ``images`` (no shuffle, last batch kept) with fixed view seeds."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.map(
        lambda im: view_fn(im, tf.constant([0, 0], tf.int32)),
        num_parallel_calls=_parallelism(),
        deterministic=True,
    )
    return _fixed_threading(ds.batch(batch).prefetch(2))
