"""Speed benchmark: train-step, input-pipeline, feature-extraction and classifier throughput.

``python -m deep_representation_one_class.bench --cases=paper_fp32,paper_bf16`` prints one JSON
line per case (and appends it to ``--out``). Each line holds the case's model and batch, the
training throughput (median over timed windows after a warm-up, on a fixed in-memory batch so
that only the model is measured), the end-to-end throughput through the real augmentation
pipeline, the pipeline's own throughput, feature-extraction throughput, the fit+score time of
every one-class classifier at realistic sizes, the model's FLOPs per image, the achieved GFLOP/s
as a fraction of a matmul peak measured by the same process, a projection of the wall time of
one paper-length CIFAR-10 class, the load average and the machine.

FLOPs are counted analytically from traced conv/matmul shapes (``utils/perf.py``).
A ResNet-18 (width 1) at 32x32 is 0.56 GMAC forward, i.e. 1.11 GFLOP forward and 3.3 GFLOP per
trained image. (A "1.7 GFLOP" figure for the same model counts multiply-accumulates, not FLOPs.)

Images per second count images through the network: a contrastive step of batch B pairs is
2B images, a rotation step of batch B is 4B images.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.utils import perf

# The reference's numbers as first measured on the 2-core development CPU (AMD EPYC,
# AVX512_BF16) under unknown load, reported as "vs_issue_numbers". The ratios that count are
# "vs_reference": against the ``reference_fp32`` case measured by the same command, on the same
# machine, at the same time.
REFERENCE = {
    "train_images_per_s": 43.0,  # contrastive ResNet-18 w1, head 512x8,128, 32 pairs: 1.48 s/step
    "extract_images_per_s": 150.0,  # batches of 32
}
# Paper length of one CIFAR-10 one-class run: 5000 inliers, 2048 epochs (spec, "Script settings").
CIFAR10_CLASS_IMAGES = 5000
PAPER_EPOCHS = 2048
PAPER_HEAD = (512,) * 8 + (128,)

# Keys of every JSON record (the output contract; tests check it).
SCHEMA_KEYS = (
    "case",
    "method",
    "model",
    "width",
    "head_dims",
    "batch",
    "views",
    "images_per_step",
    "precision",
    "float32_stages",
    "steps_per_call",
    "jit_compile",
    "strategy",
    "device",
    "threads",
    "train_images_per_s",
    "train_step_s",
    "train_step_s_windows",
    "train_cpu_s_per_step",
    "train_first_call_s",
    "e2e_images_per_s",
    "data_images_per_s",
    "extract_images_per_s",
    "extract_first_call_s",
    "extract_batch",
    "classifier_seconds",
    "classifier_total_s",
    "classifier_sizes",
    "eval_seconds_estimate",
    "gflop_per_image_forward",
    "gflop_per_image_train",
    "achieved_gflop_s",
    "peak_gflop_s",
    "pct_of_peak",
    "peak_gflop_per_cpu_s",
    "pct_of_peak_cpu_time",
    "impl",
    "vs_reference",
    "vs_issue_numbers",
    "paper_steps_per_class",
    "projected_hours_per_class",
    "loadavg_start",
    "loadavg_end",
    "machine",
    "timestamp",
)


class BenchError(ValueError):
    """A benchmark option is invalid; the message names it and what is valid."""


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One benchmarked configuration (the fields map onto ``config.Config``)."""

    method: str = "contrastive"
    net_type: str = "resnet18"
    net_width: float = 1.0
    head_dims: tuple[int, ...] = PAPER_HEAD
    batch_size: int = 32
    precision: str = "float32"
    float32_stages: tuple[str, ...] = ("conv5",)  # stages kept float32 under mixed precision
    input_size: int = 32
    eval_batch_size: int = 256
    # "this": this package's model and classifiers; "reference": the reference's layers
    # (``resnet.reference_layers``), its extraction batch and its classifier code path.
    impl: str = "this"
    # Timing sizes (steps/images); small for quick runs, larger on fast devices.
    warmup_steps: int = 2
    windows: int = 5
    window_steps: int = 2
    e2e_windows: int = 3
    data_batches: int = 8
    extract_images: int = 2048
    pipeline_images: int = 2048  # source images of the end-to-end and data-only pipelines


