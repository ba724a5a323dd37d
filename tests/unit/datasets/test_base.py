"""Dataset registry, category validation, the one-class protocol, caching, fake, Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from deep_representation_one_class import datasets as D
from deep_representation_one_class.datasets import DataError, fmnist

# ----------------------------------------------------------------------------- registry


def test_registry_has_every_dataset_and_reference_aliases():
    names = set(D.DATASETS.names())
    assert {"cifar10ood", "cifar20ood", "cifar100ood", "fmnistood", "dogvscatood", "celeba",
            "folder", "fake"} <= names  # fmt: skip
    assert D.DATASETS.canonical("fashion_mnistood") == "fmnistood"
    assert D.DATASETS.canonical("DVCOOD") == "dogvscatood"
    assert D.DATASETS.get("celeba").default_input_shape == (64, 64, 3)
    assert D.DATASETS.get("folder").categories is None


@pytest.mark.parametrize(
    "name, given, expected",
    [
        ("fmnistood", "0", "0"),
        ("fashion_mnistood", 3, "3"),
        ("fmnistood", "3.0", "3"),
        ("fmnistood", "T-shirt/top", "0"),
        ("fmnistood", "ankle boot", "9"),
        ("cifar10ood", "airplane", "0"),
        ("cifar10ood", " 9 ", "9"),
        ("cifar20ood", "medium-sized mammals", "12"),
        ("cifar20ood", "fruit_and_vegetables", "4"),
        ("cifar100ood", "willow_tree", "96"),
        ("dvcood", "dog", "1"),
        ("celeba", "eyeglasses", "Eyeglasses"),
        ("celeba", "5_o_clock_shadow", "5_o_Clock_Shadow"),
        ("folder", " airplane ", "airplane"),
        ("fake", "1", "1"),
    ],
)
def test_validate_category_accepts_ids_and_names(name, given, expected):
    assert D.validate_category(name, given) == expected


@pytest.mark.parametrize(
    "name, bad, listed",
    [
        ("fmnistood", "10", "9 (Ankle boot)"),
        ("fmnistood", "2.5", "0 (T-shirt/top)"),
        ("cifar10ood", "plane", "0 (airplane)"),
        ("celeba", "Glasses", "Eyeglasses"),
        ("fake", "", "0 (horizontal)"),
    ],
)
def test_validate_category_rejects_with_valid_list(name, bad, listed):
    with pytest.raises(DataError, match="unknown category") as info:
        D.validate_category(name, bad)
    assert listed in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*cifar10ood.*fmnistood"):
        D.validate_category("mnist", "0")
    with pytest.raises(DataError, match="unknown dataset"):
        D.load_one_class("mnist", root=None, category="0")


def test_folder_category_must_be_non_empty():
    with pytest.raises(DataError, match="subfolder"):
        D.validate_category("folder", "  ")


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 2), (0, 32, 3), ("a", 1, 3)])
def test_bad_input_shape(shape):
    assert D.validate_input_shape("16,8,1", (32, 32, 3)) == (16, 8, 1)
    with pytest.raises(DataError, match="input_shape"):
        D.load_one_class("fake", root=None, category="0", input_shape=shape)


# ------------------------------------------------------------------------ one-class split


def test_one_class_indices_normal_mode():
    train_y = np.array([0, 1, 2, 1, 1, 0])
    test_y = np.array([2, 1, 0, 1])
    s = D.one_class_indices(train_y, test_y, 1)
    np.testing.assert_array_equal(s.train, [1, 3, 4])
    np.testing.assert_array_equal(s.cls, [1, 3, 4])
    np.testing.assert_array_equal(s.test, [0, 1, 2, 3])
    np.testing.assert_array_equal(s.test_y, [1, 0, 1, 0])
    assert s.test_y.dtype == np.int64 and not s.test_from_train


def test_one_class_indices_cap_is_seeded_subset_in_order():
    train_y = np.zeros(50, int)
    s = D.one_class_indices(train_y, np.zeros(3, int), 0, max_cls=20, seed=3)
    assert s.cls.size == 20 and s.train.size == 50
    assert np.all(np.diff(s.cls) > 0) and set(s.cls) <= set(s.train)
    again = D.one_class_indices(train_y, np.zeros(3, int), 0, max_cls=20, seed=3)
    other = D.one_class_indices(train_y, np.zeros(3, int), 0, max_cls=20, seed=4)
    np.testing.assert_array_equal(s.cls, again.cls)
    assert not np.array_equal(s.cls, other.cls)
    assert D.one_class_indices(train_y, train_y, 0, max_cls=0).cls.size == 50


def test_validation_mode_counts_and_global_rng_untouched():
    train_y = np.repeat(np.arange(3), [100, 40, 60])
    np.random.seed(1234)  # noqa: NPY002
    state = np.random.get_state()  # noqa: NPY002
    s = D.one_class_indices(train_y, np.zeros(7, int), 0, is_validation=True, seed=5)
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    assert s.test_from_train
    assert s.train.size == 90
    assert s.test.size == 20 and s.test_y.sum() == 10
    val_in, val_out = s.test[s.test_y == 0], s.test[s.test_y == 1]
    assert np.all(train_y[val_in] == 0) and np.all(train_y[val_out] != 0)
    assert not set(val_in) & set(s.train)
    assert set(val_in) | set(s.train) == set(range(100))
    assert len(set(val_out)) == 10  # drawn without replacement
    other = D.one_class_indices(train_y, np.zeros(7, int), 0, is_validation=True, seed=6)
    assert not np.array_equal(s.train, other.train)


def test_validation_without_outlier_pool_fails():
    with pytest.raises(DataError, match="other classes"):
        D.one_class_indices(np.zeros(10, int), np.zeros(2, int), 0, is_validation=True)


def test_missing_inlier_class_fails():
    with pytest.raises(DataError, match="no training images"):
        D.one_class_indices(np.zeros(10, int), np.zeros(2, int), 1)


# ------------------------------------------------------------------------------- fake


def test_fake_one_class_counts_and_determinism():
    d = D.load_one_class("fake", root=None, category="1")
    assert isinstance(d, D.OneClassData)
    assert (d.name, d.category) == ("fake", "1")
    assert d.train_x.shape == (64, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.cls_x.shape == (64, 32, 32, 3)
    assert d.test_x.shape == (32, 32, 32, 3)
    assert d.test_y.dtype == np.int64 and d.test_class.dtype == np.int64
    assert d.test_y.sum() == 16 and np.array_equal(d.test_y, (d.test_class != 1).astype(int))
    assert d.class_names == ("horizontal", "vertical") and d.test_paths is None
    same = D.load_one_class("fake", root=None, category="1")
    np.testing.assert_array_equal(d.train_x, same.train_x)
    other = D.load_one_class("fake", root=None, category="1", seed=1)
    assert not np.array_equal(d.train_x, other.train_x)


def test_fake_structure_separates_classes_on_raw_pixels():
    d = D.load_one_class("fake", root=None, category="0", input_shape=(8, 8, 3))
    assert d.train_x.shape == (64, 8, 8, 3)
    x = d.train_x.astype(float)
    # Class 0 varies along rows only (horizontal stripes): column variance << row variance.
    assert x.std(axis=2).mean() < 0.5 * x.std(axis=1).mean()
    tr = d.train_x.reshape(64, -1).astype(float)
    te = d.test_x.reshape(32, -1).astype(float)
    nn = ((te[:, None] - tr[None]) ** 2).sum(-1).min(1)
    assert nn[d.test_y == 1].min() > nn[d.test_y == 0].max()


def test_fake_grayscale_and_non_square_shapes():
    d = D.load_one_class("fake", root=None, category="0", input_shape=(12, 16, 1))
    assert d.train_x.shape == (64, 12, 16, 1) and d.test_x.shape == (32, 12, 16, 1)


def test_fake_validation_mode_and_cap():
    np.random.seed(7)  # noqa: NPY002
    before = np.random.random()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    d = D.load_one_class("fake", root=None, category="0", is_validation=True, max_cls=20)
    # The global RNG stream was neither advanced nor reseeded.
    assert np.random.random() == before  # noqa: NPY002
    assert d.train_x.shape[0] == 57  # 9 * 64 // 10
    assert d.test_x.shape[0] == 14 and d.test_y.sum() == 7
    np.testing.assert_array_equal(d.test_class, d.test_y)
    assert d.cls_x.shape[0] == 20
    rows = {r.tobytes() for r in d.train_x}
    assert all(r.tobytes() in rows for r in d.cls_x)


# ------------------------------------------------------------------------ Fashion-MNIST


def _write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fmnist_idx(folder: Path, n_train=30, n_test=20, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(1, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": np.arange(n_test) % 10,
    }
    for key, stem in fmnist.IDX_FILES.items():
        _write_idx(folder / stem, arrays[key], compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fmnist_from_idx_files(tmp_path, compress):
    raw = make_fmnist_idx(tmp_path / "fashion_mnist", compress=compress)
    d = D.load_one_class("fashion_mnistood", root=str(tmp_path), category="Trouser")
    assert d.name == "fmnistood" and d.category == "1"
    assert d.train_x.shape == (3, 32, 32, 3)
    assert d.test_x.shape == (20, 32, 32, 3) and d.test_y.sum() == 18
    # 2-px zero border, original pixels inside, gray tiled to 3 identical channels.
    assert d.train_x[:, :2].max() == 0 and d.train_x[:, :, -2:].max() == 0
    np.testing.assert_array_equal(d.train_x[0, 2:30, 2:30, 0], raw["train_x"][1])
    np.testing.assert_array_equal(d.train_x[..., 0], d.train_x[..., 2])
    np.testing.assert_array_equal(d.test_class, raw["test_y"])
    gray = D.load_one_class("fmnistood", root=str(tmp_path), category="1", input_shape=(32, 32, 1))
    assert gray.train_x.shape == (3, 32, 32, 1)


def test_fmnist_idx_corrupt_and_missing(tmp_path):
    make_fmnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00"))
    with pytest.raises(DataError, match="t10k-labels"):
        D.load_one_class("fmnistood", root=str(tmp_path), category="0")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*apt-get install"):
        D.load_one_class("fmnistood", root=str(empty), category="0")
    with pytest.raises(DataError, match="not a directory"):
        D.load_one_class("fmnistood", root=str(tmp_path / "nope"), category="0")


def test_fmnist_default_locations(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(fmnist, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DataError, match=r"in .*shipped or .*system .*dataset-fashion-mnist"):
        D.load_one_class("fmnistood", root=None, category="0")
    make_fmnist_idx(tmp_path / "system", n_train=10, n_test=10)
    d = D.load_one_class("fmnistood", root=None, category="0")
    assert d.train_x.shape == (1, 32, 32, 3) and d.test_x.shape == (10, 32, 32, 3)


def test_fmnist_tfds_data_dir_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "fashion_mnist").mkdir()
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        src = D.DATASETS.get("fmnistood").loader(
            str(tmp_path), category="0", input_shape=(32, 32, 3), need_outliers=False
        )
    assert src.train_x.shape == (40, 32, 32, 3) and src.test_x.shape == (40, 32, 32, 3)
    assert src.train_x[:, :2].max() == 0
    assert set(np.unique(src.train_y)) <= set(range(10))


REPO_FMNIST = fmnist.SHIPPED_DIR  # package data: installed with the package


@pytest.mark.skipif(
    not (REPO_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST files absent from {REPO_FMNIST}",
)
def test_real_fashion_mnist_class0():
    d = D.load_one_class("fmnistood", root=None, category="0")
    assert d.train_x.shape == (6000, 32, 32, 3) and d.cls_x.shape == (6000, 32, 32, 3)
    assert d.test_x.shape == (10000, 32, 32, 3)
    assert int((d.test_y == 0).sum()) == 1000
    assert np.bincount(d.test_class).tolist() == [1000] * 10
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert d.train_x[:, border].max() == 0 and d.test_x[:, border].max() == 0
    assert d.train_x[:, 2:30, 2:30].max() == 255
    raw = fmnist.read_idx(REPO_FMNIST / "train-images-idx3-ubyte.gz")
    labels = fmnist.read_idx(REPO_FMNIST / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(d.train_x[:, 2:30, 2:30, 1], raw[labels == 0])


# ---------------------------------------------------------------------------- caching


def test_cached_arrays_builds_once_and_writes_atomically(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "p": np.array(["a", "bb"])}

    first = D.cached_arrays(tmp_path, "demo-32x32", "k" * 30, build)
    second = D.cached_arrays(tmp_path, "demo-32x32", "k" * 30, build)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    assert second["p"].tolist() == ["a", "bb"]
    assert [p.name for p in tmp_path.iterdir()] == [f"demo-32x32-{'k' * 24}.npz"]
    # A truncated cache file is rebuilt rather than trusted.
    (tmp_path / f"demo-32x32-{'k' * 24}.npz").write_bytes(b"PK\x03\x04garbage")
    D.cached_arrays(tmp_path, "demo-32x32", "k" * 30, build)
    assert len(calls) == 2
    # '' disables the cache.
    D.cached_arrays("", "demo", "z" * 30, build)
    assert len(calls) == 3 and not list(tmp_path.glob("demo-z*"))


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "c"))
    assert D.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DROC_CACHE_DIR")
    assert D.default_cache_dir() == Path.home() / ".cache" / "deep_representation_one_class"


def test_fingerprint_changes_with_source(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"123")
    key = D.fingerprint([f], (32, 32, 3))
    assert key == D.fingerprint([f], (32, 32, 3))
    assert key != D.fingerprint([f], (64, 64, 3))
    f.write_bytes(b"1234")
    assert key != D.fingerprint([f], (32, 32, 3))
    os.utime(f, ns=(1, 1))
    key2 = D.fingerprint([f], (32, 32, 3))
    os.utime(f, ns=(2, 2))
    assert key2 == D.fingerprint([f], (32, 32, 3))  # the content is the key, not the mtime
    f.write_bytes(b"4321")  # same size ...
    os.utime(f, ns=(2, 2))  # ... and mtime: still noticed
    assert key2 != D.fingerprint([f], (32, 32, 3))
