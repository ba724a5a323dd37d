"""The scoring CLI on a folder of generated images (RGB, grayscale, RGBA, palette, JPEG)."""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class.serving import score


@pytest.fixture(scope="module")
def run_dir(fake_run):
    return fake_run


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from deep_representation_one_class.datasets import fake

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    horizontal = fake.make_images(2, 0, (32, 32, 3), rng)  # like the inliers
    vertical = fake.make_images(1, 1, (48, 48, 3), rng)  # an outlier, another size
    Image.fromarray(horizontal[0]).save(folder / "h0.png")
    Image.fromarray(horizontal[1][..., 0]).save(folder / "h1_gray.png")
    rgba = np.concatenate([vertical[0], np.full((48, 48, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(folder / "v_rgba.png")
    (folder / "nested").mkdir()
    Image.fromarray(horizontal[0]).convert("P").save(folder / "nested" / "h0_palette.png")
    Image.fromarray(horizontal[1]).save(folder / "nested" / "h1.jpg", quality=95)
    (folder / "README.txt").write_text("ignored")
    return folder


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_cli_writes_the_expected_csv(run_dir, image_dir, tmp_path, capsys):
    from deep_representation_one_class.serving.detector import Detector

    out = tmp_path / "scores.csv"
    rc = score.main(
        [
            f"--model_dir={run_dir}",
            f"--images={image_dir}",
            f"--out={out}",
            "--classifiers=kde,gde",
            "--threshold=q95",
        ]
    )
    assert rc == 0
    header, rows = _read_csv(out)
    assert header == ["path", "kde_score", "gde_score", "kde_anomalous", "gde_anomalous"]
    names = [os.path.relpath(r[0], image_dir) for r in rows]
    assert names == [
        "h0.png",
        "h1_gray.png",
        os.path.join("nested", "h0_palette.png"),
        os.path.join("nested", "h1.jpg"),
        "v_rgba.png",
    ]
    det = Detector.load(run_dir, ["kde", "gde"])
    images, paths = det.load_images(str(image_dir))
    assert [r[0] for r in rows] == paths
    want = det.score(images)
    for j, name in enumerate(("kde", "gde")):
        got = np.array([float(r[1 + j]) for r in rows])
        np.testing.assert_allclose(got, want[name], rtol=1e-9)
        flags = np.array([int(r[3 + j]) for r in rows])
        np.testing.assert_array_equal(flags, (want[name] >= det.threshold(name, "q95")).astype(int))
    assert "scored 5 images" in capsys.readouterr().out


def test_cli_glob_and_per_classifier_thresholds(run_dir, image_dir, tmp_path):
    out = tmp_path / "glob.csv"
    rc = score.main(
        [
            "--model_dir",
            run_dir,
            "--images",
            str(image_dir / "**" / "*.png"),
            "--out",
            str(out),
            "--classifiers=gde,kocsvm",
            "--threshold=gde=-1e9,kocsvm=1e9",
        ]
    )
    assert rc == 0
    header, rows = _read_csv(out)
    assert len(rows) == 4  # the JPEG does not match *.png
    assert all(r[header.index("gde_anomalous")] == "1" for r in rows)
    assert all(r[header.index("kocsvm_anomalous")] == "0" for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold=q97"], "neither a quantile"),
        (["--threshold=svm=q95"], "CLASSIFIER=SPEC"),
        (["--classifiers=kde,nope"], "unknown classifier 'nope'"),
    ],
)
def test_cli_one_line_errors(run_dir, image_dir, tmp_path, capsys, extra, message):
    args = [f"--model_dir={run_dir}", f"--images={image_dir}", f"--out={tmp_path / 'x.csv'}"]
    assert score.main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_cli_input_errors(run_dir, tmp_path, capsys):
    out = f"--out={tmp_path / 'x.csv'}"
    assert score.main([f"--model_dir={tmp_path}", f"--images={tmp_path}", out]) == 2
    assert "not a run folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert score.main([f"--model_dir={run_dir}", f"--images={empty}", out]) == 2
    assert "no image files" in capsys.readouterr().err
    (empty / "broken.png").write_bytes(b"\x89PNG not really")
    assert score.main([f"--model_dir={run_dir}", f"--images={empty}", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot decode image" in err and len(err.splitlines()) == 1


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "deep_representation_one_class.score", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(pathlib.Path(__file__).resolve().parents[3]),
    )
    assert proc.returncode == 0 and "--threshold" in proc.stdout
