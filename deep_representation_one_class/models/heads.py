"""MLP projection head and the optional linear classifier on top of it (spec §4.2).

For ``head_dims = (d_1, ..., d_L)``: (Dense(d_i, no bias) -> BN -> ReLU) for i < L, then a linear
``embeds`` layer of size d_L (with a bias only when a ``logits`` layer follows, as in the
reference), then ``logits`` = Dense(latent_dim) on ``embeds`` when latent_dim > 0, else
``logits = embeds``. Without a head, ``embeds = pools``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def mlp_head(
    pools: keras.KerasTensor,
    head_dims: Sequence[int],
    latent_dim: int,
    sync_bn: bool = False,
    dtype: str | None = None,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Builds the head on [B, F] pooled features; returns (embeds [B, d_L], logits [B, K])."""
    x = pools
    dims = list(head_dims)
    if dims:
        for i, d in enumerate(dims[:-1]):
            x = layers.Dense(d, use_bias=False, name=f"proj_{i}", dtype=dtype)(x)
            x = layers.BatchNormalization(
                momentum=0.9,
                epsilon=1e-5,
                synchronized=sync_bn,
                name=f"proj_{i}_bn",
                dtype=dtype,
            )(x)
            x = layers.ReLU(name=f"proj_{i}_relu", dtype=dtype)(x)
        x = layers.Dense(dims[-1], use_bias=latent_dim > 0, name="embeds_dense", dtype=dtype)(x)
    embeds = x
    if latent_dim > 0:
        logits = layers.Dense(latent_dim, name="logits_dense", dtype=dtype)(embeds)
    else:
        logits = embeds
    return embeds, logits
