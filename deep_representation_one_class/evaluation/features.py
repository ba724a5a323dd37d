"""Feature extraction from a trained model, in sample order, for every test-time view.

The model is called outside ``strategy.run`` (one device, ordered batches), which sidesteps the
reference's multi-replica ordering bug (spec §11 item 4: unwrapping per-replica outputs and
then splitting by view mixed replicas and views).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class import pipeline


def extract(
    model: keras.Model,
    images: np.ndarray,
    view_fn: pipeline.ViewFn,
    batch_size: int = 256,
    with_logits: bool = False,
) -> dict[str, np.ndarray]:
    """Runs ``model`` over ``images`` and collects the outputs.

    Args:
      model: maps [B, H, W, C] float32 to {"pools", "embeds", "logits"}.
      images: [N, H, W, C] uint8.
      view_fn: test-time views (V >= 1); pools/embeds come from view 0, the un-transformed one.
      batch_size: images per forward pass (per view).
      with_logits: also return ``view_logits`` [V, N, K] (rotation classifier scores).

    Returns:
      {"pool": [N, F], "embed": [N, E]} float32, plus "view_logits" when requested.
    """

    @tf.function
    def forward(views):
        outs = [model(v, training=False) for v in views]
        first = outs[0]
        logits = tf.stack([o["logits"] for o in outs]) if with_logits else tf.zeros([0])
        return first["pools"], first["embeds"], logits

    pools, embeds, logits = [], [], []
    for views in pipeline.make_eval_dataset(images, view_fn, batch_size):
        p, e, lg = forward(tuple(views))
        pools.append(p.numpy())
        embeds.append(e.numpy())
        if with_logits:
            logits.append(lg.numpy())
    out = {"pool": np.concatenate(pools), "embed": np.concatenate(embeds)}
    if with_logits:
        out["view_logits"] = np.concatenate(logits, axis=1)
    return out
