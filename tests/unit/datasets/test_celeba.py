"""CelebA: the raw release layout, the attribute protocol, the fixed attribute order (fix of the
reference's frozenset bug), the prepared arrays, the cache and the TFDS route, on 12 faces."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class import datasets as D
from deep_representation_one_class.datasets import DataError, celeba, images

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "prepare_celeba.py"
PARTITION = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]  # 6 train, 2 validation, 4 test
EYEGLASSES = {2, 5, 10}  # 1-based image numbers wearing glasses: two train, one test
SMILING = {1, 9}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Loads without an explicit cache_dir must not write into the user's ~/.cache.
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "default_cache"))


def make_celeba(root: Path, attr_order=None) -> Path:
    """img_align_celeba/000001..000012.jpg (218x178) and the two list files."""
    names = list(attr_order or celeba.ATTRIBUTES)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, 13):
        arr = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:06d}.jpg", quality=90)
        flags = {a: -1 for a in names}
        flags["Eyeglasses"] = 1 if i in EYEGLASSES else -1
        flags["Smiling"] = 1 if i in SMILING else -1
        rows.append(f"{i:06d}.jpg " + " ".join(f"{flags[a]:2d}" for a in names))
    (root / "list_attr_celeba.txt").write_text("12\n" + " ".join(names) + "\n" + "\n".join(rows))
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{i:06d}.jpg {p}" for i, p in enumerate(PARTITION, 1)) + "\n"
    )
    return root


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


def _expected(root: Path, number: int) -> np.ndarray:
    img = Image.open(root / "img_align_celeba" / f"{number:06d}.jpg").convert("RGB")
    img = img.crop((10, 40, 168, 198)).resize((64, 64), Image.Resampling.BICUBIC)
    return np.asarray(img)


def test_raw_release_attribute_protocol(celeba_root, tmp_path):
    d = D.load_one_class("celeba", root=str(celeba_root), category="eyeglasses",
                         cache_dir=str(tmp_path))  # fmt: skip
    assert (d.name, d.category) == ("celeba", "Eyeglasses")
    assert d.class_names == ("not_Eyeglasses", "Eyeglasses")
    # Train inliers: the train-partition faces WITHOUT glasses (1, 3, 4, 6).
    assert d.train_x.shape == (4, 64, 64, 3) and d.train_x.dtype == np.uint8
    np.testing.assert_array_equal(d.train_x[1], _expected(celeba_root, 3))
    # Test: the whole test partition (9..12), outlier = wearing glasses (10).
    np.testing.assert_array_equal(d.test_y, [0, 1, 0, 0])
    np.testing.assert_array_equal(d.test_class, [0, 1, 0, 0])
    np.testing.assert_array_equal(d.test_x[1], _expected(celeba_root, 10))
    smiling = D.load_one_class("celeba", root=str(celeba_root), category="Smiling",
                               cache_dir=str(tmp_path))  # fmt: skip
    assert smiling.train_x.shape[0] == 5
    np.testing.assert_array_equal(smiling.test_y, [1, 0, 0, 0])


def test_validation_mode_works(celeba_root, tmp_path):
    d = D.load_one_class("celeba", root=str(celeba_root), category="Eyeglasses",
                         is_validation=True, cache_dir=str(tmp_path))  # fmt: skip
    assert d.train_x.shape[0] == 3  # 9 * 4 // 10
    np.testing.assert_array_equal(d.test_y, [0, 1])


def test_columns_are_found_by_name_whatever_their_order(tmp_path):
    order = list(reversed(celeba.ATTRIBUTES))
    root = make_celeba(tmp_path / "shuffled", attr_order=order)
    d = D.load_one_class("celeba", root=str(root), category="Eyeglasses", cache_dir="")
    np.testing.assert_array_equal(d.test_y, [0, 1, 0, 0])
    assert d.train_x.shape[0] == 4


def test_raw_is_cached_and_zip_source(celeba_root, tmp_path, monkeypatch):
    calls = []
    real_open = Image.open
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: calls.append(1) or real_open(*a, **k))
    cache = str(tmp_path / "cache")
    first = D.load_one_class("celeba", root=str(celeba_root), category="Bald", cache_dir=cache)
    assert len(calls) == 10  # train + test partitions; the validation partition is skipped
    D.load_one_class("celeba", root=str(celeba_root), category="Eyeglasses", cache_dir=cache)
    assert len(calls) == 10  # every attribute shares one cache entry
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        (zipped / name).write_bytes((celeba_root / name).read_bytes())
    with zipfile.ZipFile(zipped / "img_align_celeba.zip", "w") as zf:
        for p in sorted((celeba_root / "img_align_celeba").iterdir()):
            zf.write(p, f"img_align_celeba/{p.name}")
    from_zip = D.load_one_class("celeba", root=str(zipped), category="Bald", cache_dir="")
    np.testing.assert_array_equal(from_zip.train_x, first.train_x)
    np.testing.assert_array_equal(from_zip.test_x, first.test_x)


def test_prepare_script_and_prepared_arrays(celeba_root, tmp_path):
    spec = importlib.util.spec_from_file_location("prepare_celeba", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "data" / "celeba_npy"
    assert script.main(["--source", str(celeba_root), "--out_dir", str(out)]) == 0
    assert json.loads((out / "attr_names.json").read_text()) == list(celeba.ATTRIBUTES)
    assert np.load(out / "train" / "image_64x64.npy").shape == (6, 64, 64, 3)
    assert np.load(out / "test" / "attr.npy").shape == (4, 40)
    assert not list(out.rglob("*.tmp"))
    prepared = D.load_one_class("celeba", root=str(tmp_path / "data"), category="Eyeglasses")
    raw = D.load_one_class("celeba", root=str(celeba_root), category="Eyeglasses", cache_dir="")
    np.testing.assert_array_equal(prepared.train_x, raw.train_x)
    np.testing.assert_array_equal(prepared.test_y, raw.test_y)
    (out / "attr_names.json").unlink()  # e.g. arrays written by the reference's script
    with pytest.raises(DataError, match=r"attr_names\.json is missing.*prepare_celeba\.py"):
        D.load_one_class("celeba", root=str(tmp_path / "data"), category="Eyeglasses")
    assert script.main(["--source", str(tmp_path / "none"), "--out_dir", str(out)]) == 2


def test_celeba_missing_data_messages(tmp_path):
    with pytest.raises(DataError, match="needs root="):
        D.load_one_class("celeba", root=None, category="Eyeglasses")
    with pytest.raises(DataError, match="not a directory"):
        D.load_one_class("celeba", root=str(tmp_path / "x"), category="Eyeglasses")
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match=r"no CelebA data in .*list_attr_celeba\.txt"):
        D.load_one_class("celeba", root=str(tmp_path), category="Eyeglasses")
    with pytest.raises(DataError, match=r"unknown category 'glasses'.*Eyeglasses"):
        D.load_one_class("celeba", root=str(tmp_path), category="glasses")


def test_celeba_tfds_route_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "celeb_a").mkdir()
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        arrays = celeba.load_arrays(str(tmp_path), (64, 64, 3), cache_dir="")
    assert arrays["train_x"].shape == (6, 64, 64, 3) and arrays["test_attr"].shape == (6, 40)
    assert list(arrays["attr_names"]) == list(celeba.ATTRIBUTES)
