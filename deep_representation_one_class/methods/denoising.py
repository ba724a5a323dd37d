"""Denoising autoencoder baseline (Table 7 "Denoising"): the ResNet trunk learns to undo noise.

The encoder is the configured ResNet trunk. A decoder mirrors its downsampling from the last
feature map (the input of the global average pooling, [B, H/s, W/s, C] with s = 8 for the CIFAR
stem and 32 for the ImageNet stem): log2(s) stride-2 transposed convolutions halving the
channels, each followed by BN and ReLU, then a 3x3 conv with a sigmoid back to [B, H, W, C_img].
The loss is the per-example mean squared error between the decoding of a noisy input and the
clean input. The evaluated features are ``pools`` as for every method, i.e. the average of the
feature map the decoder reads. (Decoding from ``pools`` itself was tried: a 128-d code of a
width-0.25 trunk reconstructed worse and its features scored lower on f-MNIST class 0.)

The paper does not describe its denoising baseline's recipe (spec §10 item 3); these choices are
ours: additive Gaussian noise with sigma 0.1 on [0, 1] pixels (clipped back to [0, 1]), one
view (``--aug_list=x``), no MLP head, the decoder trained with the same optimizer and L2 term
as the encoder.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from deep_representation_one_class.methods.base import QUICK_STEPS, Method

PLUGIN = dict(
    kind="method",
    name="denoising",
    aliases=["dae"],
    label="Denoising",
    description="baseline: denoising autoencoder",
    defaults={
        "aug_list": "x",
        "aug_list_for_test": "",
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 64,
        "train_steps": QUICK_STEPS,
    },
    impl="Denoising",
)

NOISE_STDDEV = 0.1  # Gaussian input noise, in units of the [0, 1] pixel range
PIXEL_TOLERANCE = 0.1  # "accuracy": share of pixels decoded within this absolute error


def trunk_stride(input_size: int) -> int:
    """Downsampling of the ResNet trunk: 8 with the CIFAR stem (< 128 px), else 32 (spec 4.1)."""
    return 8 if input_size < 128 else 32


def build_decoder(feature_map: keras.KerasTensor, stride: int, channels: int) -> keras.KerasTensor:
    """Decoder from the trunk's last feature map back to an image.

    Args:
      feature_map: [B, h, w, F] float features (h = H / stride).
      stride: the trunk's total downsampling, a power of 2.
      channels: channels of the decoded image (1 or 3).

    Returns:
      [B, h * stride, w * stride, channels] float32 in [0, 1].
    """
    x = feature_map
    width = int(feature_map.shape[-1])
    for i in range(round(math.log2(stride))):
        x = layers.Conv2DTranspose(
            max(8, width // 2 ** (i + 1)),
            4,
            strides=2,
            padding="same",
            use_bias=False,
            name=f"dec_up{i}",
        )(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"dec_up{i}_bn")(x)
        x = layers.ReLU(name=f"dec_up{i}_relu")(x)
    x = layers.Conv2D(channels, 3, padding="same", name="dec_out")(x)
    # float32 output whatever the compute precision: the MSE is taken in float32.
    return layers.Activation("sigmoid", dtype="float32", name="decoded")(x)


class Denoising(Method):
    """Reconstructs the clean image from a noisy copy; the code is the pooled trunk output."""

    @classmethod
    def check_config(cls, config, num_views):
        if num_views != 1:
            raise ValueError(
                f"method denoising uses exactly 1 view (e.g. --aug_list=x), got {num_views}"
            )
        h, w = int(config.input_shape[0]), int(config.input_shape[1])
        stride = trunk_stride(h)
        if h % stride or w % stride:
            raise ValueError(
                f"method denoising needs --input_shape H and W divisible by {stride} (the "
                f"trunk's downsampling), got {h}x{w}"
            )

    def build_model(self, make_default):
        base = make_default()
        out = dict(base.output)
        # The functional graph's pooling layer is named "pools" (models/resnet.py); its input
        # is the last feature map.
        feature_map = base.get_layer("pools").input
        out["decoded"] = build_decoder(
            feature_map, trunk_stride(int(self.config.input_shape[0])), self.config.input_shape[2]
        )
        return keras.Model(base.inputs, out, name=f"{base.name}_dae")

    def per_example(self, model, views, training=True):
        clean = tf.cast(views[0], tf.float32)
        noisy = clean + NOISE_STDDEV * tf.random.normal(tf.shape(clean))
        decoded = model(tf.clip_by_value(noisy, 0.0, 1.0), training=training)["decoded"]
        err = decoded - clean
        loss = tf.reduce_mean(tf.square(err), axis=[1, 2, 3])
        acc = tf.reduce_mean(tf.cast(tf.abs(err) < PIXEL_TOLERANCE, tf.float32), axis=[1, 2, 3])
        return loss, acc
