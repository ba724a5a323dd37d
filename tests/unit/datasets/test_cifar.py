"""CIFAR loaders: pickle folders and archives, CIFAR-100 label keys, the restricted unpickler,
the offline fallback and the TFDS route, on tiny generated fixtures."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from deep_representation_one_class import datasets as D
from deep_representation_one_class.datasets import DataError, cifar


def _batch(images: np.ndarray, labels: dict[str, list[int]], py2_keys: bool) -> dict:
    # Rows are the R plane, then G, then B, as in the original files.
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    out = {"data": data, "batch_label": "fixture", **labels}
    return {k.encode() if py2_keys else k: v for k, v in out.items()}


def make_cifar10(folder: Path, n_batch=4, n_test=10, seed=0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py with 5 train batches of ``n_batch`` images and a test batch."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (n_batch, 32, 32, 3), dtype=np.uint8)
        y = [(n_batch * (i - 1) + j) % 10 for j in range(n_batch)]
        xs.append(x)
        ys += y
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(_batch(x, {"labels": y}, py2_keys=True), f, protocol=2)
    tx = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    ty = [j % 10 for j in range(n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_batch(tx, {"labels": ty}, py2_keys=True), f, protocol=2)
    return {"train_x": np.concatenate(xs), "train_y": np.array(ys), "test_x": tx,
            "test_y": np.array(ty)}  # fmt: skip


def make_cifar100(folder: Path, n_train=40, n_test=20, seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [(7 * j) % 100 for j in range(n)]
        coarse = [j % 20 for j in range(n)]
        labels = {"fine_labels": fine, "coarse_labels": coarse}
        with open(folder / split, "wb") as f:
            pickle.dump(_batch(x, labels, py2_keys=False), f, protocol=4)
        out.update({f"{split}_x": x, f"{split}_fine": np.array(fine),
                    f"{split}_coarse": np.array(coarse)})  # fmt: skip
    return out


def _tar(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10")
    raw = make_cifar10(root / "cifar-10-batches-py")
    return root, raw


def _check_cifar10(d: D.OneClassData, raw: dict, category: int) -> None:
    assert d.name == "cifar10ood" and d.category == str(category)
    inl = raw["train_y"] == category
    np.testing.assert_array_equal(d.train_x, raw["train_x"][inl])
    np.testing.assert_array_equal(d.test_x, raw["test_x"])
    np.testing.assert_array_equal(d.test_y, (raw["test_y"] != category).astype(int))
    np.testing.assert_array_equal(d.test_class, raw["test_y"])


def test_cifar10_from_parent_folder_and_batch_folder(cifar10_root):
    root, raw = cifar10_root
    d = D.load_one_class("cifar10ood", root=str(root), category="airplane")
    assert d.train_x.shape == (2, 32, 32, 3) and d.test_x.shape == (10, 32, 32, 3)
    _check_cifar10(d, raw, 0)
    d = D.load_one_class("cifar10ood", root=str(root / "cifar-10-batches-py"), category="3")
    _check_cifar10(d, raw, 3)
    assert d.class_names[3] == "cat"


def test_cifar10_pixel_layout(tmp_path):
    # One red-only image: the first 1024 bytes of the row are the R plane.
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 0, 1, 0] = 200
    x[0, 5, 0, 2] = 50
    batch = {b"data": x.transpose(0, 3, 1, 2).reshape(1, -1), b"labels": [0]}
    got = cifar._images_from_batch({k.decode(): v for k, v in batch.items()}, "t")
    assert got[0, 0, 1, 0] == 200 and got[0, 5, 0, 2] == 50 and got.sum() == 250


def test_cifar10_from_tar_gz_and_keras_layout(cifar10_root, tmp_path):
    root, raw = cifar10_root
    _tar(root / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    d = D.load_one_class("cifar10ood", root=str(tmp_path), category="5")
    _check_cifar10(d, raw, 5)
    d = D.load_one_class("cifar10ood", root=str(tmp_path / "cifar-10-python.tar.gz"), category="5")
    _check_cifar10(d, raw, 5)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # read in place, never extracted


def test_cifar10_root_none_uses_keras_cache_without_network(cifar10_root, tmp_path, monkeypatch):
    root, raw = cifar10_root
    target = tmp_path / "datasets" / "cifar-10-batches-py-target"
    target.mkdir(parents=True)
    os.symlink(root / "cifar-10-batches-py", target / "cifar-10-batches-py")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def no_network(*a, **k):
        raise AssertionError("the network must not be probed when the cache has the data")

    monkeypatch.setattr(cifar, "is_online", no_network)
    d = D.load_one_class("cifar10ood", root=None, category="1")
    _check_cifar10(d, raw, 1)


def test_cifar_root_none_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(cifar, "is_online", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"offline.*cifar-10-python\.tar\.gz.*root="):
        D.load_one_class("cifar10ood", root=None, category="0")
    with pytest.raises(DataError, match=r"offline.*cifar-100-python\.tar\.gz"):
        D.load_one_class("cifar20ood", root=None, category="0")
    assert time.monotonic() - start < 5


def test_is_online_probe_uses_socket_and_times_out(monkeypatch):
    def refuse(*a, **k):
        raise OSError("unreachable")

    monkeypatch.setattr(cifar.socket, "create_connection", refuse)
    assert cifar.is_online() is False

    class _Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cifar.socket, "create_connection", lambda *a, **k: _Conn())
    assert cifar.is_online() is True

    def hang(*a, **k):
        time.sleep(1.5)
        raise OSError("timed out")

    monkeypatch.setattr(cifar.socket, "create_connection", hang)
    start = time.monotonic()
    assert cifar.is_online(timeout=0.2) is False
    assert time.monotonic() - start < 2


def test_cifar_wrong_root_messages(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        D.load_one_class("cifar10ood", root=str(tmp_path / "missing"), category="0")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DataError, match=r"no cifar10 pickles.*cifar-10-batches-py/"):
        D.load_one_class("cifar10ood", root=str(tmp_path), category="0")


def test_cifar100_fine_and_coarse_keys(tmp_path):
    raw = make_cifar100(tmp_path / "cifar-100-python")
    d = D.load_one_class("cifar20ood", root=str(tmp_path), category="people")
    assert d.category == "14" and len(d.class_names) == 20
    np.testing.assert_array_equal(d.train_x, raw["train_x"][raw["train_coarse"] == 14])
    np.testing.assert_array_equal(d.test_class, raw["test_coarse"])
    assert d.test_y.sum() == 20 - int((raw["test_coarse"] == 14).sum())
    d = D.load_one_class("cifar100ood", root=str(tmp_path), category="7")
    assert d.class_names[7] == "beetle"
    np.testing.assert_array_equal(d.train_x, raw["train_x"][raw["train_fine"] == 7])
    np.testing.assert_array_equal(d.test_class, raw["test_fine"])
    _tar(tmp_path / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    small = D.load_one_class(
        "cifar100ood", root=str(tmp_path / "cifar-100-python.tar.gz"), category="7",
        input_shape=(16, 16, 3),
    )  # fmt: skip
    assert small.train_x.shape == (d.train_x.shape[0], 16, 16, 3)


def test_cifar_missing_label_key(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match="no 'coarse_labels' entry"):
        D.load_one_class("cifar20ood", root=str(tmp_path), category="0")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    assert b"system" in payload
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        D.load_one_class("cifar10ood", root=str(tmp_path), category="0")
    assert not marker.exists()
    # The same through an archive, and with builtins.eval.
    evil_eval = pickle.dumps({"data": _EvalPayload()}, protocol=4)
    with pytest.raises(DataError, match=r"refusing to unpickle builtins\.eval"):
        cifar.load_pickle(io.BytesIO(evil_eval), "stream")
    _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="refusing to unpickle"):
        D.load_one_class("cifar10ood", root=str(tmp_path / "cifar-10-python.tar.gz"), category="0")
    assert not marker.exists()


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_corrupt_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(DataError, match=r"cannot read CIFAR pickle .*test_batch"):
        D.load_one_class("cifar10ood", root=str(tmp_path), category="0")


def test_restricted_unpickler_accepts_numpy_arrays_all_protocols():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 3, 4, 5):
        obj = cifar.load_pickle(io.BytesIO(pickle.dumps({"data": arr}, protocol=protocol)), "t")
        np.testing.assert_array_equal(obj["data"], arr)


def test_cifar20_tfds_route_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "cifar100").mkdir()
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        x_tr, y_tr, x_te, _ = cifar.load_arrays(str(tmp_path), "cifar100", "coarse")
    assert x_tr.shape == (30, 32, 32, 3) and x_te.shape == (30, 32, 32, 3)
    assert y_tr.max() < 20 and y_tr.dtype == np.int64


def test_write_pickles_round_trips_through_the_loader(tmp_path):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8)
    train_y = rng.integers(0, 10, 23)
    test_x = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 7)
    cifar.write_pickles(tmp_path / "cifar-10-batches-py", (train_x, train_y), (test_x, test_y))
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-py")) == [
        *(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
    ]
    got = cifar.load_arrays(tmp_path, "cifar10")
    for want, have in zip((train_x, train_y, test_x, test_y), got, strict=True):
        np.testing.assert_array_equal(have, want)
    with pytest.raises(DataError, match=r"\[N,32,32,3\]"):
        cifar.write_pickles(tmp_path / "bad", (train_x[:, :16], train_y), (test_x, test_y))


def test_folder_copy_to_pickles_script(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(2)
    root = tmp_path / "copy"
    want = {}
    for split, n in (("train", 2), ("test", 1)):
        for name in cifar.CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(x).save(root / split / name / f"{i:04d}.png")
                want.setdefault(split, []).append(x)
    script = Path(__file__).resolve().parents[3] / "scripts" / "cifar_folder_to_pickles.py"
    out = tmp_path / "pickles"
    args = [sys.executable, str(script), "--root", str(root), "--out", str(out)]
    proc = subprocess.run(
        [*args, "--cache", str(tmp_path / "cache")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    train_x, train_y, test_x, test_y = cifar.load_arrays(out, "cifar10")
    np.testing.assert_array_equal(train_x, np.stack(want["train"]))
    np.testing.assert_array_equal(train_y, np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(test_x, np.stack(want["test"]))
    np.testing.assert_array_equal(test_y, np.arange(10))
    # A folder with other classes is refused in one line.
    (root / "test" / "zebra").mkdir()
    Image.fromarray(want["test"][0]).save(root / "test" / "zebra" / "0000.png")
    proc = subprocess.run(
        [*args[:-2], "--out", str(tmp_path / "o2")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "expected the ten CIFAR-10 class folders" in proc.stderr
