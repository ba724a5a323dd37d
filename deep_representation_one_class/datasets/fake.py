"""A tiny synthetic two-class dataset (``fake``) for tests and smoke runs; no files needed.

Class 0 images are smooth horizontal stripes, class 1 images vertical stripes, each with a
random frequency, phase, colour tint and pixel noise drawn from a generator derived from the
seed. The classes are separable on raw pixels, so a working pipeline reaches a high AUROC.
Sizes: 64 training and 16 test images per class, at any input shape (default 32x32x3).
"""

from __future__ import annotations

import numpy as np

from deep_representation_one_class.datasets.base import SourceArrays

CLASS_NAMES = ("horizontal", "vertical")
TRAIN_PER_CLASS = 64
TEST_PER_CLASS = 16
_STREAM = 0xFA4E

PLUGIN = dict(
    kind="dataset",
    name="fake",
    description="synthetic stripes, 2 classes (0=horizontal, 1=vertical), 64+16 per class",
    class_names=CLASS_NAMES,
    impl="_load",
)


def make_images(n: int, label: int, input_shape, rng: np.random.Generator) -> np.ndarray:
    """[n, H, W, C] uint8 stripe images of class ``label`` (0 horizontal, 1 vertical)."""
    h, w, c = (int(v) for v in input_shape)
    length = h if label == 0 else w
    coord = np.arange(length) / length
    freq = rng.uniform(1.0, 2.0, size=(n, 1))
    phase = rng.uniform(0.0, 0.25, size=(n, 1))
    wave = 0.5 + 0.35 * np.sin(2 * np.pi * (freq * coord[None] + phase))  # [n, length]
    # Broadcast the 1-D profile along the other axis: rows for class 0, columns for class 1.
    plane = (
        wave[:, :, None] * np.ones((1, 1, w))
        if label == 0
        else (wave[:, None, :] * np.ones((1, h, 1)))
    )
    tint = rng.uniform(0.8, 1.0, size=(n, 1, 1, c))
    img = plane[..., None] * tint + rng.normal(0.0, 0.04, size=(n, h, w, c))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _load(root, *, category, input_shape, seed=0, **_unused) -> SourceArrays:
    del root  # synthetic: nothing to read
    rng = np.random.default_rng([int(seed) % (2**63), _STREAM])
    train = [make_images(TRAIN_PER_CLASS, k, input_shape, rng) for k in (0, 1)]
    test = [make_images(TEST_PER_CLASS, k, input_shape, rng) for k in (0, 1)]
    return SourceArrays(
        train_x=np.concatenate(train),
        train_y=np.repeat(np.arange(2, dtype=np.int64), TRAIN_PER_CLASS),
        test_x=np.concatenate(test),
        test_y=np.repeat(np.arange(2, dtype=np.int64), TEST_PER_CLASS),
        class_names=CLASS_NAMES,
        inlier=int(category),
        category=category,
    )