_PAPER = BenchCase()
CASES: dict[str, BenchCase] = {
    # The reference's path for the paper configuration: its layers (Keras BatchNorm, explicit
    # padding), float32, extraction in batches of 32 (its eval batch for 32 pairs), and its
    # classifiers (full similarity matrix, KDE in test batches of 100, sklearn GMM with k-means
    # init, libsvm evaluating its own kernel). The speed-ups of the other cases are against it.
    "reference_fp32": dataclasses.replace(_PAPER, eval_batch_size=32, impl="reference"),
    # The paper's contrastive configuration (scripts): ResNet-18 w1, head 512x8,128, 32 pairs.
    "paper_fp32": _PAPER,
    "paper_bf16": dataclasses.replace(_PAPER, precision="mixed_bfloat16"),
    # The whole trunk in bfloat16 (--float32_stages=): faster, but it lost AUROC.
    "paper_bf16_all": dataclasses.replace(_PAPER, precision="mixed_bfloat16", float32_stages=()),
    "paper_fp16": dataclasses.replace(_PAPER, precision="mixed_float16"),  # GPUs
    # The rotation configuration of the paper: 64 images x 4 rotations, head 512x8, 4 logits.
    "paper_rotation_fp32": dataclasses.replace(
        _PAPER, method="rotation", head_dims=(512,) * 8, batch_size=64
    ),
    "paper_rotation_bf16": dataclasses.replace(
        _PAPER,
        method="rotation",
        head_dims=(512,) * 8,
        batch_size=64,
        precision="mixed_bfloat16",
    ),
    # The quick default run (``python train_and_eval_loop.py --method=contrastive``).
    "quick_fp32": dataclasses.replace(
        _PAPER, net_width=0.25, head_dims=(512, 512, 128), batch_size=64
    ),
    "quick_bf16": dataclasses.replace(
        _PAPER,
        net_width=0.25,
        head_dims=(512, 512, 128),
        batch_size=64,
        precision="mixed_bfloat16",
    ),
    # A seconds-long case for tests and smoke checks.
    "tiny": BenchCase(
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        warmup_steps=1,
        windows=2,
        window_steps=1,
        e2e_windows=1,
        data_batches=2,
        extract_images=64,
        pipeline_images=128,
    ),
}
# The tiny case on the reference's path (for tests of that path).
CASES["tiny_reference"] = dataclasses.replace(CASES["tiny"], impl="reference")
DEFAULT_CASES = ("reference_fp32", "paper_fp32", "paper_bf16")


# ----------------------------------------------------------------------------- small helpers
def _device_kind() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


