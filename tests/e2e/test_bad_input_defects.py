"""The bad-input matrix, continued: wrong answers that looked right (issue 22, cases 1-5, 12, 16).

Each case runs the real command (in-process, like ``test_bad_input``) on a fresh workspace and
asserts the exit status, ONE ``error:`` line naming the culprit (none where the right outcome
is success), and that every file that existed before is byte-identical afterwards. The cases
whose old outcome was a wrong number (category, bit depth, EXIF, masks, TIFF) also assert the
numbers: the class evaluated, the decoded arrays, the mask pixels, the image count.

One tiny run on a folder dataset (category given as the index '0', a test class folder whose
name is not valid UTF-8) is trained once for the module; the session's ``fake_run`` serves the
other cases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import _reliability as rel
import numpy as np
import pytest
from _defects import (
    BAD,
    FLAGS,
    TINY_FLAGS,
    cli_run,
    command,
    copy_run,
    folder_data,
    folder_flags,
    no_error,
    one_error,
    pixels,
    png,
    unchanged,
)
from PIL import Image

from deep_representation_one_class import cli, datasets, main
from deep_representation_one_class.datasets import images
from deep_representation_one_class.reports import report
from deep_representation_one_class.serving import score
from deep_representation_one_class.serving.image_input import load_images
from deep_representation_one_class.training import data_record, rescore


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(data root, finished run): trained with --category=0 on train/good and test/{good,
    bad\\xff}; never modified by the tests (they copy it)."""
    base = tmp_path_factory.mktemp("folder_run")
    root = folder_data(base / "data", bad=BAD)
    run = base / "run"
    FLAGS.unparse_flags()
    argv = ["droc-train", *folder_flags(root, run, base / "cache")]
    code = cli.guard(lambda: main.main(main.parse_flags(argv)))
    FLAGS.unparse_flags()
    assert code == 0
    return root, run


# ============================================================================= wrong results
def test_1_category_index_is_stored_resolved_and_changed_data_are_refused(folder_run, ws, capsys):
    root, run_src = folder_run
    cfg = json.loads((run_src / "config.json").read_text())
    record = json.loads((run_src / data_record.DATA_RECORD).read_text())
    assert cfg["category"] == "good"  # not "0"
    assert (record["category_given"], record["category"]) == ("0", "good")
    assert record["class_names"] == sorted([BAD, "good"])
    metrics = json.loads((run_src / "summary.json").read_text())["metrics"]
    data = shutil.copytree(root, ws / "data")
    run = copy_run(run_src, ws / "run")
    # Same data: re-extraction evaluates 'good' again, to the same numbers.
    argv = [f"--model_dir={run}", "--reextract", f"--root={data}"]
    no_error(*command(rescore.main, argv, capsys))
    again = json.loads((run / "summary.json").read_text())["metrics"]
    assert again["pool.kde"] == pytest.approx(metrics["pool.kde"], abs=1e-6)
    # A class folder sorted before 'good' ('0' would now be 'aaa'): refused, nothing changes.
    for i in range(2):
        png(data / "train" / "aaa" / f"{i}.png", pixels(300 + i))
        png(data / "test" / "aaa" / f"{i}.png", pixels(400 + i))
    before = rel.snapshot(ws)
    line = one_error(*command(rescore.main, argv, capsys), "data.json", "'aaa'")
    assert "'good'" in line
    assert rel.snapshot(ws) == before
    # Resuming with the same command line (category '0') is refused the same way.
    run2 = copy_run(run_src, ws / "run2")
    os.remove(run2 / "summary.json")  # an interrupted run: it loads the data to resume
    before = rel.snapshot(ws)
    argv2 = folder_flags(data, run2, ws.parent / "cache")
    one_error(*cli_run(argv2, capsys), "no longer match", "'aaa'")
    unchanged(before, ws)
    assert rel.snapshot(ws) == before


def _const16(path: Path, value: int, shape=(8, 8)) -> Path:
    return png(path, np.full(shape, value, np.uint16))


