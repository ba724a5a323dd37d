"""ResNet v1 (post-activation) backbones with a width multiplier, as functional Keras models.

Behaviour follows the reference (spec §4.1): explicit symmetric zero padding followed by a
'valid' convolution (PyTorch-like padding), no conv bias, He fan-out initialisation, BatchNorm
with momentum 0.9 / epsilon 1e-5, and basic or bottleneck blocks (stride on the 3x3 conv, the
"v1.5" placement). The trunk is fully convolutional: any H x W works, which the MVTec patch
models rely on. The stem depends on the *nominal* input size: a 3x3 stride-1 "CIFAR" stem for
inputs smaller than 128 px, the 7x7/2 + max-pool "ImageNet" stem otherwise. (The reference
raised for sizes other than 32/64/128/256; any size is accepted here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import layers

BLOCKS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_BN_MOMENTUM = 0.9  # Keras convention: the moving average keeps 0.9 of the old value.
_BN_EPS = 1e-5


@keras.saving.register_keras_serializable(package="droc")
class FusedBatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` over NHWC maps computed by TensorFlow's fused kernel.

    Same variables, defaults and results as the Keras layer (moving statistics keep Keras'
    biased batch variance), but one ``FusedBatchNormV3`` op (oneDNN on x86 CPUs, cuDNN on GPUs)
    and its fused gradient replace Keras' chain of reductions and elementwise ops. Under a
    mixed policy the kernel reads bfloat16/float16 activations directly and keeps the statistics,
    gamma and beta in float32, instead of casting every activation map to float32 and back
    (Keras' own upcast). On the development CPU this cut the BatchNorm forward + backward CPU time
    about 3x in float32 and 4x in bfloat16. Synchronised BN, masks and non-4-D inputs use the
    Keras implementation.
    """

    def call(self, inputs, training=None, mask=None):
        axis = self.axis if isinstance(self.axis, int) else None
        if (
            mask is not None
            or self.synchronized
            or keras.backend.backend() != "tensorflow"
            or len(inputs.shape) != 4
            or axis not in (-1, 3)
            or not (self.center and self.scale)
        ):
            return super().call(inputs, training=training, mask=mask)
        gamma = tf.convert_to_tensor(self.gamma)
        beta = tf.convert_to_tensor(self.beta)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=gamma,
                offset=beta,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel returns the unbiased (n / (n - 1)) variance for the running average;
            # Keras (and the reference's tf.keras moving statistics) use the biased one.
            shape = tf.shape(inputs)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            var = var * ((n - 1.0) / tf.maximum(n, 1.0))
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            return y
        return tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=gamma,
            offset=beta,
            mean=tf.convert_to_tensor(self.moving_mean),
            variance=tf.convert_to_tensor(self.moving_variance),
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=False,
        )[0]


def _init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="truncated_normal"
    )


class _Builder:
    """Holds the shared layer options (sync BN, dtype policy, layer choices) while the graph
    is built."""

    def __init__(self, sync_bn: bool, dtype: str | None, norm_layer: type, pad_inside_conv: bool):
        self.sync_bn = sync_bn
        self.dtype = dtype
        self.norm_layer = norm_layer
        self.pad_inside_conv = pad_inside_conv

    def conv(self, x, filters: int, kernel: int, stride: int, name: str):
        # Reference behaviour: symmetric zero padding of kernel // 2, then a 'valid' conv. For
        # stride 1 and an odd kernel, padding='same' pads exactly that, so those convs pad
        # inside the conv kernel and skip the extra pad copy (and its gradient, a slice) per
        # layer. With stride 2 'same' would pad (0, 1) instead of (1, 1) on even inputs,
        # shifting the sampling grid, so the explicit pad stays there. The no-op Identity keeps
        # the layer list (and so the checkpoint layout, which is keyed by layer index) of
        # models built with an explicit pad everywhere.
        padding = "valid"
        if kernel > 1 and stride == 1 and kernel % 2 == 1 and self.pad_inside_conv:
            padding = "same"
            x = layers.Identity(name=f"{name}_pad", dtype=self.dtype)(x)
        elif kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad", dtype=self.dtype)(x)
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=_init(),
            name=name,
            dtype=self.dtype,
        )(x)

    def bn(self, x, name: str):
        return self.norm_layer(
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPS,
            synchronized=self.sync_bn,
            name=name,
            dtype=self.dtype,
        )(x)

    def relu(self, x, name: str):
        return layers.ReLU(name=name, dtype=self.dtype)(x)

    def basic(self, x, filters: int, stride: int, name: str):
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = self.conv(x, filters, 1, stride, f"{name}_sc")
            shortcut = self.bn(shortcut, f"{name}_sc_bn")
        y = self.relu(
            self.bn(self.conv(x, filters, 3, stride, f"{name}_c1"), f"{name}_bn1"), f"{name}_relu1"
        )
        y = self.bn(self.conv(y, filters, 3, 1, f"{name}_c2"), f"{name}_bn2")
        y = layers.Add(name=f"{name}_add", dtype=self.dtype)([shortcut, y])
        return self.relu(y, f"{name}_out")

    def bottleneck(self, x, filters: int, stride: int, name: str):
        out = filters * 4
        shortcut = x
        if stride != 1 or x.shape[-1] != out:
            shortcut = self.bn(self.conv(x, out, 1, stride, f"{name}_sc"), f"{name}_sc_bn")
        y = self.relu(
            self.bn(self.conv(x, filters, 1, 1, f"{name}_c1"), f"{name}_bn1"), f"{name}_relu1"
        )
        y = self.relu(
            self.bn(self.conv(y, filters, 3, stride, f"{name}_c2"), f"{name}_bn2"), f"{name}_relu2"
        )
        y = self.bn(self.conv(y, out, 1, 1, f"{name}_c3"), f"{name}_bn3")
        y = layers.Add(name=f"{name}_add", dtype=self.dtype)([shortcut, y])
        return self.relu(y, f"{name}_out")


