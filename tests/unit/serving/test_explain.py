"""Explanations: TF scores, integrated-gradients completeness, Grad-CAM maps and the CLI."""

from __future__ import annotations

import glob
import os

import conftest
import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class.serving import explain, explain_run

IDX = [0, 1, 16, 17]


def _train_rotation_run(path) -> str:
    from deep_representation_one_class import resolve
    from deep_representation_one_class.training import runner

    cfg = resolve.build(
        method="rotation",
        dataset="fake",
        category="0",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        num_epoch=1,
        strategy="default",
        model_dir=str(path),
        classifiers=("kde", "gde"),
        report=False,
    )
    runner.run(cfg)
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train_rotation_run(tmp_path_factory.mktemp("rotation_run"))


@pytest.fixture(scope="module")
def arrays(run_dir):
    with np.load(os.path.join(run_dir, "embeddings.npz")) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def images(run_dir):
    from deep_representation_one_class.serving.detector import read_run_config
    from deep_representation_one_class.training import build

    x = build.load_data(read_run_config(run_dir)).test_x
    # Two inliers and two outliers of the fake test set (16 of each).
    return x[IDX].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def kde(run_dir):
    return explain.Explainer(run_dir, "kde")


@pytest.fixture(scope="module")
def gde(run_dir):
    return explain.Explainer(run_dir, "gde")


@pytest.fixture(scope="module")
def dscore(run_dir):
    return explain.Explainer(run_dir, "dscore")


def test_tf_scores_equal_the_evaluation_scores(kde, dscore, arrays, images):
    from deep_representation_one_class.evaluation import scorers

    want_kde = kde.detector.score_features(arrays["test_pool"][IDX])["kde"]
    np.testing.assert_allclose(kde.scores(images), want_kde, rtol=1e-5)
    want_d = scorers.rotation_scores(arrays["test_view_logits"][:, IDX])["dscore"]
    np.testing.assert_allclose(dscore.scores(images), want_d, rtol=1e-4)


def _completeness_error(info):
    delta = info["score"] - info["baseline_score"]
    return np.abs(info["attribution_sum"] - delta), np.abs(delta)


def test_integrated_gradients_completeness(dscore, gde, images):
    attrs, info = dscore.integrated_gradients(images, steps=64, baseline="black")
    assert attrs.shape == images.shape
    err, delta = _completeness_error(info)
    assert delta.min() > 1.0  # a real change of score along the path
    assert (err <= 0.03 * delta).all(), (err, delta)
    assert explain.completeness_gap(info) <= 0.03
    # GDE of the one-epoch model is steep near black images; along the path from a blurred
    # copy it is smooth. Relative error is only meaningful where the score really changes.
    attrs, info = gde.integrated_gradients(images, steps=64, baseline="blur")
    err, delta = _completeness_error(info)
    big = delta > 0.1 * delta.max()
    assert big.sum() >= 1
    assert (err[big] <= 0.05 * delta[big]).all(), (err, delta)
    # Attributions vanish where the image equals the baseline.
    zero, info0 = gde.integrated_gradients(np.zeros_like(images[:1]), steps=4)
    assert np.abs(zero).max() == 0.0 and info0["attribution_sum"][0] == 0.0


def test_blur_baseline_keeps_colour_and_removes_structure(kde, images):
    base = kde.baseline(images[0], "blur")
    assert base.shape == images[0].shape
    assert abs(base.mean() - images[0].mean()) < 0.02
    assert base.std() < images[0].std()
    with pytest.raises(explain.ExplainError, match="valid: black, blur"):
        kde.baseline(images[0], "noise")


def test_grad_cam_maps(kde, dscore, images):
    # ResNet-10: the deepest block output with 16x16 positions.
    assert explain.find_cam_layer(kde.model, (32, 32, 3)) == "conv3_b1_out"
    assert explain.find_cam_layer(kde.model, (64, 64, 3)) == "conv4_b1_out"
    for ex in (kde, dscore):
        for classic in (False, True):
            cam = ex.grad_cam(images, classic=classic)
            assert cam.shape == images.shape[:3]
            assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
            assert cam.max() == pytest.approx(1.0)  # some location raises the score


