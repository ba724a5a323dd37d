"""The bad-input matrix, continued: wrong answers that looked right and files lost at the edges.

Each case runs the real command (in-process, like ``test_bad_input``) on a fresh workspace and
asserts the exit status, ONE ``error:`` line naming the culprit (none where the right outcome
is success), and that every file that existed before is byte-identical afterwards. The cases
whose old outcome was a wrong number (category, bit depth, EXIF, masks, TIFF) also assert the
numbers: the class evaluated, the decoded arrays, the mask pixels, the image count.

One tiny run on a folder dataset (category given as the index '0', a test class folder whose
name is not valid UTF-8) is trained once for the module; the session's ``fake_run`` serves the
cases about run files.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import _reliability as rel
import numpy as np
import pytest
from absl import flags
from PIL import Image

from deep_representation_one_class import cli, datasets, main
from deep_representation_one_class.datasets import images
from deep_representation_one_class.reports import aggregate, report
from deep_representation_one_class.serving import detector as detector_lib
from deep_representation_one_class.serving import explain_run, export, score
from deep_representation_one_class.serving.image_input import load_images
from deep_representation_one_class.training import rescore, run_dir

FLAGS = flags.FLAGS
BAD = os.fsdecode(b"bad\xff")  # a test class folder whose name is not valid UTF-8
TINY_FLAGS = [f for f in rel.TINY if not f.startswith(("--dataset=", "--category="))]


# ----------------------------------------------------------------------------- helpers
def _cli(argv, capsys) -> tuple[int, str]:
    FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        code = cli.guard(lambda: main.main(main.parse_flags(["droc-train", *argv])))
    finally:
        FLAGS.unparse_flags()
    return code, capsys.readouterr().err


def _cmd(entry, argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = entry([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error(code: int, err: str, *fragments: str, status: int = cli.EXIT_USAGE) -> str:
    lines = rel.error_lines(err)
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def no_error(code: int, err: str) -> None:
    assert code == 0 and not rel.error_lines(err), err


def unchanged(before: dict, root) -> None:
    """Every entry of ``before`` is still there with the same bytes (new files are allowed)."""
    after = rel.snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, changed


def png(path, pixels) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def pixels(seed: int, size=(16, 16), channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*size, channels), dtype=np.uint8).squeeze()


def folder_data(root: Path, bad: str = "bad", train: int = 8, test: int = 3) -> Path:
    for i in range(train):
        png(root / "train" / "good" / f"{i}.png", pixels(i))
    for i in range(test):
        png(root / "test" / "good" / f"{i}.png", pixels(100 + i))
        png(root / "test" / bad / f"{i}.png", 255 - pixels(200 + i) // 4)
    return root


def folder_flags(root, run, cache, category="0") -> list[str]:
    return [
        *TINY_FLAGS,
        "--dataset=folder",
        f"--root={root}",
        f"--category={category}",
        "--input_shape=16,16,3",
        "--num_epoch=1",
        "--nobaselines",
        "--synthetic_holdout=0",
        f"--cache_dir={cache}",
        f"--model_dir={run}",
    ]


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


def copy_run(src, dst, **config) -> Path:
    shutil.copytree(src, dst)
    if config:  # point the copy at its own data (config.json and the summary's copy)
        for name in ("config.json", "summary.json"):
            path = Path(dst) / name
            doc = json.loads(path.read_text())
            target = doc if name == "config.json" else doc["config"]
            target.update(config)
            path.write_text(json.dumps(doc))
    return Path(dst)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    return root


# ============================================================================= wrong results
def test_1_category_index_is_stored_resolved_and_changed_data_are_refused(folder_run, ws, capsys):
    root, run_src = folder_run
    cfg = json.loads((run_src / "config.json").read_text())
    record = json.loads((run_src / run_dir.DATA_RECORD).read_text())
    assert cfg["category"] == "good"  # not "0"
    assert (record["category_given"], record["category"]) == ("0", "good")
    assert record["class_names"] == sorted([BAD, "good"])
    metrics = json.loads((run_src / "summary.json").read_text())["metrics"]
    data = shutil.copytree(root, ws / "data")
    run = copy_run(run_src, ws / "run")
    # Same data: re-extraction evaluates 'good' again, to the same numbers.
    argv = [f"--model_dir={run}", "--reextract", f"--root={data}"]
    no_error(*_cmd(rescore.main, argv, capsys))
    again = json.loads((run / "summary.json").read_text())["metrics"]
    assert again["pool.kde"] == pytest.approx(metrics["pool.kde"], abs=1e-6)
    # A class folder sorted before 'good' ('0' would now be 'aaa'): refused, nothing changes.
    for i in range(2):
        png(data / "train" / "aaa" / f"{i}.png", pixels(300 + i))
        png(data / "test" / "aaa" / f"{i}.png", pixels(400 + i))
    before = rel.snapshot(ws)
    line = one_error(*_cmd(rescore.main, argv, capsys), "data.json", "'aaa'")
    assert "'good'" in line
    assert rel.snapshot(ws) == before
    # Resuming with the same command line (category '0') is refused the same way.
    run2 = copy_run(run_src, ws / "run2")
    os.remove(run2 / "summary.json")  # an interrupted run: it loads the data to resume
    before = rel.snapshot(ws)
    argv2 = folder_flags(data, run2, ws.parent / "cache")
    one_error(*_cli(argv2, capsys), "no longer match", "'aaa'")
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
        no_error(*_cmd(score.main, argv, capsys))
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
    no_error(*_cmd(score.main, argv, capsys))
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
        no_error(*_cli(argv, capsys))
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
    line = one_error(*_cli(argv, capsys), "crack", "12 file(s)", ".tif")
    assert "0.gif" in line
    assert rel.snapshot(ws) == before


# ============================================================================= files
def test_6_report_never_deletes_a_users_page_and_switches_at_the_end(fake_run, ws, capsys):
    (ws / "report.html").write_text("<html>my own notes</html>")
    (ws / "report_files").mkdir()
    (ws / "report_files" / "figure.svg").write_text("<svg/>")
    copy_run(fake_run, ws / "runs" / "r1")
    before = rel.snapshot(ws)
    one_error(*_cmd(report.main, [f"--model_dir={ws}"], capsys), "report.html", "not written")
    assert rel.snapshot(ws) == before
    os.rename(ws / "report.html", ws / "notes.html")
    before = rel.snapshot(ws)
    one_error(*_cmd(report.main, [f"--model_dir={ws}"], capsys), "report_files", "not written")
    assert rel.snapshot(ws) == before


def test_6_a_failed_rewrite_keeps_the_old_report_and_its_figures(fake_run, ws, capsys, monkeypatch):
    run = copy_run(fake_run, ws / "run")
    no_error(*_cmd(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    assert (run / "report_files" / "img_0_0.png").exists()
    before = rel.snapshot(ws)

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report.plots, "write_run_plots", disk_full)
    one_error(
        *_cmd(report.main, [f"--model_dir={run}", "--k=1"], capsys),
        "No space left on device",
        status=cli.EXIT_FAILURE,
    )
    assert rel.snapshot(ws) == before  # old page, every figure it links, no debris


def test_7_export_refuses_an_out_that_holds_the_run(fake_run, ws, capsys):
    exp = ws / "exp"
    (exp / "assets.extra").mkdir(parents=True)
    (exp / "assets.extra" / "droc_export.json").write_text("{}")
    copy_run(fake_run, exp / "myrun")
    before = rel.snapshot(ws)
    argv = [f"--model_dir={exp / 'myrun'}", f"--out={exp}", "--overwrite"]
    one_error(*_cmd(export.main, argv, capsys), "lies inside --out", "delete the run")
    assert rel.snapshot(ws) == before


def test_8_explain_and_aggregate_refuse_existing_outputs(fake_run, ws, capsys):
    run = copy_run(fake_run, ws / "run")
    (ws / "expl").mkdir()
    (ws / "expl" / "kde_ig.png").write_bytes(b"my figure")
    (ws / "P.md").write_text("my table\n")
    before = rel.snapshot(ws)
    argv = [f"--model_dir={run}", f"--out={ws / 'expl'}", "--k=1", "--steps=2"]
    one_error(*_cmd(explain_run.main, argv, capsys), "kde_ig.png", "--overwrite")
    one_error(*_cmd(aggregate.main, [ws / "run", "--out", ws / "P"], capsys), "P.md", "--overwrite")
    assert rel.snapshot(ws) == before
    no_error(*_cmd(aggregate.main, [ws / "run", "--out", ws / "P", "--overwrite"], capsys))
    assert "my table" not in (ws / "P.md").read_text()


def test_8_concurrent_score_writers_lose_nothing(fake_run, ws, capsys, monkeypatch):
    data = Path(rel.image_folder(ws / "data")) / "test"
    out = ws / "same.csv"
    real = detector_lib.Detector.score

    def other_writer_finishes_first(self, *a, **k):
        if not out.exists():
            out.write_text("other writer\n")  # the other command's result lands meanwhile
        return real(self, *a, **k)

    monkeypatch.setattr(detector_lib.Detector, "score", other_writer_finishes_first)
    before = rel.snapshot(ws)
    argv = [f"--model_dir={fake_run}", f"--images={data}", f"--out={out}"]
    one_error(*_cmd(score.main, argv, capsys), "same.csv", "another command", "--overwrite")
    assert out.read_text() == "other writer\n"  # its result is kept, not lost
    unchanged(before, ws)
    assert sorted(os.listdir(ws)) == ["data", "same.csv"]  # no temporary file left
    # With --overwrite the last writer wins, and says that it replaced another's file.
    out.unlink()
    no_error(*_cmd(score.main, [*argv, "--overwrite"], capsys))
    assert out.read_text().startswith("path,")


def test_9_disk_full_at_the_first_checkpoint_leaves_a_usable_folder(ws, capsys, monkeypatch):
    real = run_dir.Checkpoints.save

    def full(self, step):
        partial = Path(self.directory) / f"ckpt-{step}_temp"
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "part-00000-of-00001").write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    (ws / "kept.txt").write_text("mine")
    argv = [*rel.TINY, "--batch_size=100", "--num_epoch=1", f"--model_dir={ws / 'run'}"]
    monkeypatch.setattr(run_dir.Checkpoints, "save", full)
    before = rel.snapshot(ws)
    one_error(*_cli(argv, capsys), "No space left on device", status=cli.EXIT_FAILURE)
    assert rel.snapshot(ws) == before  # no ckpt-N_temp/, no half run folder
    monkeypatch.setattr(run_dir.Checkpoints, "save", real)
    no_error(*_cli(argv, capsys))  # the same command, once there is space
    assert json.loads((ws / "run" / "summary.json").read_text())["run"]["complete"]
    unchanged(before, ws)


def test_10_a_rerun_finishes_the_report_of_a_stopped_run(fake_run, ws, capsys):
    run = copy_run(fake_run, ws / "run")
    proc = rel.live_process()
    proc.kill()
    proc.wait()
    (run / ".droc_lock").write_text(rel.lock_record(proc.pid))  # SIGTERMed while reporting
    debris = run / ".report_files.new-x1y2"  # its half-written figures
    debris.mkdir()
    (debris / "img_0_0.png").write_bytes(b"\x89PNG half")
    assert not (run / "report.html").exists()
    before = {
        k: v for k, v in rel.snapshot(ws).items() if ".droc_lock" not in k and "new-" not in k
    }
    argv = [f for f in rel.TINY if f != "--noreport"] + ["--num_epoch=1", "--report"]
    no_error(*_cli([*argv, f"--model_dir={run}"], capsys))
    assert "<img" in (run / "report.html").read_text()
    assert not (run / ".droc_lock").exists() and not debris.exists()
    unchanged(before, ws)
    # Complete with its report: a further rerun changes nothing.
    before = rel.snapshot(ws)
    no_error(*_cli([*argv, f"--model_dir={run}"], capsys))
    assert rel.snapshot(ws) == before


def test_11_run_folders_inside_the_data_are_refused_and_never_read(ws, capsys):
    root = folder_data(ws / "data", train=4, test=2)
    old_run = root / "train" / "good" / "run_s1"  # from an older version: pngs in a run folder
    (old_run / "report_files").mkdir(parents=True)
    (old_run / ".droc_run").write_text("run\n")
    for i in range(4):
        png(old_run / "report_files" / f"img_0_{i}.png", pixels(500 + i))
    data = datasets.load_one_class(
        "folder", root=str(root), category="good", input_shape=(16, 16, 3), cache_dir=""
    )
    assert len(data.train_x) == 4  # not 8: the run's thumbnails are not training data
    before = rel.snapshot(ws)
    argv = folder_flags(root, root / "train" / "good" / "run_s2", ws.parent / "cache", "good")
    one_error(*_cli(argv, capsys), "inside the data root", str(root))
    assert rel.snapshot(ws) == before


def test_12_non_utf8_class_folder_reports(folder_run, ws, capsys):
    _, run_src = folder_run
    run = copy_run(run_src, ws / "run")
    before = rel.snapshot(ws)
    no_error(*_cmd(report.main, [f"--model_dir={run}", "--k=2"], capsys))
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "bad\\xff" in page and "<img" in page
    unchanged(before, ws)


# ============================================================================= damaged run files
def _tamper_npz(change):
    def setup(run: Path) -> None:
        path = run / "classifiers.npz"
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.write_bytes(buf.getvalue())

    return setup


def _set(key, value):
    return _tamper_npz(lambda a: a.__setitem__(key, np.asarray(value, a[key].dtype)))


def _huge_header(run: Path) -> None:
    """classifiers.npz whose pool.kde/train_features header claims 10^11 float64 rows."""
    path = run / "classifiers.npz"
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "pool.kde/train_features.npy":
                head = io.BytesIO()
                header = {"descr": "<f8", "fortran_order": False, "shape": (10**11, 32)}
                np.lib.format.write_array_header_1_0(head, header)
                data = head.getvalue() + b"\0" * 64
            dst.writestr(info, data)
    path.write_bytes(out.getvalue())


def _thresholds(text: str):
    def setup(run: Path) -> None:
        path = run / "thresholds.json"
        doc = json.loads(path.read_text())
        doc["quantiles"]["pool.kde"]["q95"] = "@@"
        path.write_text(json.dumps(doc).replace('"@@"', text))

    return setup


RUN_FILE_CASES = {
    "gamma-nan": (_set("pool.kde/gamma", np.nan), ("classifiers.npz", "gamma", "NaN")),
    "gamma-inf": (_set("pool.kde/gamma", np.inf), ("classifiers.npz", "gamma", "NaN or Inf")),
    "gamma-negative": (_set("pool.kde/gamma", -1.0), ("classifiers.npz", "gamma", "positive")),
    "gde-log-norm-nan": (_set("pool.gde/log_norm", np.nan), ("classifiers.npz", "log_norm")),
    "no-support-vectors": (
        _tamper_npz(
            lambda a: a.update(
                {
                    "pool.kocsvm/support_vectors": a["pool.kocsvm/support_vectors"][:0],
                    "pool.kocsvm/dual_coef": a["pool.kocsvm/dual_coef"][:0],
                }
            )
        ),
        ("classifiers.npz", "pool.kocsvm", "at least one row"),
    ),
    "mean-wrong-width": (
        _tamper_npz(lambda a: a.__setitem__("pool.gde/mean", a["pool.gde/mean"][:5])),
        ("classifiers.npz", "pool.gde", "mean", "(5,)"),
    ),
    "huge-header": (_huge_header, ("classifiers.npz", "train_features", "GiB")),
    "q95-nan": (_thresholds("NaN"), ("thresholds.json", "'pool.kde'", "'q95'")),
    "q95-infinity": (_thresholds("Infinity"), ("thresholds.json", "'q95'", "inf")),
    "q95-1e400": (_thresholds("1e400"), ("thresholds.json", "'q95'", "inf")),
    "q95-minus-infinity": (_thresholds("-Infinity"), ("thresholds.json", "'q95'", "-inf")),
}


@pytest.mark.parametrize("case", RUN_FILE_CASES, ids=list(RUN_FILE_CASES))
def test_13_14_damaged_run_files_are_refused_naming_file_and_key(case, fake_run, ws, capsys):
    setup, fragments = RUN_FILE_CASES[case]
    run = copy_run(fake_run, ws / "run")
    setup(run)
    data = Path(rel.image_folder(ws / "data")) / "test"
    before = rel.snapshot(ws)
    argv = [f"--model_dir={run}", f"--images={data}", f"--out={ws / 'scores.csv'}"]
    one_error(*_cmd(score.main, argv, capsys), *fragments)
    assert rel.snapshot(ws) == before


def test_14_garbage_tf_config_is_named(ws, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{garbage")
    argv = [*[f for f in rel.TINY if "strategy" not in f], f"--model_dir={ws / 'run'}"]
    before = rel.snapshot(ws)
    one_error(*_cli([*argv, "--strategy=mirrored"], capsys), "TF_CONFIG", "not valid JSON")
    assert rel.snapshot(ws) == before


# ============================================================================= stale views
def test_16_report_refuses_thumbnails_of_changed_test_images(folder_run, ws, capsys):
    root, run_src = folder_run
    data = shutil.copytree(root, ws / "data")
    run = copy_run(run_src, ws / "run", root=str(data))
    no_error(*_cmd(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    assert (run / "report_files" / "img_0_0.png").exists()  # same data: thumbnails
    target = data / "test" / "good" / "0.png"
    png(target, 255 - np.asarray(Image.open(target)))  # same count, labels and size
    before = rel.snapshot(ws)
    no_error(*_cmd(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    page = (run / "report.html").read_text()
    assert "the test images changed since the run" in page
    assert not list((run / "report_files").glob("img_*.png"))
    unchanged({k: v for k, v in before.items() if "report" not in k}, ws)


def test_16_cache_notices_content_rewritten_with_size_and_mtime_kept(ws):
    root = folder_data(ws / "data", train=4, test=2)
    target = root / "train" / "good" / "x.bmp"  # BMP: same pixel size, same file size
    Image.fromarray(pixels(801)).save(target)
    cache = ws.parent / "cache16"

    def load():
        return datasets.load_one_class(
            "folder", root=str(root), category="good", input_shape=(16, 16, 3),
            cache_dir=str(cache),
        )  # fmt: skip

    first = load()
    st = os.stat(target)
    Image.fromarray(pixels(802)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(target).st_size == st.st_size and os.stat(target).st_mtime_ns == st.st_mtime_ns
    again = load()
    i = next(i for i, x in enumerate(first.train_x) if np.array_equal(x, pixels(801)))
    np.testing.assert_array_equal(again.train_x[i], pixels(802))  # not the stale decode


def test_16_sweep_links_are_relative_and_zero_size_images_are_refused(fake_run, ws, capsys):
    sweep = ws / "sweep"
    run = copy_run(fake_run, sweep / "javascript:alert(1)")
    no_error(*_cmd(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    no_error(*_cmd(report.main, [f"--model_dir={sweep}"], capsys))
    page = (sweep / "report.html").read_text()
    assert 'href="./javascript%3Aalert%281%29/report.html"' in page
    assert 'href="javascript' not in page
    det = detector_lib.Detector.load(fake_run)
    with pytest.raises(detector_lib.DetectorError, match=r"H and W at least 1.*\(1, 0, 0, 3\)"):
        det.score(np.zeros((1, 0, 0, 3), np.uint8))
