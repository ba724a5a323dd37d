"""Test set-up: two logical CPU devices (for 1- vs 2-replica tests) before TensorFlow starts,
automatic cpu/gpu markers, and the path to the optional shared real data."""

from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
# RuntimeError: TF was already initialised by an earlier import; replica tests then skip.
with contextlib.suppress(RuntimeError):
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
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


def tiny_config(method: str = "contrastive", validate: bool = True, **overrides):
    """A seconds-long run config: the fake dataset, ResNet-10 at width 1/16, head 16-8, batch 8,
    the method's default views and logits; ``overrides`` replace any field."""
    from deep_representation_one_class import config as config_lib

    d = config_lib.METHOD_DEFAULTS[method]
    fields = dict(
        method=method,
        dataset="fake",
        category="0",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        aug_list=d["aug_list"],
        aug_list_for_test=d["aug_list_for_test"],
        latent_dim=d["latent_dim"],
    )
    fields.update(overrides)
    cfg = config_lib.Config(**fields)
    return config_lib.validate(cfg) if validate else cfg


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory) -> str:
    """One tiny finished run on the fake dataset, shared by the detector/export/score tests."""
    from deep_representation_one_class import train_lib

    path = tmp_path_factory.mktemp("fake_run")
    cfg = tiny_config(
        num_epoch=1, strategy="default", model_dir=str(path), classifiers=FAKE_RUN_CLASSIFIERS
    )
    train_lib.run(cfg)
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