def test_2_16bit_images_convert_by_bit_depth_everywhere(fake_run, ws, capsys):
    cases = {255: 0, 256: 1, 4095: 15, 40000: 156, 65535: 255}
    for value, want in cases.items():
        p = _const16(ws / "c" / f"v{value}.png", value)
        arr = images.decode_image(str(p), (8, 8, 1))
        assert np.all(arr == want), (value, np.unique(arr))
    ramp = png(ws / "c" / "ramp.png", np.arange(257, dtype=np.uint16).reshape(1, 257))
    arr = images.decode_image(str(ramp), (1, 257, 1))[0, :, 0]
    assert arr[:256].max() == 0 and arr[256] == 1  # never stretched to 0..255
    # The same rule in the folder loader and in serving: a 16-bit image and its 8-bit twin
    # (value >> 8) give the same arrays and the same scores.
    rng = np.random.default_rng(0)
    for cls in ("good", "bad"):
        for i in range(2):
            deep = rng.integers(0, 65536, (12, 12), dtype=np.uint16)
            png(ws / "d16" / "test" / cls / f"{i}.png", deep)
            png(ws / "d8" / "test" / cls / f"{i}.png", (deep >> 8).astype(np.uint8))
            png(ws / "d16" / "train" / "good" / f"{i}.png", deep)
            png(ws / "d8" / "train" / "good" / f"{i}.png", (deep >> 8).astype(np.uint8))
    load = {
        d: datasets.load_one_class(
            "folder", root=str(ws / d), category="good", input_shape=(12, 12, 1), cache_dir=""
        )
        for d in ("d16", "d8")
    }
    np.testing.assert_array_equal(load["d16"].test_x, load["d8"].test_x)
    served16, _ = load_images(str(ws / "d16" / "test"), (12, 12, 1))
    served8, _ = load_images(str(ws / "d8" / "test"), (12, 12, 1))
    np.testing.assert_array_equal(served16, served8)
    before = rel.snapshot(ws)
    for d in ("d16", "d8"):
        argv = [f"--model_dir={fake_run}", f"--images={ws / d / 'test'}", f"--out={ws / d}.csv"]
        no_error(*command(score.main, argv, capsys))
    rows = [(ws / f"{d}.csv").read_text().splitlines()[1:] for d in ("d16", "d8")]
    assert [r.split(",")[1:] for r in rows[0]] == [r.split(",")[1:] for r in rows[1]]
    unchanged(before, ws)


def _exif_jpeg(path: Path, pixels_: np.ndarray, orientation: int) -> Path:
    img = Image.fromarray(pixels_)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95, exif=exif)
    return path


