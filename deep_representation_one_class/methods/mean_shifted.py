"""Mean-shifted contrastive fine-tuning of pretrained features (beyond the paper).

Idea from Reiss & Hoshen, "Mean-Shifted Contrastive Loss for Anomaly Detection" (AAAI 2023):
plain contrastive fine-tuning of pretrained features spreads the normal images uniformly over
the sphere and forgets what made them compact, which lowers one-class AUROC. Measuring the
contrastive loss on features *shifted by the normal data's mean* keeps the class compact
(all normal features stay on one side of the sphere) while still learning from the views.

Loss of one pair of views (unit features ``z1``, ``z2`` of the pooled backbone output; ``c``
the mean of the unit features of the normal training images, not re-normalised):

    s_i = (z_i - c) / ||z_i - c||
    loss = NT-Xent(s1, s2; temperature) + ||z1 - c||^2 + ||z2 - c||^2      (angular term)

The centre ``c`` is estimated, without gradients, from the first ``--msc_center_examples``
training examples the run sees (the pretrained network barely moves in those few steps at the
fine-tuning learning rate) and then kept fixed. It is a non-trainable weight of the model, so
checkpoints and resume carry it. Evaluation is the run's usual one: the classifiers are fitted
on the pooled (unshifted) features.

Requires a pretrained trainable backbone (``--backbone=efficientnet_lite0``, the default here);
on a from-scratch network the centre of random features means nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from deep_representation_one_class.augment.grammar import PAPER_AUG
from deep_representation_one_class.methods import losses
from deep_representation_one_class.methods.base import Method
from deep_representation_one_class.models.backbones import BACKBONES
from deep_representation_one_class.registry import Option
from deep_representation_one_class.training import distribute

CENTER_LAYER = "msc_center"

PLUGIN = dict(
    kind="method",
    name="mean_shifted",
    aliases=["msc"],
    label="Mean-shifted contrastive",
    description="fine-tunes pretrained features with the mean-shifted contrastive loss",
    defaults={
        "backbone": "efficientnet_lite0",
        "aug_list": PAPER_AUG + ",+",
        "aug_list_for_test": "",
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 32,
        "train_steps": 150,
        "optim_type": "sgd",
        "learning_rate": 1e-4,
        "weight_decay": 5e-5,
        "sched_type": "const",
        # The pretrained networks compute in float32 (models/backbones.py).
        "precision": "float32",
    },
    options=[
        Option("msc_temperature", 0.25, "mean_shifted: temperature of the contrastive loss (> 0)."),
        Option(
            "msc_center_examples",
            1024,
            "mean_shifted: training examples whose unit features average into the fixed "
            "centre (>= 1).",
        ),
    ],
    impl="MeanShifted",
)


class CenterBuffer(keras.layers.Layer):
    """Identity on the pooled features that owns the fixed centre (and how many examples it
    has averaged so far) as non-trainable weights, so that they are saved with the model."""

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.center = self.add_weight(
            shape=(dim,),
            initializer="zeros",
            trainable=False,
            name="center",
            aggregation="only_first_replica",
        )
        self.count = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="count",
            aggregation="only_first_replica",
        )

    def call(self, pools):
        return pools


class MeanShifted(Method):
    """Mean-shifted contrastive loss plus the angular compactness term (module docstring)."""

    @classmethod
    def check_config(cls, config, num_views):
        if num_views != 2:
            raise ValueError(
                f"method mean_shifted needs exactly 2 views in --aug_list, got {num_views}"
            )
        if not config.msc_temperature > 0:
            raise ValueError(f"--msc_temperature must be > 0, got {config.msc_temperature}")
        if config.msc_center_examples < 1:
            raise ValueError(
                f"--msc_center_examples must be >= 1, got {config.msc_center_examples}"
            )
        if not BACKBONES.get(config.backbone).pretrained:
            raise ValueError(
                f"--method=mean_shifted fine-tunes pretrained features; --backbone="
                f"{config.backbone} has none (use efficientnet_lite0)"
            )

    def build_model(self, make_default):
        model = make_default()
        outputs = dict(model.output)
        outputs["pools"] = CenterBuffer(name=CENTER_LAYER)(outputs["pools"])
        return keras.Model(model.input, outputs, name=model.name + "_msc")

    def examples_per_step(self, global_batch, num_views):
        return 2 * global_batch

    def per_example(self, model, views, training=True):
        x1, x2 = views[0], views[1]
        b = tf.shape(x1)[0]
        out = model(tf.concat([x1, x2], axis=0), training=training)
        z = losses.l2_normalize(out["pools"])
        buf = model.get_layer(CENTER_LAYER)
        if training:
            self._update_center(buf, tf.stop_gradient(z[:b]))
        center = tf.stop_gradient(buf.center)
        shifted = losses.l2_normalize(z - center)
        s1, s2 = shifted[:b], shifted[b:]
        replica_id, _ = distribute.replica_info()
        both = distribute.all_gather(tf.concat([s1, s2], axis=1))
        dim = tf.shape(s1)[1]
        loss, acc = losses.nt_xent(
            s1, s2, both[:, :dim], both[:, dim:], replica_id * b, self.config.msc_temperature
        )
        angular = tf.reduce_sum(tf.square(z - center), axis=1)
        return loss + angular, acc

    def _update_center(self, buf, z1):
        """Running mean of the first ``msc_center_examples`` unit features (all replicas).

        Assigned on every step (a no-op once the count is reached): a conditional assignment
        of a distributed variable inside the replica step is not supported."""
        batch = distribute.all_gather(z1)
        active = tf.cast(buf.count < float(self.config.msc_center_examples), tf.float32)
        n = active * tf.cast(tf.shape(batch)[0], tf.float32)
        count = tf.convert_to_tensor(buf.count)
        new_count = count + n
        total = buf.center * count + active * tf.reduce_sum(batch, 0)
        buf.center.assign(total / tf.maximum(new_count, 1.0))
        buf.count.assign(new_count)
