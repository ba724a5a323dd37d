"""Distribution helpers: strategy factory, cross-replica gather and replica bookkeeping.

Loss convention (fix of reference bug 3, spec §11): every method returns *per-example* losses
and the runner reduces them with ``tf.nn.compute_average_loss(..., global_batch_size=...)``;
Keras 3 optimizers then SUM the per-replica gradients, so the update equals the update of one
replica seeing the whole global batch. The L2 term is divided by the number of replicas
(``tf.nn.scale_regularization_loss``) for the same reason.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """Creates the distribution strategy.

    ``mirrored`` uses every visible GPU (or the CPU as one replica, or the logical CPU devices
    when several were configured, as the tests do); ``multi_worker`` reads ``TF_CONFIG``;
    ``default`` is the no-op strategy.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable "
                "(cluster spec and this worker's task); see the README"
            )
        json.loads(os.environ["TF_CONFIG"])  # fail early on malformed JSON
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "mirrored":
        raise ValueError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus])


def replica_info() -> tuple[tf.Tensor, int]:
    """Returns (replica id as int32 tensor, number of replicas in sync) in replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32), 1
    rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return rid, ctx.num_replicas_in_sync


def all_gather(x: tf.Tensor) -> tf.Tensor:
    """Concatenates ``x`` [B_r, ...] from every replica along axis 0 ([R*B_r, ...]).

    Differentiable: the gradient flowing back to this replica's slice includes the
    contributions of every replica's loss (the all-gather's gradient is an all-reduce of the
    incoming gradient followed by a slice), which is what the contrastive negatives need.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)
