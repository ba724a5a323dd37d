"""Denoising autoencoder baseline (Table 7 "Denoising"): the ResNet trunk learns to undo noise.

The encoder is the configured ResNet trunk; its pooled features ``pools`` are the code. A small
decoder (Dense to an (H/8, W/8) grid, three stride-2 transposed convolutions, a 3x3 output conv
with a sigmoid) maps the code back to an image, and the loss is the per-example mean squared
error between the decoding of a noisy input and the clean input. Decoding from ``pools`` (not
from the last feature map) makes the evaluated representation the autoencoder's bottleneck,
which is what a denoising-AE baseline of one-class features should measure.

The paper does not describe its denoising baseline's recipe (spec §10 item 3); these choices are
ours: additive Gaussian noise with sigma 0.1 on [0, 1] pixels (clipped back to [0, 1]), one
view (``--aug_list=x``), no MLP head, the decoder trained with the same optimizer and L2 term
as the encoder. Evaluation is the usual one on ``pools``.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from deep_representation_one_class.methods.base import METHODS, Method

NOISE_STDDEV = 0.1  # Gaussian input noise, in units of the [0, 1] pixel range
PIXEL_TOLERANCE = 0.1  # "accuracy": share of pixels decoded within this absolute error
_UPSAMPLINGS = 3  # the decoder's stride-2 steps; H and W must be divisible by 2**3


def build_decoder(
    code: keras.KerasTensor, image_shape: tuple[int, int, int], width: float = 1.0
) -> keras.KerasTensor:
    """Decoder head on the code.

    Args:
      code: [B, F] float32 pooled features.
      image_shape: (H, W, C) of the training images; H and W divisible by 8.
      width: multiplier of the decoder channels (256, 128, 64, 32 at width 1).

    Returns:
      [B, H, W, C] float32 decoded images in [0, 1].
    """
    h, w, c = (int(v) for v in image_shape)
    scale = 2**_UPSAMPLINGS
    chans = [max(4, round(base * min(width, 1.0))) for base in (256, 128, 64, 32)]
    x = layers.Dense((h // scale) * (w // scale) * chans[0], name="dec_dense")(code)
    x = layers.Reshape((h // scale, w // scale, chans[0]), name="dec_reshape")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="dec_dense_bn")(x)
    x = layers.ReLU(name="dec_dense_relu")(x)
    for i, ch in enumerate(chans[1:]):
        x = layers.Conv2DTranspose(
            ch, 4, strides=2, padding="same", use_bias=False, name=f"dec_up{i}"
        )(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"dec_up{i}_bn")(x)
        x = layers.ReLU(name=f"dec_up{i}_relu")(x)
    x = layers.Conv2D(c, 3, padding="same", name="dec_out")(x)
    # float32 output whatever the compute precision: the MSE is taken in float32.
    return layers.Activation("sigmoid", dtype="float32", name="decoded")(x)


@METHODS.register("denoising", "dae")
class Denoising(Method):
    """Reconstructs the clean image from a noisy copy; the code is the pooled trunk output."""

    name = "denoising"

    @classmethod
    def check_config(cls, config, num_views):
        if num_views != 1:
            raise ValueError(
                f"method denoising uses exactly 1 view (e.g. --aug_list=x), got {num_views}"
            )
        h, w = int(config.input_shape[0]), int(config.input_shape[1])
        scale = 2**_UPSAMPLINGS
        if h % scale or w % scale:
            raise ValueError(
                f"method denoising needs --input_shape H and W divisible by {scale}, got {h}x{w}"
            )

    def build_model(self, make_default):
        base = make_default()
        out = dict(base.output)
        out["decoded"] = build_decoder(
            out["pools"], tuple(self.config.input_shape), self.config.net_width
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
