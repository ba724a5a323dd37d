"""Losses against naive numpy references."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deep_representation_one_class.methods import losses


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_logsoftmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    z1, z2 = _unit(rng.normal(size=(6, 5))), _unit(rng.normal(size=(6, 5)))
    tau = 0.2
    loss, acc = losses.info_nce(
        tf.constant(z1, tf.float32),
        tf.constant(z2, tf.float32),
        tf.constant(z2, tf.float32),
        tf.constant(0),
        tau,
    )
    logits = z1 @ z2.T / tau
    expected = -np.diag(_np_logsoftmax(logits))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(acc.numpy(), (logits.argmax(1) == np.arange(6)).astype(float))


def test_info_nce_offset_selects_the_right_positive():
    rng = np.random.default_rng(1)
    z_all = _unit(rng.normal(size=(8, 4)))
    z1 = z_all[4:] + 0.0  # anchors identical to their positives -> high accuracy
    loss, acc = losses.info_nce(
        tf.constant(z1, tf.float32), None, tf.constant(z_all, tf.float32), tf.constant(4), 0.2
    )
    logits = z1 @ z_all.T / 0.2
    expected = -_np_logsoftmax(logits)[np.arange(4), 4 + np.arange(4)]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert acc.numpy().mean() == 1.0


def test_nt_xent_matches_naive_simclr():
    rng = np.random.default_rng(2)
    b, tau = 5, 0.5
    z1, z2 = _unit(rng.normal(size=(b, 3))), _unit(rng.normal(size=(b, 3)))
    loss, _ = losses.nt_xent(
        *(tf.constant(a, tf.float32) for a in (z1, z2, z1, z2)), tf.constant(0), tau
    )
    z = np.concatenate([z1, z2])
    sim = z @ z.T / tau
    expected = []
    for i in range(2 * b):
        pos = (i + b) % (2 * b)
        others = [j for j in range(2 * b) if j != i]
        expected.append(-(sim[i, pos] - np.log(np.exp(sim[i, others]).sum())))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_transformation_xent():
    logits = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], np.float32)
    labels = np.array([0, 1], np.int32)
    loss, acc = losses.transformation_xent(tf.constant(logits), tf.constant(labels))
    expected = -_np_logsoftmax(logits)[[0, 1], labels]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(acc.numpy(), [1.0, 0.0])
