"""Rotation prediction (the reference's ``UnsupEmbed``): classify which view was produced.

With the scripts' ``aug_list`` (``<aug>,+rotate90,+rotate180,+rotate270``) view k is the k-th
rotation of an independently augmented copy, and the label is k. The classifier's own output
also gives the ``logit``/``dscore`` anomaly scores at evaluation time.
"""

from __future__ import annotations

import tensorflow as tf

from deep_representation_one_class.augment.grammar import PAPER_AUG, ROTATIONS
from deep_representation_one_class.methods import losses
from deep_representation_one_class.methods.base import QUICK_STEPS, Method

PLUGIN = dict(
    kind="method",
    name="rotation",
    aliases=["unsupembed"],  # the reference's name
    label="Rotation prediction",
    description="rotation prediction (the paper's second method)",
    defaults={
        "aug_list": PAPER_AUG + ROTATIONS,
        "aug_list_for_test": "x" + ROTATIONS,
        "head_dims": (512, 512),
        "latent_dim": 4,
        "batch_size": 32,
        # 4 views per image: 750 steps of 32 x 4 put as many images through the network as
        # contrastive's 750 steps of 2 x 64.
        "train_steps": QUICK_STEPS,
    },
    extra_eval=("logit", "dscore"),
    impl="Rotation",
)


class Rotation(Method):
    """V-way "which view" classification with the ``logits`` head (latent_dim == V)."""

    @classmethod
    def check_config(cls, config, num_views):
        if config.latent_dim != num_views:
            raise ValueError(
                f"method rotation needs --latent_dim equal to the number of views in "
                f"--aug_list ({num_views}), got --latent_dim={config.latent_dim}"
            )

    def examples_per_step(self, global_batch, num_views):
        return global_batch * num_views

    def per_example(self, model, views, training=True):
        b = tf.shape(views[0])[0]
        x = tf.concat(list(views), axis=0)
        labels = tf.repeat(tf.range(len(views), dtype=tf.int32), b)
        logits = model(x, training=training)["logits"]
        return losses.transformation_xent(logits, labels)
