"""Network registry and the model builder used by every method.

``build_model`` returns a Keras functional model mapping [B, H, W, 3] float32 images in [0, 1]
to a dict ``{"pools": [B, F], "embeds": [B, E], "logits": [B, K]}``, all float32 (mixed
precision computes the ResNet trunk in bfloat16/float16; the head runs in float32 and every
output is float32, so that losses and similarities stay in float32).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
from keras import layers

from deep_representation_one_class.models.backbones import lite0_trunk
from deep_representation_one_class.models.heads import mlp_head
from deep_representation_one_class.models.resnet import BLOCKS, resnet_trunk
from deep_representation_one_class.registry import Registry

NETWORKS: Registry = Registry("network")
for _depth in BLOCKS:
    NETWORKS.add(f"resnet{_depth}", functools.partial(resnet_trunk, depth=_depth))


def _lite0(inputs, input_size, **options):
    del options  # width, stages, BatchNorm sync and precision are the ResNet's
    return lite0_trunk(inputs, side=input_size)


NETWORKS.add("efficientnet_lite0", _lite0)


def build_model(
    net_type: str = "resnet18",
    net_width: float = 1.0,
    input_shape: Sequence[int] = (32, 32, 3),
    head_dims: Sequence[int] = (),
    latent_dim: int = 0,
    sync_bn: bool = False,
    dtype: str | None = None,
    float32_stages: Sequence[str] = (),
    **trunk_options,
) -> keras.Model:
    """Builds backbone + head. The input is (None, None, C): any spatial size is accepted.

    ``float32_stages`` (e.g. ``("conv5",)``) compute in float32 under a mixed ``dtype``;
    ``trunk_options`` go to the trunk (``norm_layer``, ``pad_inside_conv``).
    """
    trunk = NETWORKS.get(net_type)
    inputs = keras.Input(shape=(None, None, int(input_shape[2])), name="images")
    pools = trunk(
        inputs,
        width=net_width,
        input_size=int(input_shape[0]),
        sync_bn=sync_bn,
        dtype=dtype,
        float32_stages=float32_stages,
        **trunk_options,
    )
    # Mixed precision covers the convolutional trunk only (over 99% of the FLOPs). The MLP head,
    # whose output is the contrastive embedding, stays in float32.
    head_dtype = "float32" if dtype and dtype.startswith("mixed") else dtype
    embeds, logits = mlp_head(pools, head_dims, latent_dim, sync_bn=sync_bn, dtype=head_dtype)
    cast = functools.partial(layers.Activation, "linear", dtype="float32")
    outputs = {
        "pools": cast(name="pools_out")(pools),
        "embeds": cast(name="embeds_out")(embeds),
        "logits": cast(name="logits_out")(logits),
    }
    name = f"{NETWORKS.canonical(net_type)}_width{net_width:g}"
    if head_dims:
        name += "_mlp" + "_".join(str(d) for d in head_dims)
    if latent_dim:
        name += f"_cls{latent_dim}"
    return keras.Model(inputs, outputs, name=name)
