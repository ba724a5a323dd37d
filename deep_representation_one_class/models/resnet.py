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

import keras
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


def _init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="truncated_normal"
    )


class _Builder:
    """Holds the shared layer options (sync BN, dtype policy) while the graph is built."""

    def __init__(self, sync_bn: bool, dtype: str | None):
        self.sync_bn = sync_bn
        self.dtype = dtype

    def conv(self, x, filters: int, kernel: int, stride: int, name: str):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad", dtype=self.dtype)(x)
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid",
            use_bias=False,
            kernel_initializer=_init(),
            name=name,
            dtype=self.dtype,
        )(x)

    def bn(self, x, name: str):
        return layers.BatchNormalization(
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

    Returns:
      [B, F] pooled features ("pools"), F = 512*width (basic) or 2048*width (bottleneck).
    """
    if depth not in BLOCKS:
        raise ValueError(f"unsupported ResNet depth {depth}; valid: {sorted(BLOCKS)}")
    kind, counts = BLOCKS[depth]
    b = _Builder(sync_bn, dtype)
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
    for stage, (count, base) in enumerate(zip(counts, (64, 128, 256, 512))):
        filters = max(4, round(base * width))
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            x = block(x, filters, stride, f"conv{stage + 2}_b{i + 1}")
    return layers.GlobalAveragePooling2D(name="pools", dtype=dtype)(x)