# ----------------------------------------------------------------------------- config glue
def make_config(case: BenchCase, steps_per_call: int, jit_compile: bool, strategy: str):
    """The run ``Config`` of a case (method defaults for augmentations and logits)."""
    from deep_representation_one_class import config as config_lib

    d = config_lib.METHOD_DEFAULTS[case.method]
    cfg = config_lib.Config(
        method=case.method,
        dataset="fake",
        category="0",
        input_shape=(case.input_size, case.input_size, 3),
        aug_list=d["aug_list"],
        aug_list_for_test=d["aug_list_for_test"],
        net_type=case.net_type,
        net_width=case.net_width,
        head_dims=tuple(case.head_dims),
        latent_dim=d["latent_dim"],
        batch_size=case.batch_size,
        precision=case.precision,
        float32_stages=tuple(case.float32_stages),
        eval_batch_size=case.eval_batch_size,
        steps_per_call=steps_per_call,
        jit_compile=jit_compile,
        strategy=strategy,
    )
    return config_lib.validate(cfg)


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
    import tensorflow as tf

    from deep_representation_one_class import distribute, pipeline, train_lib

    strategy = distribute.make_strategy(cfg.strategy)
    view_fn, test_fn, n_views, _ = train_lib.make_view_fns(cfg)
    trainer = train_lib.Trainer(cfg, strategy, n_views, total_steps=10**6, spe=10**4)
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
    from deep_representation_one_class import pipeline, train_lib

    view_fn, _, n_views, _ = train_lib.make_view_fns(cfg)
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
    import tensorflow as tf

    from deep_representation_one_class.evaluation import features

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
    the median over ``passes`` passes. The reference case runs the reference's input pipeline.
    """
    from deep_representation_one_class.evaluation import features

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
        train = {"pool": z["cls_pool"], "embed": z["cls_embed"]}
        test = {"pool": z["test_pool"], "embed": z["test_embed"]}
        return train, test, z["test_y"]
    except (OSError, KeyError, ValueError) as e:
        raise BenchError(
            f"--features={path} is not a run's embeddings.npz ({type(e).__name__}); "
            "pass <model_dir>/embeddings.npz or leave it empty for synthetic features"
        ) from None


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
    from sklearn.metrics import roc_auc_score
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import OneClassSVM

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    timings, aurocs = {}, {}
    for feat in ("pool", "embed"):
        tr_raw, te_raw = train[feat].astype(np.float32), test[feat].astype(np.float32)
        for name in classifiers:
            t0 = time.perf_counter()
            tr, te = unit(tr_raw), unit(te_raw)
            gamma = 10.0 / (float(np.var(tr)) * tr.shape[1])
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
            elif name == "locsvm":
                svm = OneClassSVM(kernel="linear", nu=0.5).fit(tr_raw)
                score = -svm.score_samples(te_raw)
            else:
                raise BenchError(
                    f"the reference path has no classifier '{name}'; "
                    "valid: auc, kde, gde, kocsvm, locsvm"
                )
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
    from deep_representation_one_class.evaluation import metrics
    from deep_representation_one_class.evaluation import scorers as scorers_lib

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


def _paper_steps(case: BenchCase) -> int:
    return PAPER_EPOCHS * (CIFAR10_CLASS_IMAGES // case.batch_size)


# ----------------------------------------------------------------------------- one case
def run_case(
    name: str,
    case: BenchCase,
    *,
    steps_per_call: int = 1,
    jit_compile: bool = False,
    strategy: str = "mirrored",
    peaks: dict[str, tuple[float, float]],
    classifier_result: dict[str, Any] | None,
    machine: dict[str, Any],
    threads: dict[str, int],
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measures one case and returns its JSON record (see ``SCHEMA_KEYS``).

    ``reference``: the record of the ``reference_fp32`` case from the same command, for the
    ``vs_reference`` speed-ups.
    """
    import contextlib

    import keras

    from deep_representation_one_class.models import resnet

    load_start = perf.loadavg()
    cfg = make_config(case, steps_per_call, jit_compile, strategy)
    keras.backend.clear_session()
    gc.collect()
    layers_ctx = resnet.reference_layers() if case.impl == "reference" else contextlib.nullcontext()
    with layers_ctx:
        train = measure_training(cfg, case)
    trainer = train.pop("trainer")
    test_fn = train.pop("test_fn")
    model = trainer.model
    shape = (case.input_size, case.input_size, 3)
    flops_train = perf.count_flops(model, shape, training=True)
    flops_fwd = perf.count_flops(model, shape, training=False)
    data_ips = measure_data(cfg, case) if case.data_batches > 0 else None
    extract_ips, extract_first = (
        measure_extraction(model, test_fn, cfg, case) if case.extract_images else (None, None)
    )
    achieved = flops_train * train["train_images_per_s"] / 1e9
    pct = {k: round(100.0 * achieved / v[0], 1) for k, v in peaks.items()}
    # The same ratio in CPU time: FLOPs per CPU-second of the step vs of the matmul loop.
    per_cpu = flops_train * train["images_per_step"] / train["train_cpu_s_per_step"] / 1e9
    pct_cpu = {k: round(100.0 * per_cpu / v[1], 1) for k, v in peaks.items()}
    cls_total = classifier_result["total_s"] if classifier_result else None
    eval_est = None
    if classifier_result and extract_ips:
        n_images = classifier_result["sizes"]["train"] + classifier_result["sizes"]["test"]
        eval_est = extract_first + n_images / extract_ips + cls_total
    paper_steps = _paper_steps(case)
    record = {
        "case": name,
        "method": case.method,
        "model": case.net_type,
        "width": case.net_width,
        "head_dims": list(case.head_dims),
        "batch": case.batch_size,
        "views": train["views"],
        "images_per_step": train["images_per_step"],
        "precision": case.precision,
        "float32_stages": list(case.float32_stages),
        "steps_per_call": steps_per_call,
        "jit_compile": jit_compile,
        "strategy": strategy,
        "device": _device_kind(),
        "threads": threads,
        "train_images_per_s": round(train["train_images_per_s"], 2),
        "train_step_s": round(train["train_step_s"], 4),
        "train_step_s_windows": train["train_step_s_windows"],
        "train_cpu_s_per_step": round(train["train_cpu_s_per_step"], 4),
        "train_first_call_s": round(train["first_call_s"], 2),
        "e2e_images_per_s": _round(train["e2e_images_per_s"]),
        "data_images_per_s": _round(data_ips),
        "extract_images_per_s": _round(extract_ips),
        "extract_first_call_s": _round(extract_first),
        "extract_batch": case.eval_batch_size,
        "classifier_seconds": classifier_result["seconds"] if classifier_result else None,
        "classifier_total_s": _round(cls_total),
        "classifier_sizes": classifier_result["sizes"] if classifier_result else None,
        "eval_seconds_estimate": _round(eval_est),
        "gflop_per_image_forward": round(flops_fwd / 1e9, 4),
        "gflop_per_image_train": round(flops_train / 1e9, 4),
        "achieved_gflop_s": round(achieved, 2),
        "peak_gflop_s": {k: round(v[0], 1) for k, v in peaks.items()},
        "pct_of_peak": pct,
        "peak_gflop_per_cpu_s": {k: round(v[1], 1) for k, v in peaks.items()},
        "pct_of_peak_cpu_time": pct_cpu,
        "impl": case.impl,
        "vs_reference": _vs_reference(
            case, train["train_images_per_s"], extract_ips, eval_est, reference
        ),
        "vs_issue_numbers": _vs_issue_numbers(case, train["train_images_per_s"], extract_ips),
        "paper_steps_per_class": paper_steps,
        "projected_hours_per_class": round(paper_steps * train["train_step_s"] / 3600.0, 1),
        "loadavg_start": load_start,
        "loadavg_end": perf.loadavg(),
        "machine": machine,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    del trainer, model
    keras.backend.clear_session()
    gc.collect()
    return record


def _same_config(case: BenchCase) -> bool:
    """Whether ``case`` is the paper configuration the reference numbers are for (contrastive
    ResNet-18 width 1, head 512x8,128, 32 pairs, 32x32 inputs)."""
    ref = BenchCase()
    same = (case.method, case.net_type, case.net_width, tuple(case.head_dims), case.batch_size)
    ref_key = (ref.method, ref.net_type, ref.net_width, ref.head_dims, ref.batch_size)
    return same == ref_key and case.input_size == ref.input_size


def _vs_reference(
    case: BenchCase,
    train_ips: float,
    extract_ips: float | None,
    eval_s: float | None,
    reference: dict[str, Any] | None,
) -> dict | None:
    """Speed-ups over the ``reference_fp32`` record of the same command (None without one, or
    for another model/batch): train and extraction images/s, and the evaluation seconds
    (extraction of both sets + every classifier; reference seconds / these seconds)."""
    if reference is None or not _same_config(case):
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return _round(a / b) if a and b else None

    return {
        "train": ratio(train_ips, reference["train_images_per_s"]),
        "extract": ratio(extract_ips, reference["extract_images_per_s"]),
        "eval": ratio(reference["eval_seconds_estimate"], eval_s),
    }


def _vs_issue_numbers(case: BenchCase, train_ips: float, extract_ips: float | None) -> dict | None:
    """Speed-ups over the fixed ``REFERENCE`` numbers; None for another model or batch."""
    if not _same_config(case):
        return None
    return {
        "train": round(train_ips / REFERENCE["train_images_per_s"], 2),
        "extract": _round(extract_ips and extract_ips / REFERENCE["extract_images_per_s"]),
    }


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


# ----------------------------------------------------------------------------- summary table
def summarize(path: str) -> str:
    """A Markdown table of the medians per case over every record in a JSONL file.

    Each command run is one round (the reference case first); speed-ups are the medians of the
    per-round ratios, so a round measured at another load still compares like with like.
    """
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise BenchError(f"--summarize={path}: not a benchmark JSONL file ({e})") from None
    if not records:
        raise BenchError(f"--summarize={path}: no records")
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)

    def med(rows: list[dict[str, Any]], *keys: str) -> float | None:
        vals = []
        for r in rows:
            v: Any = r
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            if v is not None:
                vals.append(float(v))
        return float(np.median(vals)) if vals else None

    def cell(v: float | None, fmt: str, unit: str = "") -> str:
        return "–" if v is None else format(v, fmt) + unit

    lines = [
        "| case | rounds | train img/s | vs ref | % bf16 peak | extract img/s | vs ref "
        "| eval s | vs ref | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, rows in by_case.items():
        lines.append(
            f"| {case} | {len(rows)} "
            f"| {cell(med(rows, 'train_images_per_s'), '.0f')} "
            f"| {cell(med(rows, 'vs_reference', 'train'), '.2f', 'x')} "
            f"| {cell(med(rows, 'pct_of_peak', 'bfloat16'), '.0f', '%')} "
            f"| {cell(med(rows, 'extract_images_per_s'), '.0f')} "
            f"| {cell(med(rows, 'vs_reference', 'extract'), '.2f', 'x')} "
            f"| {cell(med(rows, 'eval_seconds_estimate'), '.1f')} "
            f"| {cell(med(rows, 'vs_reference', 'eval'), '.2f', 'x')} "
            f"| {cell(float(np.median([r['loadavg_start'][0] for r in rows])), '.1f')} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deep_representation_one_class.bench",
        description="Throughput benchmark; prints one JSON line per case.",
    )
    p.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated cases; valid: {', '.join(CASES)}",
    )
    p.add_argument("--out", default="results/bench_cpu.jsonl", help="JSONL file to append to")
    p.add_argument(
        "--summarize",
        default="",
        help="print a Markdown table of the medians per case in this JSONL file and exit",
    )
    p.add_argument("--steps_per_call", type=int, default=1, help="train steps per call (>= 1)")
    p.add_argument("--jit_compile", action="store_true", help="compile the train step with XLA")
    p.add_argument(
        "--strategy", default="mirrored", help="tf.distribute strategy: mirrored or default"
    )
    p.add_argument("--intra_op_threads", type=int, default=0, help="0 = TensorFlow's default")
    p.add_argument("--inter_op_threads", type=int, default=0, help="0 = TensorFlow's default")
    p.add_argument("--windows", type=int, default=0, help="timed windows (0 = per case)")
    p.add_argument("--window_steps", type=int, default=0, help="steps per window (0 = per case)")
    p.add_argument("--eval_batch_size", type=int, default=0, help="extraction batch (0 = 256)")
    p.add_argument(
        "--classifiers",
        default="auc,kde,gde,kocsvm,locsvm",
        help="classifiers to time ('' = skip)",
    )
    p.add_argument("--cls_train", type=int, default=6000, help="classifier-train features")
    p.add_argument("--cls_test", type=int, default=10000, help="test features")
    p.add_argument(
        "--features",
        default="",
        help="time the classifiers on a run's embeddings.npz instead of synthetic features",
    )
    p.add_argument("--no_peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--peak_size", type=int, default=0, help="matmul side (0: 2048 CPU, 8192 GPU)")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        raise BenchError(f"unknown --cases {unknown}; valid: {', '.join(CASES)}")
    if args.steps_per_call < 1:
        raise BenchError(f"--steps_per_call must be >= 1, got {args.steps_per_call}")
    if args.strategy not in ("mirrored", "default"):
        raise BenchError(f"--strategy must be mirrored or default, got {args.strategy}")
    if min(args.windows, args.window_steps, args.eval_batch_size, args.cls_train) < 0:
        raise BenchError("--windows, --window_steps, --eval_batch_size, --cls_* must be >= 0")
    args.case_names = names
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs the benchmark CLI; returns the records it printed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return []
    import tensorflow as tf

    # Thread pools must be sized before TensorFlow creates them (i.e. before any op runs).
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    threads = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    machine = perf.machine_info()
    gpu = bool(machine["gpus"])
    peaks: dict[str, tuple[float, float]] = {}
    if not args.no_peak:
        n = args.peak_size or (8192 if gpu else 2048)
        for dtype in ("float32", "bfloat16") + (("float16",) if gpu else ()):
            peaks[dtype] = perf.matmul_peak(dtype, n)
    cls_names = [c for c in args.classifiers.split(",") if c.strip()]
    # The reference case runs first, so that the others can report speed-ups over it.
    names = sorted(args.case_names, key=lambda n: CASES[n].impl != "reference")
    classifier_results: dict[str, dict[str, Any] | None] = {}
    for impl in dict.fromkeys(CASES[n].impl for n in names):
        classifier_results[impl] = None
        if cls_names:
            seconds, sizes = measure_classifiers(
                cls_names, args.cls_train, args.cls_test, features_path=args.features, impl=impl
            )
            classifier_results[impl] = {
                "seconds": seconds,
                "total_s": round(sum(seconds.values()), 2),
                "sizes": sizes,
            }
    records = []
    reference = None
    for name in names:
        case = CASES[name]
        overrides = {}
        if gpu:
            # GPU steps take milliseconds: longer windows keep launch jitter out of the median.
            overrides.update(
                window_steps=max(case.window_steps, 25),
                warmup_steps=max(case.warmup_steps, 10),
                extract_images=max(case.extract_images, 8192),
            )
        if args.windows:
            overrides["windows"] = args.windows
        if args.window_steps:
            overrides["window_steps"] = args.window_steps
        if args.eval_batch_size:
            overrides["eval_batch_size"] = args.eval_batch_size
        case = dataclasses.replace(case, **overrides)
        record = run_case(
            name,
            case,
            steps_per_call=args.steps_per_call,
            jit_compile=args.jit_compile,
            strategy=args.strategy,
            peaks=peaks,
            classifier_result=classifier_results[case.impl],
            machine=machine,
            threads=threads,
            reference=reference,
        )
        if case.impl == "reference" and _same_config(case):
            reference = record
        line = json.dumps(record, sort_keys=False)
        print(line, flush=True)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
        records.append(record)
    return records


def run_cli() -> None:
    """Console entry point: one-line errors for bad options."""
    try:
        main()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_cli()
