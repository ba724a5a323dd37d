"""Patch evaluation: progress lines for every phase, finished phases kept in eval_cache/ so an
interrupted evaluation resumes without extracting again, and the shared KDE/1-NN similarity."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from deep_representation_one_class import resolve
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.tasks import patch_cache, patch_dense, patch_eval
from deep_representation_one_class.training import runner
from unit.tasks.test_patches import SIZE, make_mvtec_tree


def _config(root, model_dir):
    return resolve.build(
        method="contrastive",
        dataset="mvtec",
        category="tile",
        root=str(root),
        input_shape=(SIZE, SIZE, 3),
        cache_dir="",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=16,
        num_epoch=1,
        num_batch=2,
        strategy="default",
        model_dir=str(model_dir),
        classifiers=("auc", "gde", "kde"),
        patch_size=16,
        patch_stride=8,
        patch_bank=600,
        smooth_sigma=2.0,
        eval_batch_size=512,
        report=False,
    )


class _FaultError(RuntimeError):
    pass


def test_interrupted_evaluation_resumes_without_extracting_again(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    cfg = _config(make_mvtec_tree(tmp_path / "mvtec", "tile"), tmp_path / "run")
    calls: list[str] = []
    bank_features = patch_dense.DenseScorer.bank_features
    score = patch_dense.DenseScorer.score

    def counted_bank(self, *a, desc="bank windows", **kw):
        calls.append(desc)
        return bank_features(self, *a, desc=desc, **kw)

    def counted_score(self, images, desc="test windows", **kw):
        calls.append(desc)
        return score(self, images, desc=desc, **kw)

    monkeypatch.setattr(patch_dense.DenseScorer, "bank_features", counted_bank)
    monkeypatch.setattr(patch_dense.DenseScorer, "score", counted_score)

    # 1. A fault in the phase after the feature extraction (the process is cut there).
    def broken(*a, **kw):
        raise _FaultError("cut after the test windows")

    with monkeypatch.context() as m:
        m.setattr(patch_eval, "_synthetic_metrics", broken)
        with pytest.raises(_FaultError):
            runner.run(cfg)
    assert calls == ["bank windows", "test windows"]
    cache_dir = os.path.join(cfg.model_dir, patch_cache.CACHE_DIR)
    assert sorted(os.listdir(cache_dir)) == ["bank.npz", "key.json", "test_scores.npz"]
    cached = dict(np.load(os.path.join(cache_dir, "test_scores.npz")))
    assert not os.path.exists(os.path.join(cfg.model_dir, "summary.json"))
    # Every phase that ran said so in the log.
    for line in ("Patch bank: embedding and fitting: done", "Test windows: embedding and scoring"):
        assert line in caplog.text

    # 2. The same command again: training is complete, the two phases are reused.
    calls.clear()
    result = runner.run(cfg)
    assert result.status == "complete"
    assert "bank windows" not in calls and "test windows" not in calls, calls
    assert "synthetic-check windows" in calls  # the phase that had not finished runs
    assert "Phase 'bank' reused" in caplog.text and "Phase 'test_scores' reused" in caplog.text
    emb = np.load(os.path.join(cfg.model_dir, "embeddings.npz"))
    np.testing.assert_array_equal(emb["pool_gde_patch_scores"], cached["pool.gde"])
    with open(os.path.join(cfg.model_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["run"]["timings"]["reused_phases"] == 2
    assert "synthetic.pool.gde" in summary["metrics"]
    assert "baseline_pixels.gde" in summary["metrics"]
    assert not os.path.exists(cache_dir)  # a finished evaluation leaves no cache behind


def test_phase_cache_is_emptied_for_other_weights_or_settings(tmp_path):
    cache = patch_cache.PhaseCache(str(tmp_path), {"weights_sha256": "a", "settings": {"x": 1}})
    cache.save_arrays("bank", {"pool": np.ones((3, 2), np.float32)})
    cache.save_metrics("synthetic", {"synthetic.pool.gde": 71.5})
    same = patch_cache.PhaseCache(str(tmp_path), {"weights_sha256": "a", "settings": {"x": 1}})
    assert same.load_arrays("bank")["pool"].shape == (3, 2)
    assert same.load_metrics("synthetic") == {"synthetic.pool.gde": 71.5}
    other = patch_cache.PhaseCache(str(tmp_path), {"weights_sha256": "b", "settings": {"x": 1}})
    assert other.load_arrays("bank") is None and other.load_metrics("synthetic") is None
    # A damaged phase file is recomputed, not trusted.
    (tmp_path / patch_cache.CACHE_DIR / "bank.npz").write_bytes(b"not a zip")
    assert other.load_arrays("bank") is None
    assert patch_cache.PhaseCache(None, {}).load_arrays("bank") is None  # no run folder


def test_shared_similarity_equals_separate_kde_and_nn():
    rng = np.random.default_rng(3)
    bank, test = rng.normal(size=(900, 32)), rng.normal(size=(1300, 32))
    kde = patch_dense._SimilarityScorer("kde", scorers_lib.make_scorer("kde").fit(bank))
    nn = patch_dense._SimilarityScorer("auc", scorers_lib.make_scorer("auc").fit(bank))
    shared = patch_dense._share_similarities({("pool", "kde"): kde, ("pool", "auc"): nn})
    both = shared["pool"].score(test)
    np.testing.assert_allclose(both["kde"], kde.score(test), rtol=1e-6)
    np.testing.assert_allclose(both["auc"], nn.score(test), rtol=1e-6, atol=1e-7)


def test_synthetic_copies_embed_only_their_changed_windows():
    from deep_representation_one_class.tasks import baselines as baselines_lib
    from deep_representation_one_class.tasks import patch_synthetic

    rng = np.random.default_rng(4)
    normals = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    synth = patch_synthetic.synthesize(normals, None, seed=1)
    sources = patch_eval.synthetic_sources(synth)
    n = len(normals)
    assert (sources[:n] == -1).all()
    # The copies are kind-major: copy k*n + i of normal i.
    np.testing.assert_array_equal(sources[n:], np.tile(np.arange(n), len(patch_synthetic.KINDS)))
    calls = []

    def embed(windows):
        calls.append(len(windows))
        return baselines_lib.pixel_embedder(16)(windows)

    scorer = patch_dense.DenseScorer(embed, ("gde", "kde", "auc"), 16, 4)
    scorer.fit(rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8), 300, seed=0)
    calls.clear()
    dense, ys, xs = scorer.score(synth.x)
    full = sum(calls)
    calls.clear()
    shared, _, _ = scorer.score(synth.x, same_as=sources)
    assert sum(calls) < 0.6 * full, (sum(calls), full)  # most windows of a copy are its normal's
    for key in dense:
        np.testing.assert_allclose(shared[key], dense[key], rtol=1e-5, atol=1e-6)
    # Windows over a changed pixel are exactly the ones re-embedded.
    grid = patch_dense.changed_windows(synth.x[n], synth.x[0], ys, xs, 16)
    region = np.argwhere(np.any(synth.x[n] != synth.x[0], axis=-1))
    (y0, x0), (y1, x1) = region.min(0), region.max(0)
    want = (ys[:, None] <= y1) & (ys[:, None] + 16 > y0) & (xs[None] <= x1) & (xs[None] + 16 > x0)
    assert grid.sum() > 0 and not (grid & ~want).any()
