"""Contrastive learning (SimCLR-style), optionally with distribution augmentation.

Distribution augmentation itself happens on the training arrays (``datasets.expand_distaug``):
rotated/flipped copies simply become extra instances, so nothing here depends on it.
"""

from __future__ import annotations

import tensorflow as tf

from deep_representation_one_class.augment.grammar import PAPER_AUG
from deep_representation_one_class.methods import losses
from deep_representation_one_class.methods.base import QUICK_STEPS, Method
from deep_representation_one_class.registry import Option
from deep_representation_one_class.training import distribute

PLUGIN = dict(
    kind="method",
    name="contrastive",
    label="Contrastive",
    description="contrastive learning of two augmented views (the paper's main method)",
    defaults={
        "aug_list": PAPER_AUG + ",+",
        "aug_list_for_test": "",
        "head_dims": (512, 512, 128),
        "latent_dim": 0,
        "batch_size": 64,
        "train_steps": QUICK_STEPS,
        # bfloat16 where the hardware computes it natively: the same AUROCs as float32 on
        # Fashion-MNIST (5 paired seeds, results/precision_parity.md) at about 1.2-1.7x
        # the steps per second.
        "precision": "auto",
    },
    options=[
        Option("temperature", 0.2, "Softmax temperature of the contrastive loss (> 0)."),
        Option(
            "symmetric_loss",
            False,
            "SimCLR's symmetric NT-Xent instead of the reference's one-directional "
            "cross-view InfoNCE.",
        ),
    ],
    impl="Contrastive",
)


class Contrastive(Method):
    """Two views per image; InfoNCE with negatives from the whole global batch.

    Default: the reference's one-directional cross-view loss. ``--symmetric_loss`` switches to
    SimCLR's NT-Xent. Both views go through one forward pass, so (as in the reference) they
    share BatchNorm statistics within a replica.
    """

    @classmethod
    def table_label(cls, config):
        distaug = str(config.get("distaug_type", "1")).strip().lower()
        return "Contrastive" if distaug in ("", "1", "none") else "Contrastive (DA)"

    @classmethod
    def check_config(cls, config, num_views):
        if not config.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {config.temperature}")
        if num_views != 2:
            raise ValueError(
                f"method contrastive needs exactly 2 views in --aug_list, got {num_views}"
            )

    def examples_per_step(self, global_batch, num_views):
        return 2 * global_batch if self.config.symmetric_loss else global_batch

    def per_example(self, model, views, training=True):
        x1, x2 = views[0], views[1]
        b = tf.shape(x1)[0]
        out = model(tf.concat([x1, x2], axis=0), training=training)
        z = losses.l2_normalize(out["embeds"])
        z1, z2 = z[:b], z[b:]
        replica_id, _ = distribute.replica_info()
        offset = replica_id * b
        tau = self.config.temperature
        if self.config.symmetric_loss:
            # One gather of [z1 | z2] rather than two: independent collectives inside the
            # step's while-loop may be scheduled in different orders on different replicas.
            z_all = distribute.all_gather(tf.concat([z1, z2], axis=1))
            dim = tf.shape(z1)[1]
            return losses.nt_xent(z1, z2, z_all[:, :dim], z_all[:, dim:], offset, tau)
        return losses.info_nce(z1, z2, distribute.all_gather(z2), offset, tau)
