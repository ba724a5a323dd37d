"""MVTec AD support: the loader and its masks, patch sampling, dense evaluation helpers, panels,
and the real trainer end to end on a generated MVTec-like folder (plus a slow real-data run)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deep_representation_one_class import datasets, resolve
from deep_representation_one_class.augment import grammar
from deep_representation_one_class.datasets import mvtec as mvtec_data
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.reports import maps as visualize
from deep_representation_one_class.tasks import patch_dense
from deep_representation_one_class.tasks import patch_eval as ev
from deep_representation_one_class.tasks import patch_grid as patches
from deep_representation_one_class.training import runner

SIZE = 64


# ----------------------------------------------------------------------------- fixture data


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain, slightly noisy fabric-like texture: faint diagonal stripes plus pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = 0.04 * np.sin(2 * np.pi * (yy + xx) / 8.0 + rng.uniform(0, 2 * np.pi))
    base = np.array([0.55, 0.5, 0.45]) + rng.uniform(-0.03, 0.03, size=3)
    img = base + stripes[..., None] + rng.normal(0.0, 0.03, size=(size, size, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _paste_defect(rng: np.random.Generator, img: np.ndarray, kind: str):
    """Pastes a synthetic defect; returns (image, 0/255 mask)."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    if kind == "stain":  # a dark red blob
        side = int(rng.integers(8, 14))
        y, x = rng.integers(2, size - side - 2, size=2)
        yy, xx = np.mgrid[0:side, 0:side]
        blob = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (side / 2) ** 2
        mask[y : y + side, x : x + side][blob] = 255
        img[mask > 0] = (150, 20, 20)
    else:  # "scratch": a bright 3-pixel-wide line
        y, x0 = int(rng.integers(6, size - 9)), int(rng.integers(2, size // 3))
        length = int(rng.integers(size // 3, size // 2))
        mask[y : y + 3, x0 : x0 + length] = 255
        img[mask > 0] = (250, 250, 235)
    return img, mask


def make_mvtec_tree(root: Path, category: str = "tile", size: int = SIZE, seed: int = 0) -> Path:
    """Writes ``root/<category>/{train/good, test/<class>, ground_truth/<defect>}`` PNGs."""
    rng = np.random.default_rng(seed)
    base = root / category

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(24):
        save(base / "train" / "good" / f"{i:03d}.png", _texture(rng, size))
    for i in range(6):
        save(base / "test" / "good" / f"{i:03d}.png", _texture(rng, size))
    for kind in ("stain", "scratch"):
        for i in range(4):
            img, mask = _paste_defect(rng, _texture(rng, size), kind)
            save(base / "test" / kind / f"{i:03d}.png", img)
            save(base / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture
def mvtec_root(tmp_path) -> Path:
    return make_mvtec_tree(tmp_path / "mvtec")


def _load(root, **kw):
    return datasets.load_one_class(
        "mvtec", root=str(root), category="tile", input_shape=(SIZE, SIZE, 3), cache_dir="", **kw
    )


# ----------------------------------------------------------------------------- loader


def test_loader_layout_order_and_masks(mvtec_root):
    data = _load(mvtec_root)
    assert data.train_x.shape == (24, SIZE, SIZE, 3) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (14, SIZE, SIZE, 3)
    assert data.class_names == ("good", "scratch", "stain")
    # good first, then the defect folders alphabetically, files sorted inside.
    assert [Path(p).parent.name for p in data.test_paths] == ["good"] * 6 + ["scratch"] * 4 + [
        "stain"
    ] * 4
    assert data.test_y.tolist() == [0] * 6 + [1] * 8
    masks = data.test_masks
    assert masks.shape == (14, SIZE, SIZE) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    assert not masks[:6].any() and all(m.any() for m in masks[6:])
    # Masks are aligned with the images: the pasted colours sit exactly under each mask.
    for img, mask, cls in zip(data.test_x[6:], masks[6:], data.test_class[6:]):
        colour = (250, 250, 235) if data.class_names[cls] == "scratch" else (150, 20, 20)
        assert np.all(img[mask == 1] == colour)
        assert not np.all(img[mask == 0] == colour, axis=-1).any()


def test_masks_travel_with_the_data_and_match_the_mask_files(mvtec_root, tmp_path):
    data = _load(mvtec_root)
    from_files = mvtec_data.masks_for_paths(data.test_paths, (SIZE, SIZE))
    np.testing.assert_array_equal(data.test_masks, from_files)
    cached = datasets.load_one_class(
        "mvtec", root=str(mvtec_root), category="tile", input_shape=(SIZE, SIZE, 3),
        cache_dir=str(tmp_path),
    )  # fmt: skip
    again = datasets.load_one_class(
        "mvtec", root=str(mvtec_root), category="tile", input_shape=(SIZE, SIZE, 3),
        cache_dir=str(tmp_path),
    )  # fmt: skip
    np.testing.assert_array_equal(cached.test_masks, from_files)
    np.testing.assert_array_equal(again.test_masks, from_files)


def test_loader_resizes_images_and_masks_nearest(mvtec_root):
    data = datasets.load_one_class(
        "mvtec", root=str(mvtec_root), category="tile", input_shape=(32, 32, 3), cache_dir=""
    )
    masks = data.test_masks
    assert data.test_x.shape == (14, 32, 32, 3) and masks.shape == (14, 32, 32)
    assert set(np.unique(masks)) == {0, 1}


def test_loader_uses_disk_cache(mvtec_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = datasets.load_one_class(
        "mvtec",
        root=str(mvtec_root),
        category="tile",
        input_shape=(SIZE, SIZE, 3),
        cache_dir=str(cache),
    )
    assert len(list(cache.glob("mvtec-tile-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(mvtec_data.images, "decode_image", no_decoding)
    second = datasets.load_one_class(
        "mvtec",
        root=str(mvtec_root),
        category="tile",
        input_shape=(SIZE, SIZE, 3),
        cache_dir=str(cache),
    )
    np.testing.assert_array_equal(first.test_x, second.test_x)


def test_categories_are_open_and_official_names_canonical(mvtec_root):
    spec = datasets.DATASETS.get("mvtec")
    assert spec.categories is None and len(mvtec_data.CATEGORIES) == 15
    assert datasets.validate_category("mvtec", "Metal Nut") == "metal_nut"
    assert datasets.validate_category("mvtec", "my_part") == "my_part"
    with pytest.raises(datasets.DataError, match=r"my_part does not exist \(found in .*: tile\)"):
        datasets.load_one_class("mvtec", root=str(mvtec_root), category="my_part", cache_dir="")


@pytest.mark.parametrize(
    "breakage,expected",
    [
        ("root", "root .* does not exist"),
        ("train", "train/good is missing"),
        ("gt_folder", "ground_truth/stain is missing"),
        ("mask_file", "ground_truth/stain/001_mask.png"),
    ],
)
def test_layout_errors_name_the_expected_path(mvtec_root, breakage, expected):
    base = mvtec_root / "tile"
    if breakage == "root":
        root = mvtec_root / "elsewhere"
    else:
        root = mvtec_root
        if breakage == "train":
            for p in (base / "train" / "good").iterdir():
                p.unlink()
            (base / "train" / "good").rmdir()
        elif breakage == "gt_folder":
            for p in (base / "ground_truth" / "stain").iterdir():
                p.unlink()
            (base / "ground_truth" / "stain").rmdir()
        else:
            (base / "ground_truth" / "stain" / "001_mask.png").unlink()
    with pytest.raises(datasets.DataError, match=expected):
        _load(root)


def test_no_validation_mode(mvtec_root):
    with pytest.raises(datasets.DataError, match="validation"):
        _load(mvtec_root, is_validation=True)


# ----------------------------------------------------------------------------- patches


def _coordinate_image(size: int = 40) -> np.ndarray:
    """Channel 0 encodes the row, channel 1 the column, so a window reveals its position."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([yy * 5, xx * 5, np.full_like(yy, 7)], axis=-1).astype(np.uint8)


def test_patch_view_fn_one_window_shared_by_all_views():
    cfg = resolve.build(dataset="mvtec", category="tile", patch_size=16)
    views = grammar.parse("x,+")  # two un-augmented copies of the same window
    fn = patches.patch_view_fn(views, cfg)
    img = tf.constant(_coordinate_image())
    corners = set()
    for k in range(12):
        a, b = fn(img, tf.constant([3, k], tf.int32))
        assert a.shape == b.shape == (16, 16, 3) and a.dtype == tf.float32
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        rows = np.rint(a.numpy()[:, 0, 0] * 255 / 5).astype(int)
        cols = np.rint(a.numpy()[0, :, 1] * 255 / 5).astype(int)
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)  # a contiguous window
        assert 0 <= rows[0] <= 40 - 16 and 0 <= cols[0] <= 40 - 16
        corners.add((rows[0], cols[0]))
    assert len(corners) > 6  # positions vary with the seed
    again = fn(img, tf.constant([3, 0], tf.int32))[0]
    np.testing.assert_array_equal(again.numpy(), fn(img, tf.constant([3, 0], tf.int32))[0].numpy())


def test_patch_view_fn_augments_each_view_and_runs_in_tf_data():
    cfg = resolve.build(dataset="mvtec", category="tile", patch_size=16)
    fn = patches.patch_view_fn(grammar.parse("cnr0.5+hflip+gray0.5,+"), cfg)
    ds = tf.data.Dataset.from_tensors(_coordinate_image()).repeat(4)
    ds = ds.enumerate().map(lambda i, im: fn(im, tf.stack([tf.cast(i, tf.int32), 1])))
    for a, b in ds:
        assert a.shape == b.shape == (16, 16, 3)
        assert float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 1.0
    assert not np.allclose(a.numpy(), b.numpy())  # independent augmentations


def test_grid_positions_cover_the_image():
    ys, xs = patches.grid_positions(30, 40, 16, 8)
    assert ys.tolist() == [0, 8, 14] and xs.tolist() == [0, 8, 16, 24]
    with pytest.raises(ValueError, match="patch_size"):
        patches.grid_positions(12, 40, 16, 8)


def test_gather_patches_equals_slicing():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 20, 24, 3), dtype=np.uint8)
    idx, ys, xs = np.array([0, 2, 1]), np.array([0, 4, 8]), np.array([3, 0, 12])
    got = patches.gather_patches(images, idx, ys, xs, 8)
    for k in range(3):
        np.testing.assert_array_equal(got[k], images[idx[k], ys[k] : ys[k] + 8, xs[k] : xs[k] + 8])


# ----------------------------------------------------------------------------- evaluation parts


def test_parse_agg_and_aggregate():
    s = np.array([[1.0, 5.0, 3.0, 2.0], [0.0, 0.0, 0.0, 4.0]])
    np.testing.assert_allclose(ev.aggregate(s, "max"), [5.0, 4.0])
    np.testing.assert_allclose(ev.aggregate(s, "mean"), [2.75, 1.0])
    np.testing.assert_allclose(ev.aggregate(s, "top2"), [4.0, 2.0])
    np.testing.assert_allclose(ev.aggregate(s, "top9"), [2.75, 1.0])  # K capped at n
    for bad in ("top", "top0", "median"):
        with pytest.raises(ev.PatchEvalError, match="patch_agg"):
            ev.parse_agg(bad)


def test_anomaly_maps_average_covering_windows():
    rng = np.random.default_rng(1)
    ys, xs = patches.grid_positions(20, 18, 8, 5)
    scores = rng.normal(size=(2, len(ys), len(xs)))
    got = patches.anomaly_maps(scores, ys, xs, 8, (20, 18), sigma=0.0)
    want = np.zeros((2, 20, 18))
    for t in range(2):
        total, count = np.zeros((20, 18)), np.zeros((20, 18))
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                total[y : y + 8, x : x + 8] += scores[t, i, j]
                count[y : y + 8, x : x + 8] += 1
        want[t] = total / count
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    smooth = patches.anomaly_maps(scores, ys, xs, 8, (20, 18), sigma=2.0)
    assert smooth.std() < got.std()


def test_sample_bank_is_seeded_and_distinct():
    ys, xs = patches.grid_positions(32, 32, 8, 4)
    a = ev.sample_bank(5, ys, xs, 100, seed=3)
    b = ev.sample_bank(5, ys, xs, 100, seed=3)
    c = ev.sample_bank(5, ys, xs, 100, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    assert len({(i, y, x) for i, y, x in zip(*a)}) == 100
    everything = ev.sample_bank(2, ys, xs, 10**6, seed=0)  # capped at all windows
    assert len(everything[0]) == 2 * len(ys) * len(xs)


def test_patch_scorers_selection():
    assert ev.patch_scorers(("auc", "kde", "gde", "kocsvm", "locsvm")) == ("auc", "kde", "gde")
    assert ev.patch_scorers(("nn_cosine", "gde")) == ("auc", "gde")
    assert ev.patch_scorers(("kocsvm",)) == ("gde", "kde")


@pytest.mark.parametrize("kind", ["kde", "auc"])
def test_fast_similarity_scores_match_registry(kind):
    rng = np.random.default_rng(2)
    bank, test = rng.normal(size=(700, 24)), rng.normal(size=(1100, 24))
    ref = scorers_lib.make_scorer(kind).fit(bank)
    fast = ev._SimilarityScorer(kind, ref)
    want = ref.score(test)
    np.testing.assert_allclose(fast.score(test), want, rtol=1e-4, atol=1e-4 * np.ptp(want))


def test_panel_and_png(tmp_path):
    img = np.full((24, 24, 3), 100, np.uint8)
    mask = np.zeros((24, 24), np.uint8)
    mask[5:10, 5:10] = 1
    amap = np.linspace(0, 1, 24 * 24).reshape(24, 24)
    panel = visualize.render_panel(img, mask, amap, 0.0, 1.0, "x")
    assert panel.shape[1] == 4 * 24 + 16 + 2 and panel.dtype == np.uint8
    ends = visualize.apply_colormap(np.array([0.0, 1.0]), 0, 1)
    np.testing.assert_array_equal(ends, [[0, 0, 128], [128, 0, 0]])
    assert visualize.mask_outline(mask).sum() == 16  # the border of a 5x5 square
    path = tmp_path / "p.png"
    visualize.save_png(path, panel)
    assert np.array_equal(np.asarray(Image.open(path)), panel)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary left behind


# ----------------------------------------------------------------------------- end to end


def _tb_tags(tb_dir: str) -> set[str]:
    tags = set()
    for name in os.listdir(tb_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tb_dir, name)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_train_and_localise_synthetic_defects(mvtec_root, tmp_path):
    cfg = resolve.build(
        method="contrastive",
        dataset="mvtec",
        category="tile",
        root=str(mvtec_root),
        input_shape=(SIZE, SIZE, 3),
        cache_dir="",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=16,
        num_epoch=1,
        num_batch=3,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("gde", "kde", "auc", "locsvm"),
        patch_size=16,
        patch_stride=4,
        patch_bank=1500,
        smooth_sigma=2.0,
        eval_batch_size=512,
    )
    result = runner.run(cfg)
    assert result.status == "complete"
    run_dir = Path(cfg.model_dir)
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    expected = {
        f"{f}.{c}{s}"
        for f in ("pool", "embed")
        for c in ("gde", "kde", "auc")
        for s in ("", *(f".{kind}" for kind in patch_dense.METRIC_KINDS))
    }
    # The image AUROC of each defect type of the generated data, per feature and scorer.
    types = {k.rsplit(".", 1)[1] for k in metrics if ".image_auroc." in k}
    assert types and not types & {"good", "image_auroc"}
    expected |= {
        f"{f}.{c}.image_auroc.{t}"
        for f in ("pool", "embed")
        for c in ("gde", "kde", "auc")
        for t in types
    }
    own = {k for k in metrics if not k.startswith(("synthetic.", "baseline_"))}
    assert own == expected  # locsvm is skipped on patches
    # The PR metrics are for the test set only, not the baselines or the synthetic check.
    assert not [k for k in metrics if k.startswith(("synthetic.", "baseline_")) and "aupr" in k]
    # Every defect run also reports its baselines and the synthetic-anomaly check.
    for key in ("baseline_pixels.gde.pixel_auroc", "baseline_random.pool.kde.pro"):
        assert key in metrics, sorted(metrics)
    for key in ("synthetic.pool.gde", "synthetic.pool.gde.noise", "synthetic.baseline_pixels.kde"):
        assert key in metrics, sorted(metrics)
    assert metrics["pool.gde"] == metrics["pool.gde.image_auroc"]
    for value in metrics.values():
        assert 0.0 <= value <= 100.0
    # The pasted defects are obvious: localisation must be far above chance (50 / 15 for PRO).
    assert metrics["pool.kde.pixel_auroc"] > 90, metrics
    assert metrics["pool.auc.pixel_auroc"] > 90, metrics
    assert metrics["pool.kde.pro"] > 60, metrics
    assert metrics["pool.kde"] > 90, metrics
    panels = sorted(p.name for p in (run_dir / "maps").iterdir())
    assert len(panels) == 14 and "stain_000.png" in panels and "good_005.png" in panels
    emb = np.load(run_dir / "embeddings.npz")
    assert emb["pool_gde_anomaly_map"].shape == (14, SIZE, SIZE)
    assert emb["pool_gde_anomaly_map"].dtype == np.float16
    assert emb["pool_kde_patch_scores"].shape == (14, 13, 13)
    assert emb["test_masks"].shape == (14, SIZE, SIZE)
    assert "mvtec/anomaly_maps_pool_gde" in _tb_tags(str(run_dir / "tb"))
    # The run's report: the image / pixel / PRO table and image | mask | map | overlay panels of
    # the most anomalous and most normal test images, ranked by the mapped scorer.
    page = (run_dir / "report.html").read_text()
    assert "pixel AUROC" in page and f"{metrics['pool.kde.pro']:.2f}" in page
    panels = sorted((run_dir / "report_files").glob("panel_*.png"))
    assert [p.name for p in panels][:2] == ["panel_0_0.png", "panel_0_1.png"] and len(panels) == 8
    worst = int(np.argmax(emb["pool_gde_image_score"]))
    assert f"image score {emb['pool_gde_image_score'][worst]:.4g}" in page
    with Image.open(panels[0]) as img:
        assert img.size == (4 * SIZE + 18, SIZE + 14)  # 4 tiles + colour bar, title strip


@pytest.mark.slow
def test_real_bottle_short_run(shared_data, tmp_path):
    root = shared_data / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle is absent under {root}")
    cfg = resolve.build(
        method="contrastive",
        dataset="mvtec",
        category="bottle",
        root=str(root),
        input_shape=(256, 256, 3),
        cache_dir=str(tmp_path / "cache"),
        net_type="resnet18",
        net_width=0.25,
        head_dims=(512, 512, 128),
        batch_size=32,
        learning_rate=0.01,
        num_epoch=1,
        num_batch=200,
        strategy="default",
        model_dir=str(tmp_path / "run"),
        classifiers=("gde", "kde", "auc"),
        patch_stride=16,
        patch_bank=2000,
        precision="float32",
    )
    result = runner.run(cfg)
    m = result.metrics
    assert len(list((tmp_path / "run" / "maps").glob("*.png"))) == 83
    # Even briefly trained patch features detect and localise bottle defects well above chance.
    assert m["pool.auc"] > 80 and m["pool.auc.pixel_auroc"] > 80 and m["pool.auc.pro"] > 40, m


# ----------------------------------------------------------------------------- report and script


def _fake_summary(folder: Path, method: str, category: str, seed: int, image: float, **kw):
    folder.mkdir(parents=True)
    metrics = {"pool.gde": image, "pool.gde.image_auroc": image}
    metrics.update({f"pool.gde.{k}": v for k, v in kw.items()})
    summary = {
        "metrics": metrics,
        "config": {
            "dataset": "mvtec",
            "method": method,
            "category": category,
            "seed": seed,
            "distaug_type": "1",
        },
        "run": {"complete": True},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_report_table_means_over_seeds_and_categories(tmp_path):
    from deep_representation_one_class.reports import mvtec_table as report

    runs = tmp_path / "runs"
    _fake_summary(runs / "a" / "s0", "contrastive", "bottle", 0, 90.0, pixel_auroc=80.0, pro=60.0)
    _fake_summary(runs / "a" / "s1", "contrastive", "bottle", 1, 94.0, pixel_auroc=84.0, pro=70.0)
    _fake_summary(runs / "b" / "s0", "contrastive", "carpet", 0, 70.0, pixel_auroc=60.0, pro=50.0)
    table = report.collect(str(runs))
    md = report.render_markdown(table, "pool.gde")
    # Runs without AUPR/F1-max (evaluated by an older version) show "–" there.
    assert "| bottle | 92.0 ± 2.8 | 82.0 ± 2.8 | 65.0 ± 7.1 | – | – | – | – | 2 |" in md
    assert "| carpet | 70.0 | 60.0 | 50.0 | – | – | – | – | 1 |" in md
    # The mean is over categories (of the seed means), not over runs.
    assert "**81.0** | **71.0** | **57.5**" in md
    assert md.index("carpet") < md.index("bottle")  # textures first, as in the paper
    assert "Missing categories (13)" in md
    csv_text = report.render_csv(table)
    assert csv_text.splitlines()[1].startswith("contrastive,carpet,1,70.0000")
    assert report.main([str(runs), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t.md").read_text() == md
    assert report.main([str(tmp_path / "nowhere")]) == 2


def test_report_table_has_pr_metrics_and_defect_types(tmp_path):
    from deep_representation_one_class.reports import mvtec_table as report

    runs = tmp_path / "runs"
    extra = {"image_aupr": 97.0, "image_f1_max": 93.0, "pixel_aupr": 55.0, "pixel_f1_max": 58.0}
    per_type = {"image_auroc.crack": 99.0, "image_auroc.broken_large": 88.0}
    _fake_summary(runs / "s0", "contrastive", "bottle", 0, 90.0, pro=60.0, **extra, **per_type)
    md = report.render_markdown(report.collect(str(runs)), "pool.gde")
    assert "| AU-PRO@0.3 | image AUPR | image F1-max | pixel AUPR | pixel F1-max |" in md
    assert "| bottle | 90.0 | – | 60.0 | 97.0 | 93.0 | 55.0 | 58.0 | 1 |" in md
    assert "| bottle | broken_large | 88.0 |" in md and "| bottle | crack | 99.0 |" in md
    csv_text = report.render_csv(report.collect(str(runs)))
    assert csv_text.splitlines()[0].endswith("pro,image_aupr,image_f1_max,pixel_aupr,pixel_f1_max")
    assert csv_text.splitlines()[1].endswith("97.0000,93.0000,55.0000,58.0000")


def test_run_mvtec_script_dry_run(tmp_path):
    script = Path(__file__).resolve().parents[3] / "scripts" / "run_mvtec.sh"
    out = subprocess.run(
        [
            "bash",
            str(script),
            f"--root={tmp_path}",
            "--category=bottle,tile",
            "--dry_run",
            "--",
            "--num_epoch=1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("--dataset=mvtec") == 2 and "--category=tile" in out
    assert "--num_epoch=1" in out.splitlines()[1]  # extra flags come last and so win
    bad = subprocess.run(
        ["bash", str(script), f"--root={tmp_path}", "--category=bottle,foo"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown category 'foo'" in bad.stderr
