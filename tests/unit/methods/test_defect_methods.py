"""Defect detection beyond one category: CutPaste, baselines, synthetic validation, images of
any size, user categories in the MVTec layout, and pretrained (PatchCore-style) features."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deep_representation_one_class import cli, datasets, resolve
from deep_representation_one_class import config as config_lib
from deep_representation_one_class.augment import grammar
from deep_representation_one_class.augment.cutpaste import cutpaste_image, scar_image
from deep_representation_one_class.evaluation import localization
from deep_representation_one_class.methods import imagenet, patchcore
from deep_representation_one_class.tasks import baselines, patch_dense, patch_synthetic
from deep_representation_one_class.training import build, rescore, runner

# ----------------------------------------------------------------------------- generated data

MIXED_SIZES = ((110, 620), (300, 200), (256, 256))


def _surface(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A grey, finely striped surface at one physical scale (stripe period 12 px), any size."""
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.05 * np.sin(2 * np.pi * (yy + 0.5 * xx) / 12.0 + rng.uniform(0, 2 * np.pi))
    img = 0.55 + stripes + rng.normal(0.0, 0.02, size=(h, w))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _blob(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark blob of radius 20-28 px (the same physical size in every image) and its mask."""
    h, w = img.shape
    r = int(rng.integers(20, 29))
    r = min(r, h // 2 - 2, w // 2 - 2)
    cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255
    out = img.copy()
    out[mask > 0] = 25
    return out, mask


def make_mixed_tree(root: Path, category: str = "my_part", masks: bool = True) -> Path:
    """An MVTec-layout category of grayscale images of mixed sizes (110x620, 300x200, 256x256)."""
    rng = np.random.default_rng(0)
    base = root / category

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(30):
        h, w = MIXED_SIZES[i % 3]
        save(base / "train" / "good" / f"{i:03d}.png", _surface(rng, h, w))
    for i in range(9):
        h, w = MIXED_SIZES[i % 3]
        save(base / "test" / "good" / f"{i:03d}.png", _surface(rng, h, w))
        img, mask = _blob(rng, _surface(rng, h, w))
        save(base / "test" / "blob" / f"{i:03d}.png", img)
        if masks:
            save(base / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask)
    return root


# ----------------------------------------------------------------------------- CutPaste ops


def _stripes(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([(yy * 4) % 256, (xx * 4) % 256, (yy + xx) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("op", ["cutpaste", "scar"])
def test_cutpaste_ops_are_seeded_local_and_identity_at_test_time(op):
    img = _stripes()
    train = grammar.build_view_fn(f"x,+{op}", 64, training=True)
    a = train(img, tf.constant([3, 4]))
    b = train(img, tf.constant([3, 4]))
    c = train(img, tf.constant([5, 6]))
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())  # a function of (image, seed)
    assert not np.array_equal(a[1].numpy(), c[1].numpy())
    changed = np.any(np.abs(a[1].numpy() - a[0].numpy()) > 1e-6, axis=-1)
    # A local region changed, not the whole image.
    assert 0 < changed.mean() < 0.3, changed.mean()
    test = grammar.build_view_fn(f"x,+{op}", 64, training=False)
    v = test(img, tf.constant([3, 4]))
    np.testing.assert_array_equal(v[0].numpy(), v[1].numpy())


def test_cutpaste_pastes_image_content_and_scar_is_thin():
    x = tf.constant(_stripes(), tf.float32) / 255.0
    for k in range(5):
        out = cutpaste_image(x, tf.constant([k, 1])).numpy()
        diff = np.any(np.abs(out - x.numpy()) > 1e-6, -1)
        ys, xs = np.nonzero(diff)
        if len(ys):  # a rectangle: the changed pixels fill their bounding box
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            assert diff.sum() / box > 0.6
        # Without jitter the pasted values exist in the source image (no new colours).
        assert set(map(tuple, out.reshape(-1, 3)[:50])) <= set(map(tuple, x.numpy().reshape(-1, 3)))
        scar = scar_image(x, tf.constant([k, 2]), scale=1.0).numpy()
        frac = np.any(np.abs(scar - x.numpy()) > 1e-6, -1).mean()
        assert frac < 16 * 25 * 1.2 / 64**2


# ----------------------------------------------------------------------------- CutPaste method


@pytest.mark.parametrize(
    "variant,views,classes", [("3way", 3, 3), ("binary", 2, 2), ("scar", 2, 2)]
)
def test_cutpaste_variant_sets_views_and_classes(variant, views, classes):
    cfg = resolve.build(method="cutpaste", dataset="fake", cutpaste_variant=variant)
    assert len(grammar.parse(cfg.aug_list)) == views and cfg.latent_dim == classes
    assert cfg.aug_list.endswith(
        {"3way": "+cutpaste,+scar", "binary": "+cutpaste"}.get(variant, "+scar")
    )


def test_cutpaste_config_errors_are_one_line():
    with pytest.raises(config_lib.ConfigError, match="unknown --cutpaste_variant 'five'"):
        resolve.build(method="cutpaste", dataset="fake", cutpaste_variant="five")
    with pytest.raises(config_lib.ConfigError, match="needs --aug_list views"):
        resolve.build(method="cutpaste", dataset="fake", aug_list="x,+rotate90", latent_dim=2)
    with pytest.raises(config_lib.ConfigError, match="--latent_dim equal to the number"):
        resolve.build(method="cutpaste", dataset="fake", latent_dim=5)


def test_cutpaste_learns_to_spot_pastes_at_image_level(tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(
        "cutpaste",
        strategy="default",
        num_epoch=0,
        train_steps=60,
        batch_size=16,
        model_dir=str(tmp_path / "run"),
        classifiers=("gde", "kde"),
    )
    result = runner.run(cfg)
    assert result.status == "complete" and "pool.gde" in result.metrics
    accs = []
    tb = tmp_path / "run" / "tb"
    for name in sorted(p.name for p in tb.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(tb / name)):
            for v in event.summary.value:
                if v.tag == "train/acc":
                    accs.append(float(tf.make_ndarray(v.tensor)))
    # Three-way classification: chance is 1/3; it must learn something in 60 steps.
    assert accs and accs[-1] > 0.45, accs


# ----------------------------------------------------------------------------- any size


def test_resize_policies_keep_aspect_and_geometry(tmp_path):
    root = make_mixed_tree(tmp_path / "data")
    shape = (128, 128, 1)
    data = datasets.load_one_class(
        "mvtec", root=str(root), category="my_part", input_shape=shape, cache_dir="",
        resize_policy="same_scale",
    )  # fmt: skip
    scale = 128 / 620
    want = {(round(h * scale), round(w * scale)) for h, w in MIXED_SIZES}
    assert {tuple(s) for s in data.train_sizes} == want
    assert {tuple(s) for s in data.test_sizes} == want
    for img, mask, (h, w) in zip(data.test_x, data.test_masks, data.test_sizes):
        assert not mask[h:].any() and not mask[:, w:].any()  # masks follow the geometry
        if mask.any():  # the mask covers the dark blob of the resized image
            assert img[mask > 0].mean() < 60 < img[:h, :w][mask[:h, :w] == 0].mean()
    fit = datasets.load_one_class(
        "mvtec", root=str(root), category="my_part", input_shape=shape, cache_dir="",
        resize_policy="fit",
    )  # fmt: skip
    assert {tuple(s) for s in fit.train_sizes} == {(23, 128), (128, 85), (128, 128)}
    squash = datasets.load_one_class(
        "mvtec", root=str(root), category="my_part", input_shape=shape, cache_dir=""
    )
    assert squash.train_sizes is None and squash.test_sizes is None


def test_valid_windows_aggregate_and_pixel_metrics_ignore_padding():
    ys = xs = np.array([0, 8, 16, 24])
    valid = patch_dense.valid_windows(np.array([[16, 32], [4, 4]]), 2, ys, xs, 8)
    assert valid[0].sum() == 2 * 4 and valid[0][:2].all()
    assert valid[1, 0, 0] and valid[1].sum() == 1  # content smaller than a stride
    s = np.zeros((2, 4, 4))
    s[0, 3, 3] = 9.0  # a high score in the padding must not decide the image score
    np.testing.assert_allclose(patch_dense.aggregate(s, "max", valid), [0.0, 0.0])
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[0, 2:6, 2:6] = 1
    maps = rng.normal(size=(2, 32, 32))
    pix = patch_dense.valid_pixels(np.array([[16, 32], [32, 32]]), (32, 32))
    got = localization.localization_metrics(masks, maps, valid=pix)
    crop = localization.localization_metrics(
        np.concatenate([masks[0, :16].reshape(-1), masks[1].reshape(-1)])[None],
        np.concatenate([maps[0, :16].reshape(-1), maps[1].reshape(-1)])[None],
    )
    assert got["pixel_auroc"] == pytest.approx(crop["pixel_auroc"])


@pytest.mark.slow  # two runs, about 18 s
@pytest.mark.parametrize("with_masks", [True, False])
def test_mixed_size_user_category_defects_are_found(tmp_path, with_masks):
    root = make_mixed_tree(tmp_path / "data", masks=with_masks)
    cfg = resolve.build(
        method="cutpaste",
        dataset="mvtec",
        category="my_part",
        root=str(root),
        input_shape=(128, 128, 1),
        cache_dir="",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16,),
        batch_size=16,
        train_steps=20,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        patch_size=16,
        patch_stride=8,
        patch_bank=1500,
        smooth_sigma=2.0,
        synthetic_holdout=6,
    )
    assert cfg.resize_policy == "same_scale"
    result = runner.run(cfg)
    m = result.metrics
    # A dark blob on a grey surface: found by every feature set, learnt or not.
    assert max(m["pool.gde"], m["pool.kde"]) > 90, m
    assert m["baseline_pixels.gde"] > 90 and m["baseline_random.pool.kde"] > 80, m
    assert 0 <= m["synthetic.pool.gde"] <= 100 and "synthetic.pool.gde.blur" in m
    if with_masks:
        assert m["pool.kde.pixel_auroc"] > 85 and m["baseline_pixels.gde.pixel_auroc"] > 85, m
    else:
        assert not any(k.endswith((".pixel_auroc", ".pro")) for k in m), m
    emb = np.load(tmp_path / "run" / "embeddings.npz")
    assert emb["test_sizes"].shape == (18, 2)
    if with_masks:  # a patch run is re-evaluated from its checkpoint, identically
        again = rescore.evaluate_run(str(tmp_path / "run"), reextract=True)
        assert again == pytest.approx(m)
        with pytest.raises(config_lib.ConfigError, match="add --reextract"):
            rescore.evaluate_run(str(tmp_path / "run"))
    table = cli.format_table(m)
    assert "raw pixels [baseline]" in table and "untrained pool [baseline]" in table
    assert "pool [synthetic]" in table


def test_shared_bottle_under_another_name(shared_data, tmp_path):
    bottle = shared_data / "mvtec_ad" / "bottle"
    if not (bottle / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle is absent under {bottle}")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "my_bottle").symlink_to(bottle)
    kw = dict(input_shape=(64, 64, 3), cache_dir="", resize_policy="same_scale")
    mine = datasets.load_one_class(
        "mvtec", root=str(tmp_path / "parts"), category="my_bottle", **kw
    )
    ref = datasets.load_one_class(
        "mvtec", root=str(shared_data / "mvtec_ad"), category="bottle", **kw
    )
    assert mine.category == "my_bottle" and mine.class_names == ref.class_names
    np.testing.assert_array_equal(mine.test_x, ref.test_x)
    np.testing.assert_array_equal(mine.test_masks, ref.test_masks)
    assert mine.test_sizes is None  # square images fill the canvas: nothing is padded


# ----------------------------------------------------------------------------- synthetic set


def test_hold_out_and_synthetic_anomalies():
    kept, out = patch_synthetic.hold_out(50, 16, seed=3)
    assert len(out) == 10 and len(kept) == 40 and not set(kept) & set(out)
    np.testing.assert_array_equal(out, patch_synthetic.hold_out(50, 16, seed=3)[1])
    assert len(patch_synthetic.hold_out(6, 16, 0)[1]) == 0  # too few images: no hold-out
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (4, 48, 48, 3)).astype(np.uint8)
    sizes = np.array([[48, 48], [30, 48], [48, 20], [48, 48]])
    s = patch_synthetic.synthesize(imgs, sizes, seed=1)
    assert len(s.x) == 4 * 7 and s.y.sum() == 24 and list(s.kind[:4]) == ["normal"] * 4
    np.testing.assert_array_equal(s.x[:4], imgs)
    for m, k, (h, w) in zip(s.masks[4:], s.kind[4:], s.sizes[4:]):
        assert m.any() and not m[h:].any() and not m[:, w:].any(), k
    again = patch_synthetic.synthesize(imgs, sizes, seed=1)
    np.testing.assert_array_equal(s.x, again.x)


def test_coreset_covers_every_cluster_and_pixel_embedder():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:5] * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (200, 8)) for c in centres])
    keep = patch_dense.coreset(x, 5, seed=0)
    assert sorted({int(i) // 200 for i in keep}) == [0, 1, 2, 3, 4]
    windows = rng.integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    feats = baselines.pixel_embedder(32)(windows)["pixels"]
    assert feats.shape == (3, 8 * 8 * 3)
    np.testing.assert_allclose(
        feats[0, :3], windows[0, :4, :4].mean(axis=(0, 1)) / 255 - 0.5, atol=1e-6
    )


# ----------------------------------------------------------------------------- pretrained


@pytest.fixture(scope="module")
def r50_weights(tmp_path_factory):
    """Random ResNet-50 no-top weights written by the test, standing in for ImageNet's."""
    path = tmp_path_factory.mktemp("w") / "r50.weights.h5"
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(str(path))
    return str(path)


@pytest.mark.parametrize("method", ["imagenet", "patchcore"])
def test_pretrained_fails_fast_offline_without_weights(method):
    t0 = time.time()
    with pytest.raises(
        config_lib.ConfigError, match=r"needs --imagenet_weights=PATH .* unreachable"
    ):
        resolve.build(
            method=method, dataset="mvtec", category="bottle", backbone="resnet50_imagenet"
        )
    assert time.time() - t0 < 5


def test_pretrained_weight_sources(monkeypatch, r50_weights, tmp_path):
    assert imagenet.resolve_weights(r50_weights, "imagenet") == r50_weights
    monkeypatch.setattr(imagenet, "is_online", lambda *a, **k: True)
    assert imagenet.resolve_weights(None, "imagenet") == "imagenet"  # Keras downloads it
    cached = tmp_path / "models" / imagenet.WEIGHTS_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.undo()  # back to the offline probe and the real cache lookup
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(imagenet, "is_online", lambda *a, **k: False)
    assert imagenet.resolve_weights(None, "imagenet") == str(cached)


def test_patchcore_patch_run_from_a_local_weights_file(tmp_path, r50_weights):
    root = make_mixed_tree(tmp_path / "data")
    cfg = resolve.build(
        method="patchcore",
        dataset="mvtec",
        category="my_part",
        root=str(root),
        input_shape=(96, 96, 1),
        cache_dir="",
        imagenet_weights=r50_weights,
        pretrained_size=32,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        patch_size=32,
        patch_stride=16,
        patch_bank=400,
        baselines=False,
    )
    assert (cfg.train_steps, cfg.patch_coreset, cfg.classifiers) == (0, 0.1, ("auc",))
    model = build.make_model(cfg)
    out = model(np.zeros((2, 32, 32, 1), np.float32))
    assert out["pools"].shape == (2, 1536)
    result = runner.run(cfg)
    assert result.status == "complete" and 0 <= result.metrics["pool.auc"] <= 100
    clf = json.loads((tmp_path / "run" / "classifiers.json").read_text())
    assert clf  # the coreset bank's classifiers are saved with the run
    assert patchcore.LAYERS[0] in {layer.name for layer in model.get_layer("resnet50_mid").layers}


# ----------------------------------------------------------------------------- user folders


def test_folder_runs_report_baselines_and_warn_about_squashing(tmp_path, caplog):
    root = make_mixed_tree(tmp_path / "data") / "my_part"  # train/good, test/{good,blob}
    cfg = resolve.build(
        method="contrastive",
        dataset="folder",
        category="good",
        root=str(root),
        input_shape=(32, 32, 1),
        cache_dir="",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        train_steps=2,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("kde", "gde"),
    )
    assert cfg.baselines and cfg.resize_policy == "squash"
    with caplog.at_level("WARNING"):
        m = runner.run(cfg).metrics
    assert "aspect ratios (h/w) range 0.18-1.50 but are squashed to 32x32" in caplog.text
    for key in ("baseline_pixels.kde", "baseline_pixels.gde", "baseline_random.pool.kde"):
        assert 0 <= m[key] <= 100, m
    # A large dark blob: 16x16 thumbnails of the pixels find it.
    assert m["baseline_pixels.kde"] > 80, m
    # Image level too: 6 of the 30 normal training images held out for the synthetic check.
    assert cfg.synthetic_holdout == 16 and 0 <= m["synthetic.pool.kde"] <= 100, m
    assert {"synthetic.pool.gde.stain", "synthetic.embed.kde.hole"} <= set(m), sorted(m)
    caplog.clear()
    with caplog.at_level("WARNING"):
        datasets.load_one_class(
            "folder", root=str(root), category="good", input_shape=(32, 32, 1), cache_dir="",
            resize_policy="fit",
        )  # fmt: skip
    assert "squashed" not in caplog.text


# ----------------------------------------------------------------------------- selection study


def _summary(folder: Path, metrics: dict) -> None:
    folder.mkdir(parents=True)
    run = {"complete": True, "train_seconds": 10.0}
    (folder / "summary.json").write_text(json.dumps({"metrics": metrics, "run": run}))


def test_selection_report_ranks_synthetic_against_real(tmp_path):
    from deep_representation_one_class.reports import selection

    for name, real, syn in (("a", 90.0, 80.0), ("b", 70.0, 60.0), ("c", 80.0, 75.0)):
        m = {}
        for f in ("pool", "embed"):
            for c in ("gde", "kde", "auc"):
                m[f"{f}.{c}"], m[f"synthetic.{f}.{c}"] = real, syn
        if name == "a":
            m.update({"baseline_pixels.auc": 50.0, "synthetic.baseline_pixels.auc": 55.0})
        _summary(tmp_path / "runs" / name, m)
    rows = selection.candidates(str(tmp_path / "runs"))
    assert len(rows) == 3 * 6 + 1 and {"raw pixels [baseline]"} <= {r["recipe"] for r in rows}
    rk = selection.ranking(rows)
    assert rk["spearman"] > 0.99 and rk["concordant_pairs"] == 100.0 and rk["pick_real"] == 90.0
    assert selection.main([str(tmp_path / "runs"), "--out", str(tmp_path / "sel")]) == 0
    text = (tmp_path / "sel.md").read_text()
    assert "Spearman 1.00" in text and (tmp_path / "sel.csv").read_text().startswith("recipe,")


def test_defect_selection_script_dry_run():
    import subprocess

    script = Path(__file__).resolve().parents[3] / "scripts" / "defect_selection.sh"
    out = subprocess.run(
        ["bash", str(script), "--root=/data/mvtec", "--dry_run"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert len(out) == 7 and all("--dataset=mvtec" in line for line in out)
    assert sum("--baselines=false" in line for line in out) == 6
