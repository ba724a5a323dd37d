"""Pure loss functions (no IO, no model): per-example losses and accuracies.

Shapes are per replica; ``B`` is the per-replica batch. All computations are float32.
"""

from __future__ import annotations

import tensorflow as tf


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def info_nce(
    z1: tf.Tensor,
    z2: tf.Tensor,
    z2_all: tf.Tensor,
    offset: tf.Tensor,
    temperature: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One-directional cross-view InfoNCE (the reference's contrastive loss, spec §3.2).

    Anchor ``z1[i]`` is scored against every ``z2_all[j]`` (the second views of the whole global
    batch); its positive sits at column ``offset + i``. Only cross-view negatives (B_global - 1
    of them) are used, unlike SimCLR's NT-Xent.

    Args:
      z1, z2: [B, E] L2-normalised embeddings of the two views on this replica.
      z2_all: [B_global, E] second views gathered from every replica.
      offset: int32 scalar, this replica's first row in ``z2_all``.
      temperature: the softmax temperature tau.

    Returns:
      (per-example loss [B], per-example accuracy [B] in {0, 1}).
    """
    del z2  # part of the signature for symmetry with nt_xent
    logits = tf.matmul(z1, z2_all, transpose_b=True) / temperature
    labels = offset + tf.range(tf.shape(z1)[0])
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    acc = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    return loss, acc


def nt_xent(
    z1: tf.Tensor,
    z2: tf.Tensor,
    z1_all: tf.Tensor,
    z2_all: tf.Tensor,
    offset: tf.Tensor,
    temperature: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Symmetric SimCLR NT-Xent: each view is an anchor, with 2*B_global - 2 negatives.

    Returns per-example losses [2B] (views 1 then views 2) and accuracies [2B].
    """
    n_all = tf.shape(z1_all)[0]
    labels = offset + tf.range(tf.shape(z1)[0])
    self_mask = tf.one_hot(labels, n_all) * 1e9  # removes the anchor's own view

    def half(a, same_all, other_all):
        l_other = tf.matmul(a, other_all, transpose_b=True) / temperature
        l_same = tf.matmul(a, same_all, transpose_b=True) / temperature - self_mask
        logits = tf.concat([l_other, l_same], axis=1)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        acc = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        return loss, acc

    loss1, acc1 = half(z1, z1_all, z2_all)
    loss2, acc2 = half(z2, z2_all, z1_all)
    return tf.concat([loss1, loss2], 0), tf.concat([acc1, acc2], 0)


def transformation_xent(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy of "which transformation was applied" (rotation prediction).

    Args:
      logits: [N, K] float32; labels: [N] int32 in [0, K).

    Returns:
      (per-example loss [N], per-example accuracy [N]).
    """
    logits = tf.cast(logits, tf.float32)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    acc = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    return loss, acc
