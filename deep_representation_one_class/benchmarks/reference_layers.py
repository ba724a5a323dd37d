"""The reference's layer implementation of the ResNet, for measuring its speed beside ours.

The reference builds its ResNets from Keras' ``BatchNormalization`` (a chain of reductions and
elementwise ops, with the activations upcast to float32 under mixed precision) and an explicit
``ZeroPadding2D`` before every conv. ``models.resnet`` computes the same function with the same
variables (checkpoints are interchangeable) through TensorFlow's fused BatchNorm kernel and
padding inside stride-1 convs; only the speed differs. The benchmark's ``reference_fp32`` case
builds its model with ``REFERENCE_TRUNK``.
"""

from __future__ import annotations

import keras

from deep_representation_one_class.config import Config
from deep_representation_one_class.training import build

# models.resnet.resnet_trunk options that reproduce the reference's layers.
REFERENCE_TRUNK = {"norm_layer": keras.layers.BatchNormalization, "pad_inside_conv": False}


def make_reference_model(cfg: Config) -> keras.Model:
    """``training.build.make_model`` with the reference's layer implementation."""
    return build.make_model(cfg, **REFERENCE_TRUNK)
