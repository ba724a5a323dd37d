"""Feature extraction from a trained model, in sample order, for every test-time view.

The model is called outside ``strategy.run`` (one device, ordered batches), which sidesteps the
reference's multi-replica ordering bug (spec §11 item 4: unwrapping per-replica outputs and
then splitting by view mixed replicas and views).

The forward function is traced once per model (and feature set) with an unknown batch size and
reused by later calls: an evaluation extracts two sets (classifier-train and test), each ending
in a partial batch, which otherwise cost up to four traces of the whole network per evaluation.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from deep_representation_one_class.datasets import pipeline

# model -> {(with_logits, view specs): tf.function}. Weak keys, and the functions reach the model
# only through a weak reference, so a cached function never keeps a dropped model alive.
_FORWARD_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_fn(model: keras.Model, with_logits: bool, element_spec):
    """The cached tf.function mapping a tuple of view batches to (pools, embeds, logits)."""
    specs = tuple(
        tf.TensorSpec([None, *s.shape[1:]], s.dtype) for s in tf.nest.flatten(element_spec)
    )
    per_model = _FORWARD_CACHE.setdefault(model, {})
    key = (with_logits, specs)
    if key not in per_model:
        model_ref = weakref.ref(model)

        @tf.function(input_signature=[specs])
        def forward(views):
            net = model_ref()
            outs = [net(v, training=False) for v in views]
            first = outs[0]
            logits = tf.stack([o["logits"] for o in outs]) if with_logits else tf.zeros([0])
            return first["pools"], first["embeds"], logits

        per_model[key] = forward
    return per_model[key]


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
    dataset = pipeline.make_eval_dataset(images, view_fn, batch_size)
    forward = _forward_fn(model, with_logits, dataset.element_spec)
    pools, embeds, logits = [], [], []
    for views in dataset:
        p, e, lg = forward(tuple(views))
        pools.append(p.numpy())
        embeds.append(e.numpy())
        if with_logits:
            logits.append(lg.numpy())
    out = {"pool": np.concatenate(pools), "embed": np.concatenate(embeds)}
    if with_logits:
        out["view_logits"] = np.concatenate(logits, axis=1)
    return out