def resnet_trunk(
    inputs: keras.KerasTensor,
    depth: int,
    width: float = 1.0,
    input_size: int = 32,
    sync_bn: bool = False,
    dtype: str | None = None,
    float32_stages: Sequence[str] = (),
    norm_layer: type = FusedBatchNorm,
    pad_inside_conv: bool = True,
) -> keras.KerasTensor:
    """Applies a ResNet trunk and global average pooling to ``inputs``.

    Args:
      inputs: [B, H, W, 3] float tensor (pixels in [0, 1]).
      depth: one of 10, 18, 34, 50, 101, 152.
      width: multiplier of the stage widths 64/128/256/512 (the stem keeps 64, as in the
        reference; it is scaled too when width < 1 so that tiny test models stay tiny).
      input_size: nominal image side; < 128 selects the CIFAR stem.
      sync_bn: synchronise BatchNorm statistics across replicas.
      dtype: Keras dtype policy name (e.g. "mixed_bfloat16") or None for the global policy.
      float32_stages: stages ("conv2".."conv5", named after their layers) that compute in
        float32 when ``dtype`` is a mixed policy; their layers cast their inputs up. Keeping
        "conv5" (the features' stage, about a quarter of the FLOPs) in float32 kept the mean
        pool-feature AUROCs of bfloat16 training within 0.5 points of float32 on the
        Fashion-MNIST main job (5 seeds), where an all-bfloat16 trunk lost 1.1-1.6 points on
        KDE, OC-SVM and 1-NN (results/precision_parity.md).
      norm_layer: the BatchNorm layer class (``FusedBatchNorm``; the benchmark passes Keras'
        ``BatchNormalization``, the reference's, see ``benchmarks/reference_layers.py``).
      pad_inside_conv: stride-1 convs pad inside the conv (``'same'``) instead of an explicit
        ``ZeroPadding2D`` (the reference's); same function and variables either way.

    Returns:
      [B, F] pooled features ("pools"), F = 512*width (basic) or 2048*width (bottleneck).
    """
    if depth not in BLOCKS:
        raise ValueError(f"unsupported ResNet depth {depth}; valid: {sorted(BLOCKS)}")
    kind, counts = BLOCKS[depth]
    b = _Builder(sync_bn, dtype, norm_layer, pad_inside_conv)
    stem = max(8, round(64 * min(width, 1.0)))
    if input_size < 128:
        x = b.conv(inputs, stem, 3, 1, "stem_conv")
        x = b.relu(b.bn(x, "stem_bn"), "stem_relu")
    else:
        x = b.conv(inputs, stem, 7, 2, "stem_conv")
        x = b.relu(b.bn(x, "stem_bn"), "stem_relu")
        x = layers.ZeroPadding2D(1, name="stem_pool_pad", dtype=dtype)(x)
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool", dtype=dtype)(x)
    block = b.basic if kind == "basic" else b.bottleneck
    mixed = bool(dtype) and str(dtype).startswith("mixed")
    for stage, (count, base) in enumerate(zip(counts, (64, 128, 256, 512))):
        if mixed and f"conv{stage + 2}" in float32_stages:
            b.dtype = "float32"
        else:
            b.dtype = dtype
        filters = max(4, round(base * width))
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            x = block(x, filters, stride, f"conv{stage + 2}_b{i + 1}")
    return layers.GlobalAveragePooling2D(name="pools", dtype=b.dtype)(x)