def test_3_exif_orientation_is_applied_everywhere(fake_run, ws, capsys):
    stored = pixels(5, size=(16, 24))  # 16 high, 24 wide as stored
    jpeg = _exif_jpeg(ws / "img" / "test" / "bad" / "turned.jpg", stored, 6)
    with Image.open(jpeg) as im:  # the upright twin: the decoded JPEG pixels, turned
        upright = np.asarray(im.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    png(ws / "img" / "test" / "bad" / "twin.png", upright)
    assert upright.shape[:2] == (24, 16)
    assert images.image_size(jpeg) == (24, 16)
    a = images.decode_image(str(jpeg), (20, 20, 3))
    b = images.decode_image(str(ws / "img/test/bad/twin.png"), (20, 20, 3))
    np.testing.assert_array_equal(a, b)
    # Folder loader (same_scale reads the upright size from the header) and serving.
    for i in range(2):
        png(ws / "img" / "train" / "good" / f"{i}.png", pixels(i, size=(24, 16)))
        png(ws / "img" / "test" / "good" / f"{i}.png", pixels(10 + i, size=(24, 16)))
    data = datasets.load_one_class(
        "folder", root=str(ws / "img"), category="good", input_shape=(20, 20, 3), cache_dir="",
        resize_policy="same_scale",
    )  # fmt: skip
    names = [os.path.basename(p) for p in data.test_paths]
    i, j = names.index("turned.jpg"), names.index("twin.png")
    np.testing.assert_array_equal(data.test_x[i], data.test_x[j])
    served, _ = load_images(str(ws / "img" / "test" / "bad"), (20, 20, 3))
    np.testing.assert_array_equal(served[0], served[1])
    before = rel.snapshot(ws)
    out = ws / "scores.csv"
    argv = [f"--model_dir={fake_run}", f"--images={ws / 'img/test/bad'}", f"--out={out}"]
    no_error(*command(score.main, argv, capsys))
    rows = out.read_text().splitlines()[1:]
    assert rows[0].split(",")[1:] == rows[1].split(",")[1:]  # the same scores
    unchanged(before, ws)


def _mvtec(base: Path, mask_scale: int, mask_value: int) -> Path:
    """A 40x40 MVTec-layout part; each crack's defect is y20-29/x20-29 of its image, its mask
    drawn at 1/``mask_scale`` of the image's size with ``mask_value`` for defect."""
    for sub, n in (("train/good", 4), ("test/good", 2), ("test/crack", 2)):
        for i in range(n):
            png(base / sub / f"{i:03d}.png", pixels(i + 7 * len(sub), size=(40, 40)))
    for i in range(2):
        m = np.zeros((40 // mask_scale, 40 // mask_scale), np.uint8)
        lo, hi = 20 // mask_scale, 30 // mask_scale
        m[lo:hi, lo:hi] = mask_value
        png(base / "ground_truth" / "crack" / f"{i:03d}_mask.png", m)
    return base


@pytest.mark.parametrize("policy", ["same_scale", "squash", "fit"])
def test_4_masks_any_nonzero_value_and_scaled_with_their_image(policy, ws, caplog):
    def masks(name, scale, value):
        base = _mvtec(ws / name / "part", scale, value)
        data = datasets.load_one_class(
            "mvtec", root=str(base.parent), category="part", input_shape=(32, 32, 3),
            cache_dir="", resize_policy=policy,
        )  # fmt: skip
        return data.test_masks

    official = masks("official", 1, 255)
    # 0/255 full size: the defect y20-29/x20-29 of 40 px lands at y16-23/x16-23 of 32 px.
    expected = np.zeros((32, 32), np.uint8)
    expected[16:24, 16:24] = 1
    np.testing.assert_array_equal(official[-1], expected)
    assert official.sum() == 2 * 64 and official[:2].sum() == 0  # good images: no defect
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(masks("ones", 1, 1), official)  # 0/1 masks
        np.testing.assert_array_equal(masks("half", 2, 255), official)  # half-size masks
    assert "2 mask(s) differ in size from their image" in caplog.text
    assert "No defect masks" not in caplog.text


def test_4_half_size_masks_train_end_to_end(ws, capsys, caplog):
    base = _mvtec(ws / "mv" / "part", 2, 1)  # half size AND 0/1
    before = rel.snapshot(ws)
    argv = [
        *TINY_FLAGS, "--dataset=mvtec", f"--root={base.parent}", "--category=part",
        "--input_shape=32,32,3", "--patch_size=16", "--train_steps=1", "--nobaselines",
        "--synthetic_holdout=0", "--classifiers=auc", f"--model_dir={ws / 'run'}",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        no_error(*cli_run(argv, capsys))
    assert "No defect masks" not in caplog.text
    metrics = json.loads((ws / "run" / "summary.json").read_text())["metrics"]
    pixel = [v for k, v in metrics.items() if k.endswith("pixel_auroc")]
    assert pixel and all(0 <= v <= 100 for v in pixel), metrics
    unchanged(before, ws)


def test_5_tiff_is_read_and_a_folder_of_unreadable_files_is_refused(ws, capsys, caplog):
    root = folder_data(ws / "data", train=4, test=2)
    for i in range(3):
        Image.fromarray(pixels(50 + i)).save(root / "test" / "bad" / f"t{i}.tif")
        Image.fromarray(pixels(60 + i)).save(root / "test" / "bad" / f"t{i}.TIFF")
    (root / "test" / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        data = datasets.load_one_class(
            "folder", root=str(root), category="good", input_shape=(16, 16, 3), cache_dir=""
        )
    assert len(data.test_x) == 2 + 2 + 6 and int(data.test_y.sum()) == 8
    tifs = [i for i, p in enumerate(data.test_paths) if p.endswith("t1.tif")]
    np.testing.assert_array_equal(data.test_x[tifs[0]], pixels(51))
    assert "empty holds no image" in caplog.text
    # A class folder of files that are not read: refused naming it (not silently dropped).
    (root / "test" / "crack").mkdir()
    for i in range(12):
        Image.fromarray(pixels(70 + i)).save(root / "test" / "crack" / f"{i}.gif")
    before = rel.snapshot(ws)
    argv = folder_flags(root, ws / "run", ws.parent / "cache", category="good")
    line = one_error(*cli_run(argv, capsys), "crack", "12 file(s)", ".tif")
    assert "0.gif" in line
    assert rel.snapshot(ws) == before


def test_12_non_utf8_class_folder_reports(folder_run, ws, capsys):
    _, run_src = folder_run
    run = copy_run(run_src, ws / "run")
    before = rel.snapshot(ws)
    no_error(*command(report.main, [f"--model_dir={run}", "--k=2"], capsys))
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "bad\\xff" in page and "<img" in page
    unchanged(before, ws)


# ============================================================================= stale views
def test_16_report_refuses_thumbnails_of_changed_test_images(folder_run, ws, capsys):
    root, run_src = folder_run
    data = shutil.copytree(root, ws / "data")
    run = copy_run(run_src, ws / "run", root=str(data))
    no_error(*command(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    assert (run / "report_files" / "img_0_0.png").exists()  # same data: thumbnails
    target = data / "test" / "good" / "0.png"
    png(target, 255 - np.asarray(Image.open(target)))  # same count, labels and size
    before = rel.snapshot(ws)
    no_error(*command(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    page = (run / "report.html").read_text()
    assert "the test images changed since the run" in page
    assert not list((run / "report_files").glob("img_*.png"))
    unchanged({k: v for k, v in before.items() if "report" not in k}, ws)
