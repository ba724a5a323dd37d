"""Tests of the one-class scorers: blobs AUROC, sign convention and golden sklearn comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity
from sklearn.svm import OneClassSVM

from deep_representation_one_class.evaluation import scorers as sc

ALL_SCORERS = ("auc", "kde", "gde", "kocsvm", "locsvm")
DIM = 8


def _blob(rng: np.random.Generator, n: int, axis: int, dim: int = DIM) -> np.ndarray:
    # Blobs sit away from the origin: the normalised scorers only see directions, so a blob at
    # the origin (uniform directions) shifted by a constant would be indistinguishable on the
    # sphere, and the linear OC-SVM separates data from the origin.
    mean = np.zeros(dim)
    mean[axis] = 4.0
    return rng.normal(size=(n, dim)) + mean


@pytest.fixture(scope="module")
def blobs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train": _blob(rng, 300, 0),
        "inliers": _blob(rng, 200, 0),
        "outliers": _blob(rng, 200, 1),
        "same": _blob(rng, 200, 0),
    }


def _auroc(inlier_scores: np.ndarray, outlier_scores: np.ndarray) -> float:
    y = np.r_[np.zeros(len(inlier_scores)), np.ones(len(outlier_scores))]
    return 100.0 * roc_auc_score(y, np.r_[inlier_scores, outlier_scores])


@pytest.mark.parametrize("name", ALL_SCORERS)
def test_separable_blobs_give_high_auroc_and_outliers_score_higher(name, blobs):
    scorer = sc.make_scorer(name).fit(blobs["train"])
    s_in, s_out = scorer.score(blobs["inliers"]), scorer.score(blobs["outliers"])
    assert s_in.dtype == np.float64 and s_in.shape == (200,)
    assert _auroc(s_in, s_out) > 95.0
    assert np.median(s_out) > np.median(s_in)  # sign convention: higher = more anomalous


@pytest.mark.parametrize("name", ALL_SCORERS)
def test_same_distribution_gives_chance_auroc(name, blobs):
    scorer = sc.make_scorer(name).fit(blobs["train"])
    value = _auroc(scorer.score(blobs["inliers"]), scorer.score(blobs["same"]))
    assert 40.0 < value < 60.0


def test_registry_keys_and_aliases():
    assert sc.SCORERS.names() == sorted(ALL_SCORERS)
    for alias, key in [
        ("nn_cosine", "auc"),
        ("ocsvm_rbf", "kocsvm"),
        ("ocsvm_linear", "locsvm"),
        ("KDE", "kde"),
    ]:
        assert sc.SCORERS.canonical(alias) == key
        assert sc.make_scorer(alias).name == key
    with pytest.raises(KeyError, match="valid"):
        sc.make_scorer("knn")
    assert not sc.make_scorer("locsvm").normalize
    assert all(sc.make_scorer(n).normalize for n in ("auc", "kde", "gde", "kocsvm"))


def test_l2_normalize_and_gamma_rule_by_hand():
    x = sc.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])
    # Entries {1, 0, 0, 1}: mean 0.5, Var 0.25, D = 2 -> 10 / (0.25 * 2) = 20.
    gamma = sc.gamma_rule(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert isinstance(gamma, float) and gamma == pytest.approx(20.0)
    assert sc.gamma_rule(np.array([[1.0, 0.0], [0.0, 1.0]]), factor=1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero variance"):
        sc.gamma_rule(np.ones((4, 3)))


def _naive_cosine(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    return b @ a.T  # the full [M, N] matrix the reference materialises


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunked_nn_and_kde_equal_full_matrix_formula(chunk_size, blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:50], blobs["outliers"][:50]]
    sims = _naive_cosine(train, test)
    gamma = sc.gamma_rule(sc.l2_normalize(train))
    expected_kde = -np.log(np.exp(2 * gamma * sims).sum(axis=1)) / gamma
    nn = sc.make_scorer("auc", chunk_size=chunk_size).fit(train)
    kde = sc.make_scorer("kde", chunk_size=chunk_size).fit(train)
    np.testing.assert_allclose(nn.score(test), 1.0 - sims.max(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kde.score(test), expected_kde, rtol=1e-10)


def test_kde_is_affine_in_sklearn_kernel_density(blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:60], blobs["outliers"][:60]]
    train_n, test_n = sc.l2_normalize(train), sc.l2_normalize(test)
    scorer = sc.KdeScorer().fit(train)
    gamma = scorer.state()["gamma"]
    bandwidth = 1.0 / math.sqrt(2.0 * gamma)
    log_density = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(train_n)
    log_density = log_density.score_samples(test_n)
    ours = scorer.score(test)
    # Same ranking as the negated log density ...
    np.testing.assert_array_equal(np.argsort(ours), np.argsort(-log_density))
    # ... and exactly s = −(log Σ_j exp(−γ‖z̄−z̄_j‖²))/γ − 2, where sklearn's log density adds
    # −log N − (D/2)·log(2πh²) to that log-sum.
    log_sum = log_density + math.log(len(train)) + 0.5 * DIM * math.log(2 * math.pi * bandwidth**2)
    np.testing.assert_allclose(ours, -log_sum / gamma - 2.0, rtol=1e-9)


def test_kde_is_stable_for_concentrated_features():
    # Nearly identical train features give a huge γ; a naive exp(2γ⟨a,b⟩) would overflow.
    rng = np.random.default_rng(1)
    train = np.ones((50, 4)) + 1e-4 * rng.normal(size=(50, 4))
    scorer = sc.KdeScorer().fit(train)
    assert scorer.state()["gamma"] > 1e6
    s = scorer.score(np.r_[np.ones((1, 4)), [[1.0, -1.0, 1.0, 1.0]]])
    assert np.all(np.isfinite(s)) and s[1] > s[0]


def test_gde_matches_sklearn_gaussian_mixture(blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:50], blobs["outliers"][:50]]
    train_n, test_n = sc.l2_normalize(train), sc.l2_normalize(test)
    gmm = GaussianMixture(n_components=1, covariance_type="full", random_state=0).fit(train_n)
    ours = sc.GdeScorer().fit(train).score(test)
    np.testing.assert_allclose(ours, -gmm.score_samples(test_n), rtol=1e-6)


def test_gde_rank_deficient_train_is_regularised():
    # Fewer samples than dimensions: the covariance is singular without reg_covar.
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(5, 16)), rng.normal(size=(7, 16))
    gmm = GaussianMixture(n_components=1, covariance_type="full").fit(sc.l2_normalize(train))
    ours = sc.GdeScorer().fit(train).score(test)
    np.testing.assert_allclose(ours, -gmm.score_samples(sc.l2_normalize(test)), rtol=1e-6)


def test_kocsvm_matches_direct_one_class_svm(blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:50], blobs["outliers"][:50]]
    train_n, test_n = sc.l2_normalize(train), sc.l2_normalize(test)
    svm = OneClassSVM(kernel="rbf", gamma=sc.gamma_rule(train_n), nu=0.5).fit(train_n)
    ours = sc.make_scorer("ocsvm_rbf").fit(train).score(test)
    np.testing.assert_allclose(ours, -svm.score_samples(test_n), rtol=1e-8, atol=1e-12)


def test_locsvm_uses_unnormalised_features(blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:50], blobs["outliers"][:50]]
    svm = OneClassSVM(kernel="linear", nu=0.5).fit(train)
    ours = sc.make_scorer("ocsvm_linear").fit(train).score(test)
    np.testing.assert_allclose(ours, -svm.score_samples(test), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["kocsvm", "locsvm"])
def test_ocsvm_precomputed_kernel_equals_libsvm_kernel(name, blobs):
    # The fast path (BLAS Gram matrix, kernel='precomputed') and libsvm's own kernel
    # (gram_max_bytes=0 forces it) must find the same support set and the same scores.
    train, test = blobs["train"], np.r_[blobs["inliers"][:50], blobs["outliers"][:50]]
    fast = sc.make_scorer(name).fit(train)
    slow = sc.make_scorer(name, gram_max_bytes=0).fit(train)
    assert fast.used_precomputed and not slow.used_precomputed
    np.testing.assert_allclose(fast.state()["support_vectors"], slow.state()["support_vectors"])
    np.testing.assert_allclose(fast.state()["dual_coef"], slow.state()["dual_coef"], rtol=1e-8)
    np.testing.assert_allclose(fast.score(test), slow.score(test), rtol=1e-8)
    assert fast.state()["offset"] == pytest.approx(slow.state()["offset"], rel=1e-8)


def test_ocsvm_max_train_subsamples_deterministically(blobs):
    train = blobs["train"]
    a = sc.RbfOcsvmScorer(max_train=40, seed=3).fit(train)
    b = sc.RbfOcsvmScorer(max_train=40, seed=3).fit(train)
    sv = a.state()["support_vectors"]
    assert len(sv) <= 40
    np.testing.assert_array_equal(sv, b.state()["support_vectors"])
    # γ still comes from the full train set (the same γ as KDE).
    assert a.state()["gamma"] == pytest.approx(sc.gamma_rule(sc.l2_normalize(train)))
    full = sc.RbfOcsvmScorer().fit(train)
    assert len(full.state()["support_vectors"]) > 40


def test_state_recomputes_scores_with_plain_numpy(blobs):
    train, test = blobs["train"], np.r_[blobs["inliers"][:40], blobs["outliers"][:40]]
    z = sc.l2_normalize(test)

    st = sc.make_scorer("kde").fit(train).state()
    kde = -np.log(np.exp(2 * st["gamma"] * z @ st["bank"].T).sum(axis=1)) / st["gamma"]
    np.testing.assert_allclose(kde, sc.make_scorer("kde").fit(train).score(test), rtol=1e-10)

    st = sc.make_scorer("gde").fit(train).state()
    d = z - st["mean"]
    gde = 0.5 * np.einsum("ij,jk,ik->i", d, st["precision"], d) + st["log_norm"]
    np.testing.assert_allclose(gde, sc.make_scorer("gde").fit(train).score(test), rtol=1e-8)
    np.testing.assert_allclose(
        st["precision_cholesky"] @ st["precision_cholesky"].T, st["precision"], rtol=1e-12
    )

    st = sc.make_scorer("kocsvm").fit(train).state()
    sq_dist = ((z[:, None, :] - st["support_vectors"][None]) ** 2).sum(-1)
    kocsvm = -np.exp(-st["gamma"] * sq_dist) @ st["dual_coef"]
    np.testing.assert_allclose(kocsvm, sc.make_scorer("kocsvm").fit(train).score(test), rtol=1e-8)

    st = sc.make_scorer("locsvm").fit(train).state()
    np.testing.assert_allclose(
        -test @ st["coef"], sc.make_scorer("locsvm").fit(train).score(test), rtol=1e-8
    )
    st = sc.make_scorer("auc").fit(train).state()
    np.testing.assert_allclose(
        1 - (z @ st["bank"].T).max(1), sc.make_scorer("auc").fit(train).score(test), atol=1e-12
    )


def test_input_validation():
    scorer = sc.make_scorer("kde")
    with pytest.raises(NotFittedError):
        scorer.score(np.ones((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        scorer.fit(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        scorer.fit(np.array([[1.0, np.nan], [0.0, 1.0]]))
    scorer.fit(np.eye(3))
    with pytest.raises(ValueError, match="3-dim"):
        scorer.score(np.ones((2, 4)))
    with pytest.raises(ValueError, match="chunk_size"):
        sc.make_scorer("auc", chunk_size=0)
    with pytest.raises(ValueError, match="nu"):
        sc.make_scorer("kocsvm", nu=0.0)
    with pytest.raises(NotFittedError):
        sc.make_scorer("gde").state()


def test_rotation_scores_by_hand():
    v, n = 4, 2
    logits = np.zeros((v, n, v))
    # Sample 1: every view confidently predicts its true rotation.
    for k in range(v):
        logits[k, 1, k] = 50.0
    out = sc.rotation_scores(logits)
    # Sample 0: uniform predictions, p = 1/4 everywhere.
    assert out["logit"][0] == pytest.approx(0.75)
    assert out["dscore"][0] == pytest.approx(4 * math.log(4))
    # Sample 1: p(k | rot_k x) = 1 / (1 + 3e^-50); 1 − p and −log p are ~3e^-50, not rounded to 0.
    assert out["logit"][1] == pytest.approx(3 * math.exp(-50), rel=1e-9, abs=0)
    assert out["dscore"][1] == pytest.approx(4 * 3 * math.exp(-50), rel=1e-9, abs=0)
    with pytest.raises(ValueError, match="num_views"):
        sc.rotation_scores(np.zeros((4, 3, 2)))


def test_rotation_dscore_ranks_like_reference_product_without_underflow():
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=2.0, size=(4, 100, 4))
    out = sc.rotation_scores(logits)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    reference = 1.0 - np.prod([probs[k, :, k] for k in range(4)], axis=0)
    np.testing.assert_array_equal(np.argsort(out["dscore"]), np.argsort(reference))
    np.testing.assert_allclose(out["logit"], 1.0 - probs[0, :, 0], rtol=1e-12)
    # Confidently wrong views: the reference's product underflows to exactly 0 for both samples
    # (a tie at 1), while dscore still tells them apart.
    bad = np.zeros((4, 2, 4))
    for k in range(4):
        bad[k, 0, (k + 1) % 4] = 200.0
        bad[k, 1, (k + 1) % 4] = 300.0
    p = np.exp(bad - bad.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert np.all(np.prod([p[k, :, k] for k in range(4)], axis=0) == 0.0)
    d = sc.rotation_scores(bad)["dscore"]
    assert d[1] > d[0] > 0
