"""Real-data checks on the shared CIFAR-10 JPEG copy (skipped when ../shared/data is absent).

The same images go through the two routes users have: an image folder (``--dataset=folder``)
and the CIFAR python pickles (``--dataset=cifar10ood --root=...``, here written from the JPEG
copy in the genuine pickle format). Both must give the same one-class arrays, and a short
training run must work end to end on each.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from deep_representation_one_class import datasets, resolve
from deep_representation_one_class.datasets import cifar
from deep_representation_one_class.training import runner

pytestmark = pytest.mark.slow

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def cifar_routes(tmp_path_factory):
    from conftest import SHARED_DATA

    root = SHARED_DATA / "cifar10-jpeg"
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent")
    cache = str(tmp_path_factory.mktemp("cache"))
    folder = datasets.load_one_class(
        "folder", root=str(root), category="airplane", input_shape=(32, 32, 3), cache_dir=cache
    )
    # Rebuild the full labelled arrays from the folder route (class-major order).
    train = [
        datasets.load_one_class(
            "folder", root=str(root), category=c, input_shape=(32, 32, 3), cache_dir=cache
        ).train_x
        for c in CLASSES
    ]
    train_x = np.concatenate(train)
    train_y = np.concatenate([np.full(len(t), i) for i, t in enumerate(train)])
    pickles = str(tmp_path_factory.mktemp("pickles") / "cifar-10-batches-py")
    cifar.write_pickles(pickles, (train_x, train_y), (folder.test_x, folder.test_class))
    return root, pickles, folder, cache


def test_folder_and_pickle_routes_agree(cifar_routes):
    _, pickles, folder, _ = cifar_routes
    assert folder.train_x.shape == (5000, 32, 32, 3)
    assert folder.test_x.shape == (10000, 32, 32, 3) and int((folder.test_y == 0).sum()) == 1000
    via_pickle = datasets.load_one_class(
        "cifar10ood", root=os.path.dirname(pickles), category="0", input_shape=(32, 32, 3)
    )
    np.testing.assert_array_equal(via_pickle.train_x, folder.train_x)
    np.testing.assert_array_equal(via_pickle.test_x, folder.test_x)
    np.testing.assert_array_equal(via_pickle.test_y, folder.test_y)


@pytest.mark.parametrize("route", ["folder", "pickle"])
def test_short_training_run_on_real_cifar(cifar_routes, tmp_path, route):
    root, pickles, _, cache = cifar_routes
    if route == "folder":
        kw = dict(dataset="folder", root=str(root), category="airplane", cache_dir=cache)
    else:
        kw = dict(dataset="cifar10ood", root=os.path.dirname(pickles), category="0")
    cfg = resolve.build(
        **kw,
        method="contrastive",  # folder's default is the frozen pretrained path; train here
        net_type="resnet10",
        net_width=0.125,
        head_dims=(64, 32),
        batch_size=32,
        num_epoch=1,
        num_batch=10,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("kde", "gde"),
    )
    result = runner.run(cfg)
    assert result.status == "complete" and result.global_step == 10
    for key, value in result.metrics.items():
        assert 40.0 <= value <= 100.0, key  # a barely trained net is far from chance on CIFAR