@pytest.fixture(scope="module")
def gde_resnet18(tmp_path_factory):
    """GDE on an untrained ResNet-18 (width 0.25) fit on the fake dataset's inliers."""
    from deep_representation_one_class.training import runner

    path = str(tmp_path_factory.mktemp("cam_run"))
    cfg = conftest.tiny_config(
        strategy="default", model_dir=path, classifiers=("gde",), num_epoch=0,
        net_type="resnet18", net_width=0.25, head_dims=(64, 32),
    )  # fmt: skip
    runner.run(cfg)
    return explain.Explainer(path, "gde")


@pytest.mark.parametrize("kind", ["bright", "foreign"])
def test_grad_cam_lights_the_quadrant_that_holds_the_anomaly(gde_resnet18, kind):
    # Known answer: an inlier (horizontal stripes) with one quadrant made anomalous (white, or
    # cut from an outlier: vertical stripes). The map's brightest quadrant must be that one.
    from deep_representation_one_class.training import build

    data = build.load_data(gde_resnet18.config)
    inliers = data.test_x[data.test_y == 0][:4]
    outliers = data.test_x[data.test_y == 1][:4]
    hits, classic_hits, total = 0, 0, 0
    for inlier, outlier in zip(inliers, outliers):
        batch = []
        for q in range(4):
            x = inlier.copy()
            rows, cols = (
                slice(16 * (q // 2), 16 * (q // 2) + 16),
                slice(16 * (q % 2), 16 * (q % 2) + 16),
            )
            x[rows, cols] = 255 if kind == "bright" else outlier[rows, cols]
            batch.append(x)
        batch = np.stack(batch).astype(np.float32) / 255.0
        for maps, classic in ((gde_resnet18.grad_cam(batch), False),
                              (gde_resnet18.grad_cam(batch, classic=True), True)):  # fmt: skip
            for q in range(4):
                quadrant_heat = [
                    maps[
                        q, 16 * (k // 2) : 16 * (k // 2) + 16, 16 * (k % 2) : 16 * (k % 2) + 16
                    ].mean()
                    for k in range(4)
                ]
                hit = int(np.argmax(quadrant_heat) == q)
                if classic:
                    classic_hits += hit
                else:
                    hits += hit
                    total += 1
    assert hits >= total - 1, (hits, total)  # the one-class Grad-CAM finds the quadrant
    # (The classic Grad-CAM, relative to zero activations, does not; kept for comparison.)
    assert classic_hits < hits


def test_dscore_needs_a_rotation_run(tmp_path):
    from deep_representation_one_class import resolve
    from deep_representation_one_class.utils import io

    io.write_json(str(tmp_path / "config.json"), resolve.build(dataset="fake").to_dict())
    with pytest.raises(explain.ExplainError, match="rotation classifier"):
        explain.Explainer(str(tmp_path), "dscore")


def test_cli_on_files_writes_grids_and_tensorboard(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(
        folder / "rgba.png"
    )
    before = set(glob.glob(os.path.join(run_dir, "tb", "*")))
    out = tmp_path / "out"
    args = [f"--model_dir={run_dir}", "--k=2", f"--images={folder}", f"--out={out}"]
    assert explain_run.main([*args, "--method=gradcam", "--classifier=kde"]) == 0
    names = sorted(os.listdir(out))
    assert names == [
        "kde_gradcam.png",
        "kde_gradcam_most_anomalous.png",
        "kde_gradcam_most_normal.png",
    ]
    with Image.open(out / names[1]) as img:
        w, h = img.size
    assert w > 2 * 96 and h > 3 * 96  # two columns, three rows of 96 px cells
    with Image.open(out / names[0]) as img:
        assert img.size[0] == w and img.size[1] > 2 * h
    assert set(glob.glob(os.path.join(run_dir, "tb", "*"))) - before  # a new event file
    assert "wrote" in capsys.readouterr().out
    assert explain_run.main([*args, "--classifier=svm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot explain classifier 'svm'") and len(err.splitlines()) == 1


def test_cli_on_the_test_set_with_ig(run_dir, tmp_path):
    out = tmp_path / "ig"
    rc = explain_run.main(
        [f"--model_dir={run_dir}", "--k=2", "--classifier=dscore", "--steps=8", f"--out={out}"]
    )
    assert rc == 0
    assert sorted(os.listdir(out)) == [
        "dscore_ig.png",
        "dscore_ig_most_anomalous.png",
        "dscore_ig_most_normal.png",
    ]
