"""The benchmark's measurements: training, input pipeline, extraction and classifier speed,
and the reference's classifier code path they are compared with."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.svm import OneClassSVM

from deep_representation_one_class.benchmarks import perf
from deep_representation_one_class.benchmarks.cases import (
    BenchCase,
    BenchError,
)
from deep_representation_one_class.benchmarks.reference_layers import REFERENCE_TRUNK
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.evaluation import features, metrics
from deep_representation_one_class.evaluation import scorers as scorers_lib
from deep_representation_one_class.training import build, distribute, loop
from deep_representation_one_class.utils import run_folder as rf


def _random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _timed_windows(
    run_steps: Callable[[int], None], windows: int, window_steps: int
) -> tuple[list[float], float]:
    """Seconds per step of each window, and CPU seconds per step over all windows."""
    per_step = []
    c0 = perf.cpu_seconds()
    for _ in range(windows):
        t0 = time.perf_counter()
        run_steps(window_steps)
        per_step.append((time.perf_counter() - t0) / window_steps)
    cpu = (perf.cpu_seconds() - c0) / max(windows * window_steps, 1)
    return per_step, cpu


# ----------------------------------------------------------------------------- measurements
def measure_training(cfg, case: BenchCase) -> dict[str, Any]:
    """Train-step throughput on a fixed in-memory batch, then through the real pipeline."""
    strategy = distribute.make_strategy(cfg.strategy)
    views = build.task_for(cfg).views()
    view_fn, test_fn, n_views = views.train, views.test, views.num_train
    options = REFERENCE_TRUNK if case.impl == "reference" else None
    trainer = loop.Trainer(cfg, strategy, n_views, build.StepPlan(10**4, 10**6, 100), options)
    images_per_step = cfg.batch_size * n_views
    fn = trainer.train_fn()
    k = cfg.steps_per_call

    def drive(iterator) -> Callable[[int], None]:
        def run_steps(steps: int) -> None:
            done = 0
            while done < steps:
                n = min(k, steps - done)
                total, _ = fn(iterator, tf.constant(n, tf.int64))
                total.numpy()  # waits for the device
                done += n

        return run_steps

    # 1. Model only: one augmented batch, repeated (no input work inside the timed loop).
    images = _random_images(max(cfg.batch_size, 64), cfg.input_shape[0])
    real = pipeline.make_train_dataset(images, view_fn, cfg.batch_size, cfg.seed)
    fixed = tuple(next(iter(real)))
    ds = tf.data.Dataset.from_tensors(fixed).repeat()
    run_steps = drive(iter(strategy.experimental_distribute_dataset(ds)))
    t0 = time.perf_counter()
    run_steps(1)
    first_call_s = time.perf_counter() - t0
    run_steps(case.warmup_steps)
    windows, cpu_per_step = _timed_windows(run_steps, case.windows, case.window_steps)
    step_s = float(np.median(windows))

    # 2. End to end: the augmentation pipeline feeds the same train function.
    e2e_ips = None
    if case.e2e_windows > 0:
        many = _random_images(case.pipeline_images, cfg.input_shape[0], seed=1)
        ds = pipeline.make_train_dataset(many, view_fn, cfg.batch_size, cfg.seed)
        run_e2e = drive(iter(strategy.experimental_distribute_dataset(ds)))
        run_e2e(1 + case.warmup_steps)
        e2e, _ = _timed_windows(run_e2e, case.e2e_windows, case.window_steps)
        e2e_ips = images_per_step / float(np.median(e2e))
    return {
        "trainer": trainer,
        "test_fn": test_fn,
        "views": n_views,
        "images_per_step": images_per_step,
        "first_call_s": first_call_s,
        "train_step_s": step_s,
        "train_step_s_windows": [round(w, 4) for w in windows],
        "train_cpu_s_per_step": cpu_per_step,
        "train_images_per_s": images_per_step / step_s,
        "e2e_images_per_s": e2e_ips,
    }


def measure_data(cfg, case: BenchCase) -> float:
    """Images (views) per second produced by the training input pipeline alone."""
    views = build.task_for(cfg).views()
    view_fn, n_views = views.train, views.num_train
    images = _random_images(case.pipeline_images, cfg.input_shape[0], seed=2)
    it = iter(pipeline.make_train_dataset(images, view_fn, cfg.batch_size, cfg.seed))
    for _ in range(2):  # start-up: threads, autotuning, tracing of the map function
        next(it)
    t0 = time.perf_counter()
    for _ in range(case.data_batches):
        next(it)
    return case.data_batches * cfg.batch_size * n_views / (time.perf_counter() - t0)


def _reference_extract(model, images: np.ndarray, test_fn, batch: int) -> None:
    """The reference's evaluation input pipeline (spec §5.1): a sequential ``map``, ``batch`` and
    an autotuned ``prefetch``, feeding the same forward function as ``features.extract``."""
    seed = tf.constant([0, 0], tf.int32)
    ds = tf.data.Dataset.from_tensor_slices(images).map(lambda im: test_fn(im, seed))
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    forward = features._forward_fn(model, False, ds.element_spec)
    for views in ds:
        forward(tuple(views))[0].numpy()


def measure_extraction(
    model, test_fn, cfg, case: BenchCase, passes: int = 3
) -> tuple[float, float]:
    """(images per second of ``features.extract`` after its first call, first-call seconds).

    The first call traces the forward pass (once per model; later calls reuse it). The rate is
    the median over ``passes`` passes. The reference case runs the reference's input pipeline
    on its training network; this package's cases extract as a run does, in its
    ``--eval_precision`` (float32 by default, whatever the case trains in).
    """
    if case.impl != "reference":
        model = build.EvalModel(cfg, model).sync()

    def extract(images: np.ndarray) -> None:
        if case.impl == "reference":
            _reference_extract(model, images, test_fn, cfg.eval_batch_size)
        else:
            features.extract(model, images, test_fn, cfg.eval_batch_size)

    n = case.extract_images
    warm = _random_images(min(n, cfg.eval_batch_size), cfg.input_shape[0], seed=3)
    t0 = time.perf_counter()
    extract(warm)
    first = time.perf_counter() - t0
    images = _random_images(n, cfg.input_shape[0], seed=4)
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        extract(images)
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates)), first


def synthetic_features(
    n_train: int, n_test: int, dims: Sequence[int] = (512, 128), seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Feature-like arrays for timing the classifiers: (train, test, test labels).

    Both feature sets have a decaying spectrum and a mean offset (real features sit in a cone,
    not around the origin; centred data made the linear OC-SVM's solver crawl, which real
    features do not). ``pool`` features are non-negative (averages of ReLU maps), ``embed``
    features signed, and the test outliers (90%, as in CIFAR-10 one-vs-rest) are shifted, so
    the scorers do realistic amounts of work (SVM iterations, support vectors).
    """
    rng = np.random.default_rng(seed)
    n_in = max(1, n_test // 10)
    train, test = {}, {}
    for name, d in zip(("pool", "embed"), dims):
        basis = rng.standard_normal((d, d)) * (1.0 / np.sqrt(np.arange(1, d + 1)))[:, None]
        radius = float(np.sqrt((basis**2).sum()))  # typical norm of a centred sample

        def direction(scale: float, d: int = d) -> np.ndarray:
            v = rng.standard_normal(d)
            return v * (scale / np.linalg.norm(v))

        offset, shift = direction(0.3 * radius), direction(0.5 * radius)
        tr = rng.standard_normal((n_train, d)) @ basis + offset
        te = rng.standard_normal((n_test, d)) @ basis + offset
        te[n_in:] += shift
        if name == "pool":
            tr, te = np.maximum(tr, 0.0), np.maximum(te, 0.0)
        train[name], test[name] = tr.astype(np.float32), te.astype(np.float32)
    labels = np.zeros(n_test, dtype=np.int64)
    labels[n_in:] = 1
    return train, test, labels


def load_run_features(path: str) -> tuple[dict, dict, np.ndarray]:
    """(train, test, labels) from a run's ``embeddings.npz`` (real features, real sizes)."""
    try:
        z = np.load(path)
        train = {f: z[rf.feature_key(rf.CLS, f)] for f in rf.FEATURES}
        test = {f: z[rf.feature_key(rf.TEST, f)] for f in rf.FEATURES}
        return train, test, z[rf.TEST_LABELS]
    except (OSError, KeyError, ValueError) as e:
        raise BenchError(
            f"--features={path} is not a run's embeddings.npz ({type(e).__name__}); "
            "pass <model_dir>/embeddings.npz or leave it empty for synthetic features"
        ) from None


# The reference's classifiers (spec §8); another registered scorer has no reference path.
_REFERENCE_CLASSIFIERS = ("auc", "kde", "gde", "kocsvm", "locsvm")


def reference_classifier_path(
    classifiers: Sequence[str],
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    labels: np.ndarray,
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of fit + score + AUROC per key with the reference's classifier code (spec §8),
    and the AUROCs (x100) it gives.

    Written from the spec's description of ``eval_embed``, for timing only: the full
    test x train cosine matrix for 1-NN, KDE over test batches of 100, sklearn's
    ``GaussianMixture`` (k-means init) for GDE and ``OneClassSVM`` evaluating its own RBF or
    linear kernel (200 MB cache) for the OC-SVMs.
    """

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    timings, aurocs = {}, {}
    for feat in ("pool", "embed"):
        tr_raw, te_raw = train[feat].astype(np.float32), test[feat].astype(np.float32)
        for name in classifiers:
            t0 = time.perf_counter()
            tr, te = unit(tr_raw), unit(te_raw)
            gamma = 10.0 / (float(np.var(tr)) * tr.shape[1])
            if name not in _REFERENCE_CLASSIFIERS:
                continue  # not one of the reference's classifiers: nothing to compare
            if name == "auc":
                score = 1.0 - (te @ tr.T).max(axis=1)
            elif name == "kde":
                parts = []
                for i in range(0, len(te), 100):
                    logits = 2.0 * gamma * (te[i : i + 100] @ tr.T)
                    peak = logits.max(axis=1, keepdims=True)
                    lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
                    parts.append(-lse / gamma)
                score = np.concatenate(parts)
            elif name == "gde":
                gmm = GaussianMixture(1, covariance_type="full", init_params="kmeans").fit(tr)
                score = -gmm.score_samples(te)
            elif name == "kocsvm":
                score = -OneClassSVM(kernel="rbf", gamma=gamma, nu=0.5).fit(tr).score_samples(te)
            else:  # locsvm
                svm = OneClassSVM(kernel="linear", nu=0.5).fit(tr_raw)
                score = -svm.score_samples(te_raw)
            aurocs[f"{feat}.{name}"] = 100.0 * roc_auc_score(labels, score)
            timings[f"{feat}.{name}"] = time.perf_counter() - t0
    return timings, aurocs


def measure_classifiers(
    classifiers: Sequence[str],
    n_train: int,
    n_test: int,
    dims: Sequence[int] = (512, 128),
    features_path: str = "",
    impl: str = "this",
) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds of fit + score + AUROC per ``feature.classifier`` key, and the sizes used.

    Synthetic features of the given sizes, or a run's saved features with ``features_path``;
    ``impl="reference"`` times the reference's classifier code path instead of this package's.
    """
    if features_path:
        train, test, labels = load_run_features(features_path)
    else:
        train, test, labels = synthetic_features(n_train, n_test, dims)
    sizes = {
        "train": len(train["pool"]),
        "test": len(labels),
        "dims": [int(train[k].shape[1]) for k in ("pool", "embed")],
        "source": features_path or "synthetic",
    }
    if impl == "reference":
        names = [scorers_lib.SCORERS.canonical(c) for c in classifiers]
        timings, _ = reference_classifier_path(names, train, test, labels)
    else:
        timings = {}
        metrics.evaluate_features(train, test, labels, scorers=classifiers, timings=timings)
    return {k: round(v, 3) for k, v in timings.items()}, sizes
