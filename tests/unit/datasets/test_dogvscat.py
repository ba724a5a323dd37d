"""Dogs vs. Cats: zip, folder and prepared-npz sources, the resize-and-crop, the fixed seed-0
split, the cache and the preparation script, on a tiny generated train.zip."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class import datasets as D
from deep_representation_one_class.datasets import DataError, dogvscat, images

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "prepare_dogvscat.py"
N_PER_CLASS = 5


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Loads without an explicit cache_dir must not write into the user's ~/.cache.
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "default_cache"))


def _jpeg(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def kaggle_zip(tmp_path_factory) -> Path:
    """train.zip with cat.0-4.jpg and dog.0-4.jpg of assorted sizes (and a stray file)."""
    root = tmp_path_factory.mktemp("dvc")
    sizes = [(100, 80), (70, 120), (64, 64), (150, 90), (90, 66)]
    with zipfile.ZipFile(root / "train.zip", "w") as zf:
        zf.writestr("train/", b"")
        for k, kind in enumerate(("dog", "cat")):
            for i in range(N_PER_CLASS - 1, -1, -1):  # stored out of order on purpose
                zf.writestr(f"train/{kind}.{i}.jpg", _jpeg(*sizes[i], seed=10 * k + i))
        zf.writestr("train/readme.txt", b"not an image")
    return root


def test_cover_and_crop_geometry():
    # 200x100 (w x h): the shorter side 100 -> 64, width 128; the centre 64 columns remain.
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, 50:150] = 255  # the middle half is white
    out = np.asarray(dogvscat.cover_and_crop(Image.fromarray(arr), (64, 64)))
    assert out.shape == (64, 64, 3)
    assert out.min() == 255  # the crop lies inside the white band (columns 32..96 of 128)
    tall = dogvscat.cover_and_crop(Image.new("RGB", (70, 120)), (64, 64))
    assert tall.size == (64, 64)


def test_split_is_fixed_seed0_per_class():
    labels = np.repeat([0, 1], [12500, 12500])
    train, test = dogvscat.split_per_class(labels)
    assert train.size == 20000 and test.size == 5000
    assert np.bincount(labels[train]).tolist() == [10000, 10000]
    rs = np.random.RandomState(0)
    cats = rs.permutation(12500)
    np.testing.assert_array_equal(train[:10000], cats[:10000])
    np.testing.assert_array_equal(test[:2500], cats[10000:])
    np.random.seed(99)  # noqa: NPY002
    a = np.random.random()  # noqa: NPY002
    np.random.seed(99)  # noqa: NPY002
    dogvscat.split_per_class(labels)
    assert np.random.random() == a  # noqa: NPY002 (the global RNG is not touched)


def test_load_from_zip_counts_and_labels(kaggle_zip, tmp_path):
    d = D.load_one_class("dvcood", root=str(kaggle_zip), category="cat", cache_dir=str(tmp_path))
    assert (d.name, d.category, d.class_names) == ("dogvscatood", "0", ("cat", "dog"))
    assert d.train_x.shape == (4, 64, 64, 3) and d.train_x.dtype == np.uint8
    assert d.test_x.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(d.test_y, [0, 1])
    np.testing.assert_array_equal(d.test_class, [0, 1])
    # The first test cat is the image left over by the seed-0 permutation of the 5 cats.
    left = np.random.RandomState(0).permutation(N_PER_CLASS)[4]
    with zipfile.ZipFile(kaggle_zip / "train.zip") as zf:
        raw = zf.read(f"train/cat.{left}.jpg")
    expected = images.decode_image(
        raw, (64, 64, 3), transform=lambda im: dogvscat.cover_and_crop(im, (64, 64))
    )
    np.testing.assert_array_equal(d.test_x[0], expected)
    dogs = D.load_one_class("dogvscatood", root=str(kaggle_zip), category="1",
                            cache_dir=str(tmp_path))  # fmt: skip
    np.testing.assert_array_equal(dogs.test_y, [1, 0])


def test_zip_is_cached_and_other_sources_agree(kaggle_zip, tmp_path, monkeypatch):
    calls = []
    real_open = Image.open
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: calls.append(1) or real_open(*a, **k))
    cache = str(tmp_path / "cache")
    first = D.load_one_class("dvcood", root=str(kaggle_zip), category="0", cache_dir=cache)
    assert len(calls) == 2 * N_PER_CLASS
    again = D.load_one_class("dvcood", root=str(kaggle_zip), category="0", cache_dir=cache)
    assert len(calls) == 2 * N_PER_CLASS
    np.testing.assert_array_equal(first.train_x, again.train_x)
    # The extracted folder gives the same images.
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(kaggle_zip / "train.zip") as zf:
        zf.extractall(extracted)
    from_dir = D.load_one_class("dvcood", root=str(extracted), category="0", cache_dir=cache)
    np.testing.assert_array_equal(first.train_x, from_dir.train_x)
    np.testing.assert_array_equal(first.test_x, from_dir.test_x)


def test_prepare_script_writes_npz_that_loads_identically(kaggle_zip, tmp_path):
    spec = importlib.util.spec_from_file_location("prepare_dogvscat", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data_dir = tmp_path / "data"
    args = ["--source", str(kaggle_zip / "train.zip"), "--data_dir", str(data_dir)]
    assert script.main(args) == 0
    npz = data_dir / "dogs-vs-cats" / "train_64x64.npz"
    assert [p.name for p in npz.parent.iterdir()] == ["train_64x64.npz"]  # no temp file left
    with np.load(npz) as z:
        assert z["image"].shape == (10, 64, 64, 3) and z["label"].tolist() == [0] * 5 + [1] * 5
    from_npz = D.load_one_class("dvcood", root=str(data_dir), category="0", cache_dir="")
    from_zip = D.load_one_class("dvcood", root=str(kaggle_zip), category="0", cache_dir="")
    np.testing.assert_array_equal(from_npz.train_x, from_zip.train_x)
    np.testing.assert_array_equal(from_npz.test_x, from_zip.test_x)
    small = D.load_one_class("dvcood", root=str(data_dir), category="0", input_shape=(32, 32, 3))
    assert small.train_x.shape == (4, 32, 32, 3)
    assert script.main(["--source", str(tmp_path / "nothing"), "--data_dir", str(data_dir)]) == 2


def test_dogvscat_missing_data_messages(tmp_path):
    with pytest.raises(DataError, match="needs root="):
        D.load_one_class("dvcood", root=None, category="0")
    with pytest.raises(DataError, match="does not exist"):
        D.load_one_class("dvcood", root=str(tmp_path / "nope"), category="0")
    with pytest.raises(DataError, match=r"no Dogs-vs-Cats data in .*train_64x64.npz.*train.zip"):
        D.load_one_class("dvcood", root=str(tmp_path), category="0")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.zip").write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="cannot read zip"):
        D.load_one_class("dvcood", root=str(bad), category="0", cache_dir="")


def test_split_follows_the_reference_file_order(tmp_path):
    # The reference lists the images with sorted(os.listdir(...)): text order, so cat.10 comes
    # before cat.2. With 12 images per class that order differs from the numeric one, and the
    # seed-0 permutation must pick the reference's train and test images.
    import os

    folder = tmp_path / "train"
    folder.mkdir()
    n = 12
    for kind in ("cat", "dog"):
        for i in range(n):
            # The image number is written into the pixels, to identify it after loading.
            arr = np.full((64, 64, 3), 10 * i + (0 if kind == "cat" else 5), np.uint8)
            Image.fromarray(arr).save(folder / f"{kind}.{i}.png")
            os.rename(folder / f"{kind}.{i}.png", folder / f"{kind}.{i}.jpg")

    # The reference's procedure, written out: list, label by name, seed 0, cats then dogs.
    names = sorted(os.listdir(folder))
    labels = np.array([0 if name.startswith("cat") else 1 for name in names])
    numbers = np.array([int(name.split(".")[1]) for name in names])
    np.random.seed(0)  # noqa: NPY002
    cats = numbers[labels == 0][np.random.permutation(n)]  # noqa: NPY002
    want_train, want_test = set(cats[: (4 * n) // 5]), set(cats[(4 * n) // 5 :])
    assert (
        sorted(want_test)
        != sorted(  # the text order really changes the split here
            np.arange(n)[np.random.RandomState(0).permutation(n)][(4 * n) // 5 :]
        )
    )

    d = D.load_one_class("dvcood", root=str(tmp_path), category="cat", cache_dir="")
    got_train = {int(img[0, 0, 0]) // 10 for img in d.train_x}
    got_test = {int(img[0, 0, 0]) // 10 for img, y in zip(d.test_x, d.test_y) if y == 0}
    assert got_train == want_train and got_test == want_test


def test_npz_of_an_older_version_is_refused(tmp_path):
    folder = tmp_path / "dogs-vs-cats"
    folder.mkdir()
    np.savez(folder / "train_64x64.npz", image=np.zeros((4, 64, 64, 3), np.uint8),
             label=np.array([0, 0, 1, 1]))  # fmt: skip
    with pytest.raises(DataError, match=r"prepare_dogvscat\.py again"):
        D.load_one_class("dvcood", root=str(tmp_path), category="0", cache_dir="")
