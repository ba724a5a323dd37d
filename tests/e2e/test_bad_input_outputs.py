"""The bad-input matrix, continued: files lost, overwritten or left unusable, damaged run
files and stale views (issue 22, cases 6-11, 13, 14, 16).

Each case runs the real command in-process on a fresh workspace and asserts the exit status,
ONE ``error:`` line naming the culprit (none where the right outcome is success), and that
every file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path

import _reliability as rel
import numpy as np
import pytest
from _defects import (
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
from conftest import tiny_config
from PIL import Image

from deep_representation_one_class import cli, datasets
from deep_representation_one_class.reports import aggregate, report
from deep_representation_one_class.serving import detector as detector_lib
from deep_representation_one_class.serving import explain_run, export, score
from deep_representation_one_class.training import run_dir


# ============================================================================= files
def test_6_report_never_deletes_a_users_page_and_switches_at_the_end(fake_run, ws, capsys):
    (ws / "report.html").write_text("<html>my own notes</html>")
    (ws / "report_files").mkdir()
    (ws / "report_files" / "figure.svg").write_text("<svg/>")
    copy_run(fake_run, ws / "runs" / "r1")
    before = rel.snapshot(ws)
    one_error(*command(report.main, [f"--model_dir={ws}"], capsys), "report.html", "not written")
    assert rel.snapshot(ws) == before
    os.rename(ws / "report.html", ws / "notes.html")
    before = rel.snapshot(ws)
    one_error(*command(report.main, [f"--model_dir={ws}"], capsys), "report_files", "not written")
    assert rel.snapshot(ws) == before


def test_6_a_failed_rewrite_keeps_the_old_report_and_its_figures(fake_run, ws, capsys, monkeypatch):
    run = copy_run(fake_run, ws / "run")
    no_error(*command(report.main, [f"--model_dir={run}", "--k=1"], capsys))
    assert (run / "report_files" / "img_0_0.png").exists()
    before = rel.snapshot(ws)

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report.plots, "write_run_plots", disk_full)
    one_error(
        *command(report.main, [f"--model_dir={run}", "--k=1"], capsys),
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
    one_error(*command(export.main, argv, capsys), "lies inside --out", "delete the run")
    assert rel.snapshot(ws) == before


def test_8_explain_and_aggregate_refuse_existing_outputs(fake_run, ws, capsys):
    run = copy_run(fake_run, ws / "run")
    (ws / "expl").mkdir()
    (ws / "expl" / "kde_ig.png").write_bytes(b"my figure")
    (ws / "P.md").write_text("my table\n")
    before = rel.snapshot(ws)
    argv = [f"--model_dir={run}", f"--out={ws / 'expl'}", "--k=1", "--steps=2"]
    one_error(*command(explain_run.main, argv, capsys), "kde_ig.png", "--overwrite")
    one_error(
        *command(aggregate.main, [ws / "run", "--out", ws / "P"], capsys), "P.md", "--overwrite"
    )
    assert rel.snapshot(ws) == before
    no_error(*command(aggregate.main, [ws / "run", "--out", ws / "P", "--overwrite"], capsys))
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
    one_error(*command(score.main, argv, capsys), "same.csv", "another command", "--overwrite")
    assert out.read_text() == "other writer\n"  # its result is kept, not lost
    unchanged(before, ws)
    assert sorted(os.listdir(ws)) == ["data", "same.csv"]  # no temporary file left
    # With --overwrite the last writer wins, and says that it replaced another's file.
    out.unlink()
    no_error(*command(score.main, [*argv, "--overwrite"], capsys))
    assert out.read_text().startswith("path,")


def test_9_disk_full_at_the_first_checkpoint_leaves_a_usable_folder(ws, capsys, monkeypatch):
    def full(self, step):
        partial = Path(self.directory) / f"ckpt-{step}_temp"
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "part-00000-of-00001").write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    (ws / "run").mkdir()  # the user's empty folder
    (ws / "kept.txt").write_text("mine")
    argv = [*rel.TINY, "--batch_size=100", "--num_epoch=1", f"--model_dir={ws / 'run'}"]
    monkeypatch.setattr(run_dir.Checkpoints, "save", full)
    before = rel.snapshot(ws)
    one_error(*cli_run(argv, capsys), "No space left on device", status=cli.EXIT_FAILURE)
    assert rel.snapshot(ws) == before  # no ckpt-N_temp/, no marker: the empty folder again
    # The same command (with or without --force_init) passes the folder checks that refused
    # it before ("not empty and not a run folder"): once there is space it runs.
    for force in (False, True):
        cfg = tiny_config(model_dir=str(ws / "run"), force_init=force)
        state = run_dir.inspect(cfg)
        assert state.exists and not state.is_run and not state.has_checkpoint


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
    no_error(*cli_run([*argv, f"--model_dir={run}"], capsys))
    assert "<img" in (run / "report.html").read_text()
    assert not (run / ".droc_lock").exists() and not debris.exists()
    unchanged(before, ws)
    # Complete with its report: a further rerun changes nothing.
    before = rel.snapshot(ws)
    no_error(*cli_run([*argv, f"--model_dir={run}"], capsys))
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
    one_error(*cli_run(argv, capsys), "inside the data root", str(root))
    assert rel.snapshot(ws) == before


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
    one_error(*command(score.main, argv, capsys), *fragments)
    assert rel.snapshot(ws) == before


def test_14_garbage_tf_config_is_named(ws, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{garbage")
    argv = [*[f for f in rel.TINY if "strategy" not in f], f"--model_dir={ws / 'run'}"]
    before = rel.snapshot(ws)
    one_error(*cli_run([*argv, "--strategy=mirrored"], capsys), "TF_CONFIG", "not valid JSON")
    assert rel.snapshot(ws) == before


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
    (run / "report.html").write_text("<html>its page</html>")  # a run with a page is linked
    no_error(*command(report.main, [f"--model_dir={sweep}"], capsys))
    page = (sweep / "report.html").read_text()
    assert 'href="./javascript%3Aalert%281%29/report.html"' in page
    assert 'href="javascript' not in page
    det = detector_lib.Detector.load(fake_run)
    with pytest.raises(detector_lib.DetectorError, match=r"H and W at least 1.*\(1, 0, 0, 3\)"):
        det.score(np.zeros((1, 0, 0, 3), np.uint8))
