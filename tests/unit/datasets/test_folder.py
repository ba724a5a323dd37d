"""User image folders: odd files and modes, corrupt files, category resolution, error messages,
the decode cache, and (slow) the real CIFAR-10 JPEG copy."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class import datasets as D
from deep_representation_one_class.datasets import DataError, images

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Loads without an explicit cache_dir must not write into the user's ~/.cache.
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "default_cache"))


def _rgb(h, w, value, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), value, np.uint8)
    arr[..., 0] = rng.integers(0, 256, (h, w))
    return arr


def make_folder(root: Path) -> Path:
    """train/good with every odd case, train/other, test/good, test/defect, junk files."""
    good = root / "train" / "good"
    (good / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(_rgb(40, 30, 10)).save(good / "a_rgb.png")
    Image.fromarray(np.full((20, 20), 77, np.uint8), "L").save(good / "b_gray.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = 0  # fully transparent: alpha must be dropped, not composited
    Image.fromarray(rgba, "RGBA").save(good / "c_rgba.png")
    Image.fromarray(_rgb(32, 32, 200)).save(good / "d_plain.BMP")
    Image.fromarray(_rgb(64, 48, 60)).save(good / "e_upper.JPG", quality=95)
    Image.fromarray(_rgb(32, 32, 90)).save(good / "nested" / "f_nested.jpeg")
    Image.fromarray(_rgb(32, 32, 30)).save(good / "nested" / "deeper" / "g_deep.png")
    Image.fromarray(_rgb(32, 32, 5)).convert("P").save(good / "h_palette.png")
    (good / "z_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (good / "notes.txt").write_text("not an image")
    (good / ".hidden.png").write_bytes(b"garbage that must be ignored")
    other = root / "train" / "other"
    other.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(_rgb(32, 32, 250, seed=i)).save(other / f"o{i}.png")
    for cls, n, value in (("good", 3, 15), ("defect", 2, 240)):
        folder = root / "test" / cls
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_rgb(32, 32, value, seed=i)).save(folder / f"{i:03d}.png")
    Image.fromarray(_rgb(8, 8, 1)).save(root / "test" / "loose.png")
    return root


@pytest.fixture
def folder_root(tmp_path):
    return make_folder(tmp_path / "data")


def _load(root, tmp_path, **kw):
    kw.setdefault("category", "good")
    return D.load_one_class("folder", root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


def test_corrupt_file_is_named(folder_root, tmp_path):
    with pytest.raises(DataError, match=r"cannot decode image .*z_corrupt\.png.*skip_corrupt"):
        _load(folder_root, tmp_path)


def test_skip_corrupt_counts_and_odd_formats(folder_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        d = _load(folder_root, tmp_path, skip_corrupt=True)
    assert "Skipped 1 undecodable image(s)" in caplog.text and "z_corrupt.png" in caplog.text
    assert "Ignoring 1 file(s) directly in" in caplog.text
    assert d.category == "good" and d.name == "folder"
    # a, b, c, d, e, nested/f, nested/deeper/g, h: the txt and the dot-file are ignored.
    assert d.train_x.shape == (8, 32, 32, 3) and d.train_x.dtype == np.uint8
    gray = d.train_x[1]
    assert np.all(gray == 77)  # grayscale tiled to three channels, same size: no resampling
    assert np.all(d.train_x[2] == 120)  # RGBA: alpha dropped
    assert d.test_x.shape == (5, 32, 32, 3)
    assert d.class_names == ("defect", "good", "other")
    np.testing.assert_array_equal(d.test_y, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(d.test_class, [0, 0, 1, 1, 1])
    names = [Path(p).relative_to(folder_root).as_posix() for p in d.test_paths]
    assert names == ["test/defect/000.png", "test/defect/001.png", "test/good/000.png",
                     "test/good/001.png", "test/good/002.png"]  # fmt: skip


def test_sorted_order_and_resizing(folder_root, tmp_path):
    (folder_root / "train" / "good" / "z_corrupt.png").unlink()
    d = _load(folder_root, tmp_path, input_shape=(16, 16, 1))
    assert d.train_x.shape == (8, 16, 16, 1)
    expected = images.decode_image(folder_root / "train" / "good" / "e_upper.JPG", (16, 16, 1))
    np.testing.assert_array_equal(d.train_x[4], expected)
    # The nested files come after the top-level ones ('h_palette.png' < 'nested/...').
    deep = images.decode_image(
        folder_root / "train" / "good" / "nested" / "deeper" / "g_deep.png", (16, 16, 1)
    )
    np.testing.assert_array_equal(d.train_x[6], deep)


def test_category_by_sorted_index_and_case(folder_root, tmp_path):
    d = _load(folder_root, tmp_path, category="0", skip_corrupt=True)
    assert d.category == "good"
    d = _load(folder_root, tmp_path, category="GOOD", skip_corrupt=True)
    assert d.category == "good"
    with pytest.raises(DataError, match=r"no category folder 'bad'.*available.*0=good, 1=other"):
        _load(folder_root, tmp_path, category="bad")


def test_validation_mode_uses_other_train_folders(folder_root, tmp_path):
    d = _load(folder_root, tmp_path, skip_corrupt=True, is_validation=True, seed=3)
    assert d.train_x.shape[0] == 7  # 9 * 8 // 10
    assert d.test_x.shape[0] == 2 and d.test_y.tolist() == [0, 1]
    assert d.class_names[d.test_class[1]] == "other"
    assert Path(d.test_paths[1]).parent.name == "other"


def test_second_load_reads_the_cache(folder_root, tmp_path, monkeypatch):
    calls = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(images.Image, "open", counting_open)
    first = _load(folder_root, tmp_path, skip_corrupt=True)
    n_first = len(calls)
    assert n_first == 9 + 5  # every train/good candidate and every test image
    second = _load(folder_root, tmp_path, skip_corrupt=True)
    assert len(calls) == n_first  # nothing decoded again
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert first.test_paths == second.test_paths
    # The cached failure still makes a strict load fail, without decoding.
    with pytest.raises(DataError, match=r"z_corrupt\.png"):
        _load(folder_root, tmp_path)
    assert len(calls) == n_first
    # Another input shape, or a changed folder, is decoded afresh (only that folder).
    time.sleep(0.01)
    Image.fromarray(_rgb(32, 32, 3)).save(folder_root / "test" / "defect" / "002.png")
    third = _load(folder_root, tmp_path, skip_corrupt=True)
    assert len(calls) == n_first + 3 and third.test_x.shape[0] == 6
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_layout_errors_name_the_expected_paths(tmp_path):
    root = tmp_path / "r"
    with pytest.raises(DataError, match=r"needs root="):
        D.load_one_class("folder", root=None, category="a")
    with pytest.raises(DataError, match=rf"{root} does not exist; expected {root}/train/"):
        _load(root, tmp_path, category="a")
    (root / "training" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"{root}/train is missing \(found in {root}: training\)"):
        _load(root, tmp_path, category="a")
    (root / "train").mkdir()
    (root / "test").mkdir()
    with pytest.raises(DataError, match="has no category subfolders"):
        _load(root, tmp_path, category="a")
    (root / "train" / "a").mkdir()
    (root / "train" / "b").mkdir()
    with pytest.raises(DataError, match=rf"{root}/test/a is missing"):
        _load(root, tmp_path, category="a")
    (root / "test" / "a").mkdir()
    with pytest.raises(DataError, match=rf"no images .* under {root}/train/a; available .*a, b"):
        _load(root, tmp_path, category="a")
    Image.fromarray(_rgb(8, 8, 1)).save(root / "train" / "a" / "x.png")
    Image.fromarray(_rgb(8, 8, 1)).save(root / "test" / "a" / "x.png")
    with pytest.raises(DataError, match="at least one other class folder"):
        _load(root, tmp_path, category="a")


@pytest.mark.slow
def test_real_cifar10_jpeg_airplane(tmp_path):
    root = SHARED_DATA / "cifar10-jpeg"
    if not (root / "train" / "airplane").is_dir():
        pytest.skip(f"real data folder {root} is absent")
    start = time.monotonic()
    d = D.load_one_class("folder", root=str(root), category="airplane",
                         cache_dir=str(tmp_path / "cache"))  # fmt: skip
    first = time.monotonic() - start
    assert d.category == "airplane"
    assert d.train_x.shape == (5000, 32, 32, 3) and d.cls_x.shape == (5000, 32, 32, 3)
    assert d.test_x.shape == (10000, 32, 32, 3)
    assert int((d.test_y == 0).sum()) == 1000
    assert d.class_names[0] == "airplane" and len(d.class_names) == 10
    assert np.bincount(d.test_class).tolist() == [1000] * 10
    assert Path(d.test_paths[0]).name == "0000.jpg"
    by_index = D.load_one_class("folder", root=str(root), category="0",
                                cache_dir=str(tmp_path / "cache"))  # fmt: skip
    np.testing.assert_array_equal(by_index.train_x, d.train_x)
    print(f"cifar10-jpeg airplane: first load {first:.1f} s (decode), second from cache")
