"""The speed benchmark (tiny case end to end, JSON schema, FLOP counter) and the numerics of the
speed changes it measures (fused BatchNorm, 'same' padding, XLA step)."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import resolve
from deep_representation_one_class.benchmarks import bench, cases, isa, measure, perf
from deep_representation_one_class.models import build_model
from deep_representation_one_class.models.resnet import FusedBatchNorm
from deep_representation_one_class.training import build, distribute, loop


def _one_conv_model(padding: str = "valid", stride: int = 1) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=stride, padding=padding, use_bias=False)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, use_bias=False)(x))


# ----------------------------------------------------------------------------- FLOP counter
def test_flop_counter_matches_hand_count_for_one_conv():
    model = _one_conv_model()
    conv = 6 * 6 * 4 * (3 * 3 * 3)  # output positions x out channels x (kh * kw * in channels)
    dense = 4 * 5
    assert perf.count_flops(model, (8, 8, 3), training=False) == 2 * (conv + dense)
    # Training: conv forward + filter gradient (no gradient w.r.t. the image), dense forward +
    # weight gradient + input gradient.
    assert perf.count_flops(model, (8, 8, 3), training=True) == 2 * (2 * conv + 3 * dense)


def test_flop_counter_strided_same_padding():
    model = _one_conv_model(padding="same", stride=2)
    conv = 4 * 4 * 4 * 27
    assert perf.count_flops(model, (8, 8, 3), training=False) == 2 * (conv + 20)


def test_flop_counter_resnet18_forward_matches_analytic_count():
    model = build_model("resnet18", 1.0, (32, 32, 3), (512,) * 8 + (128,))
    stem = 32 * 32 * 64 * 27
    stage1 = 4 * 32 * 32 * 64 * 64 * 9
    # Stages 2-4 each: a strided 3x3, three 3x3 and a 1x1 shortcut; all have equal cost.
    stage2 = 16 * 16 * 128 * (64 * 9 + 3 * 128 * 9 + 64)
    head = 8 * 512 * 512 + 512 * 128
    macs = stem + stage1 + 3 * stage2 + head
    assert perf.count_flops(model, (32, 32, 3), training=False) == 2 * macs
    assert 2 * macs / 1e9 == pytest.approx(1.115, abs=1e-3)


# ----------------------------------------------------------------------------- the harness
@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    """{case: (returned record, record read back from --out)} of one two-case command."""
    out = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    records = bench.main(
        [
            "--cases=tiny,tiny_reference",
            f"--out={out}",
            "--cls_train=200",
            "--cls_test=300",
            "--classifiers=auc,gde",
            "--peak_size=256",
            "--strategy=default",
        ]
    )
    lines = out.read_text().splitlines()
    assert len(records) == len(lines) == 2
    # The reference case runs first, whatever the order of --cases.
    assert [r["case"] for r in records] == ["tiny_reference", "tiny"]
    return {r["case"]: (r, json.loads(line)) for r, line in zip(records, lines)}


@pytest.fixture(scope="module")
def tiny_record(tiny_records):
    return tiny_records["tiny"]


def test_reference_case_runs_the_reference_path(tiny_records):
    r, from_file = tiny_records["tiny_reference"]
    assert from_file == r
    assert r["impl"] == "reference" and r["case"] == "tiny_reference"
    assert r["train_images_per_s"] > 0 and r["extract_images_per_s"] > 0
    # Its classifiers are timed on the reference's code path, with the same keys.
    assert set(r["classifier_seconds"]) == {"pool.auc", "pool.gde", "embed.auc", "embed.gde"}
    assert r["vs_reference"] is None  # ratios are for the paper configuration only


def test_tiny_case_writes_one_json_line_with_the_schema(tiny_record):
    record, from_file = tiny_record
    assert from_file == record
    assert set(cases.SCHEMA_KEYS) <= set(record)
    assert record["case"] == "tiny" and record["method"] == "contrastive"
    assert record["images_per_step"] == 2 * record["batch"] == 16
    assert record["precision"] == "float32" and record["device"] in ("cpu", "gpu")
    assert set(record["machine"]) >= {"cpu", "cores", "tensorflow", "keras"}
    assert len(record["loadavg_start"]) == 3


def test_tiny_case_numbers_are_consistent(tiny_record):
    r, _ = tiny_record
    for key in ("train_images_per_s", "e2e_images_per_s", "data_images_per_s"):
        assert r[key] > 0, key
    assert r["extract_images_per_s"] > 0
    assert r["train_images_per_s"] == pytest.approx(
        r["images_per_step"] / r["train_step_s"], rel=0.01
    )
    assert r["train_step_s"] == pytest.approx(np.median(r["train_step_s_windows"]), rel=0.01)
    assert r["gflop_per_image_train"] > r["gflop_per_image_forward"] > 0
    assert r["achieved_gflop_s"] == pytest.approx(
        r["gflop_per_image_train"] * r["train_images_per_s"], rel=0.02
    )
    assert set(r["peak_gflop_s"]) == {"float32", "bfloat16"} and r["peak_gflop_s"]["float32"] > 0
    assert r["pct_of_peak"]["float32"] == pytest.approx(
        100 * r["achieved_gflop_s"] / r["peak_gflop_s"]["float32"], abs=0.2
    )
    per_cpu = r["gflop_per_image_train"] * r["images_per_step"] / r["train_cpu_s_per_step"]
    assert r["pct_of_peak_cpu_time"]["bfloat16"] == pytest.approx(
        100 * per_cpu / r["peak_gflop_per_cpu_s"]["bfloat16"], rel=0.05
    )
    assert r["eval_seconds_estimate"] > r["classifier_total_s"]
    assert set(r["classifier_seconds"]) == {"pool.auc", "pool.gde", "embed.auc", "embed.gde"}
    assert r["classifier_total_s"] == pytest.approx(sum(r["classifier_seconds"].values()), abs=0.02)
    assert r["classifier_sizes"] == {
        "train": 200,
        "test": 300,
        "dims": [512, 128],
        "source": "synthetic",
    }
    assert r["paper_steps_per_class"] == 2048 * (5000 // 8)
    # Only the paper configuration has reference numbers.
    assert r["vs_reference"] is None and r["vs_issue_numbers"] is None
    assert r["impl"] == "this"


def test_speedups_are_reported_for_the_reference_configuration_only():
    ratios = bench._vs_issue_numbers(bench.CASES["paper_bf16"], 86.0, 300.0)
    assert ratios == {"train": 2.0, "extract": 2.0}
    assert bench._vs_issue_numbers(bench.CASES["quick_bf16"], 86.0, 300.0) is None
    ref = {"train_images_per_s": 40.0, "extract_images_per_s": 100.0, "eval_seconds_estimate": 90.0}
    ratios = bench._vs_reference(bench.CASES["paper_bf16"], 120.0, 250.0, 30.0, ref)
    assert ratios == {"train": 3.0, "extract": 2.5, "eval": 3.0}
    assert bench._vs_reference(bench.CASES["paper_bf16"], 120.0, 250.0, 30.0, None) is None
    assert bench._vs_reference(bench.CASES["quick_bf16"], 120.0, 250.0, 30.0, ref) is None


def test_reference_classifier_path_matches_this_packages_scores():
    # The reference path is only timed, but it must compute the same classifiers: the same
    # AUROCs on the same features (it works in float32, this package in float64).
    from deep_representation_one_class.evaluation import metrics

    train, test, labels = measure.synthetic_features(300, 400, dims=(24, 8))
    names = ["auc", "kde", "gde", "kocsvm", "locsvm"]
    timings, theirs = measure.reference_classifier_path(names, train, test, labels)
    assert set(timings) == set(theirs) == {f"{f}.{n}" for f in ("pool", "embed") for n in names}
    ours = metrics.evaluate_features(train, test, labels, scorers=names)
    for key, value in theirs.items():
        assert 0.0 <= value <= 100.0, key
        assert ours[key] == pytest.approx(value, abs=0.05), key
    # A scorer the reference did not have has no reference path to time: it is skipped.
    assert measure.reference_classifier_path(["toy"], train, test, labels) == ({}, {})


def test_reference_layers_build_the_same_function():
    # The reference's layers (Keras BatchNorm, explicit padding): same variables, same
    # outputs, so the benchmark's reference case times the same model.
    import keras

    from deep_representation_one_class.benchmarks.reference_layers import REFERENCE_TRUNK
    from deep_representation_one_class.models import build_model, resnet

    keras.utils.set_random_seed(0)
    fast = build_model("resnet10", 0.125, (32, 32, 3), (16,), 0)
    ref = build_model("resnet10", 0.125, (32, 32, 3), (16,), 0, **REFERENCE_TRUNK)
    assert not any(isinstance(layer, resnet.FusedBatchNorm) for layer in ref.layers)
    assert any(isinstance(layer, resnet.FusedBatchNorm) for layer in fast.layers)
    ref.set_weights(fast.get_weights())
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    for training in (False, True):
        a, b = fast(x, training=training), ref(x, training=training)
        np.testing.assert_allclose(a["pools"], b["pools"], rtol=1e-4, atol=1e-5)


def test_bad_case_is_a_one_line_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "deep_representation_one_class.bench", "--cases=nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        "error: unknown --cases ['nope']; valid: reference_fp32, paper_fp32"
    )
    with pytest.raises(bench.BenchError, match="steps_per_call"):
        bench.main(["--cases=tiny", "--steps_per_call=0"])


def test_synthetic_features_shapes_and_labels():
    train, test, labels = measure.synthetic_features(50, 40, dims=(16, 8))
    assert train["pool"].shape == (50, 16) and test["embed"].shape == (40, 8)
    assert (train["pool"] >= 0).all() and (test["embed"] < 0).any()
    assert labels.sum() == 36 and set(np.unique(labels)) == {0, 1}


def test_classifiers_on_saved_run_features(tmp_path):
    train, test, labels = measure.synthetic_features(60, 50, dims=(8, 4))
    path = tmp_path / "embeddings.npz"
    np.savez(
        path,
        cls_pool=train["pool"],
        cls_embed=train["embed"],
        test_pool=test["pool"],
        test_embed=test["embed"],
        test_y=labels,
    )
    seconds, sizes = measure.measure_classifiers(["auc"], 0, 0, features_path=str(path))
    assert set(seconds) == {"pool.auc", "embed.auc"}
    assert sizes == {"train": 60, "test": 50, "dims": [8, 4], "source": str(path)}
    with pytest.raises(bench.BenchError, match=r"embeddings\.npz"):
        measure.measure_classifiers(["auc"], 0, 0, features_path=str(tmp_path / "missing.npz"))


# ----------------------------------------------------------------------------- speed changes
@pytest.mark.parametrize("dtype", [None, "mixed_bfloat16"])
def test_fused_batchnorm_matches_keras_batchnorm(dtype):
    x = tf.random.stateless_normal([6, 5, 5, 4], [0, 1]) * 3.0 + 1.0
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)
    fused = FusedBatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)
    weight = tf.random.stateless_normal(x.shape, [2, 3])
    results = []
    for layer in (ref, fused):
        layer.build(x.shape)
        layer.gamma.assign(tf.random.stateless_normal([4], [4, 5]) + 1.0)
        layer.beta.assign(tf.random.stateless_normal([4], [6, 7]))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append(
            [y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)]
        )
    assert fused.gamma.dtype == fused.moving_variance.dtype == "float32"
    assert results[1][0].dtype == (tf.bfloat16 if dtype else tf.float32)
    tol = 2e-2 if dtype else 1e-4
    for a, b in zip(*results):
        a = np.asarray(tf.cast(a, tf.float32))
        b = np.asarray(tf.cast(b, tf.float32))
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max())
    # The moving variance is the biased batch variance, as in Keras (not the kernel's n/(n-1)).
    biased = np.var(np.asarray(x).reshape(-1, 4), axis=0)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * biased, rtol=1e-3)


def test_same_padding_equals_explicit_symmetric_padding():
    x = tf.random.stateless_normal([2, 9, 9, 3], [0, 2])
    kernel = tf.random.stateless_normal([3, 3, 3, 5], [1, 2])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    explicit = tf.nn.conv2d(padded, kernel, 1, "VALID")
    np.testing.assert_allclose(tf.nn.conv2d(x, kernel, 1, "SAME"), explicit, atol=1e-5)
    # With stride 2 on an even input 'same' pads (0, 1), not (1, 1): the builder keeps the
    # explicit pad there.
    x = x[:, :8, :8]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    explicit = tf.nn.conv2d(padded, kernel, 2, "VALID")
    assert not np.allclose(tf.nn.conv2d(x, kernel, 2, "SAME"), explicit, atol=1e-3)


def test_resnet_keeps_explicit_padding_only_for_strided_convs():
    model = build_model("resnet18", 0.0625, (32, 32, 3))
    pads = [layer.name for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert pads == ["conv3_b1_c1_pad", "conv4_b1_c1_pad", "conv5_b1_c1_pad"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {c.padding for c in convs if c.strides == (1, 1) and c.kernel_size == (3, 3)} == {"same"}
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(layer, FusedBatchNorm) for layer in bns)


def test_jit_compiled_train_step_runs():
    cfg = resolve.build(
        dataset="fake",
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(8,),
        batch_size=4,
        jit_compile=True,
        strategy="default",
    )
    trainer = loop.Trainer(cfg, distribute.make_strategy("default"), 2, build.StepPlan(10, 10, 1))
    views = tf.random.stateless_uniform([4, 32, 32, 3], [0, 3])
    ds = tf.data.Dataset.from_tensors((views, views[::-1])).repeat()
    total, bad = trainer.train_fn()(iter(ds), tf.constant(2, tf.int64))
    assert int(bad) == -1 and np.isfinite(total.numpy()).all()
    assert int(trainer.step.numpy()) == 2


def test_summary_takes_medians_per_case(tmp_path, tiny_records):
    ref, _ = tiny_records["tiny_reference"]
    rows = []
    for i, (train, ratio) in enumerate([(10.0, 2.0), (30.0, 4.0), (20.0, 3.0)]):
        r = dict(tiny_records["tiny"][0])
        r["train_images_per_s"] = train
        r["vs_reference"] = {"train": ratio, "extract": None, "eval": 1.5}
        r["loadavg_start"] = [float(i), 0.0, 0.0]
        rows.append(r)
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [ref, *rows]) + "\n")
    table = bench.summarize(str(path))
    line = next(x for x in table.splitlines() if x.startswith("| tiny |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["tiny", "3", "20", "3.00x"]
    assert cells[6] == "–" and cells[8] == "1.50x" and cells[9] == "1.0"
    assert "| tiny_reference | 1 |" in table
    assert bench.main([f"--summarize={path}"]) == []
    with pytest.raises(bench.BenchError, match="no records"):
        (tmp_path / "empty.jsonl").write_text("")
        bench.summarize(str(tmp_path / "empty.jsonl"))


@pytest.mark.parametrize(
    "dtype,stages,expected",
    [
        ("mixed_bfloat16", ("conv5",), {"conv4": "bfloat16", "conv5": "float32"}),
        ("mixed_bfloat16", (), {"conv4": "bfloat16", "conv5": "bfloat16"}),
        ("mixed_bfloat16", ("conv2", "conv5"), {"conv2": "float32", "conv3": "bfloat16"}),
        (None, ("conv5",), {"conv2": "float32", "conv5": "float32"}),
    ],
)
def test_float32_stages_under_mixed_precision(dtype, stages, expected):
    from deep_representation_one_class.models import build_model

    model = build_model("resnet10", 0.125, (32, 32, 3), (8,), 0, dtype=dtype, float32_stages=stages)
    for stage, compute in expected.items():
        convs = [layer for layer in model.layers if layer.name.startswith(f"{stage}_b1_c")]
        assert convs and all(layer.compute_dtype == compute for layer in convs), stage
    # The pooled features follow the last stage; every output is float32.
    pools = model.get_layer("pools").compute_dtype
    assert pools == ("float32" if "conv5" in stages or dtype is None else "bfloat16")
    out = model(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert {v.dtype.name for v in out.values()} == {"float32"}


def test_float32_stages_are_validated_and_round_trip():
    from deep_representation_one_class import resolve

    cfg = config_lib.Config()
    assert cfg.float32_stages == ("conv5",)
    with pytest.raises(config_lib.ConfigError, match=r"float32_stages.*valid: any of conv2"):
        resolve.validate(cfg.replace(float32_stages=("conv6",)))
    back = config_lib.Config.from_dict(cfg.replace(float32_stages=()).to_dict())
    assert back.float32_stages == ()
    # Runs written before the option existed load with the default.
    d = cfg.to_dict()
    del d["float32_stages"]
    assert config_lib.Config.from_dict(d).float32_stages == ("conv5",)


def test_timed_windows_measure_seconds_per_step_and_cpu():
    # A step that sleeps 20 ms (no CPU) and one that spins for 20 ms of wall time: the per-step
    # times must be ~0.02 s each, and only the spinning one uses CPU (how much depends on the
    # machine's load, so only the order is checked). A harness dividing by the number of
    # windows instead of steps, or timing the whole call, would fail.
    import time

    def sleeping(steps):
        time.sleep(0.02 * steps)

    def spinning(steps):
        end = time.perf_counter() + 0.02 * steps
        while time.perf_counter() < end:
            pass

    windows, cpu_sleep = measure._timed_windows(sleeping, windows=3, window_steps=5)
    # (Upper bounds are loose: a busy machine delays the end of a window.)
    assert len(windows) == 3 and all(0.019 < w < 0.2 for w in windows), windows
    windows, cpu_spin = measure._timed_windows(spinning, windows=2, window_steps=5)
    assert len(windows) == 2 and all(0.019 < w < 0.2 for w in windows), windows
    assert cpu_spin > 10 * cpu_sleep and cpu_spin <= 0.03, (cpu_sleep, cpu_spin)


def test_eval_estimate_is_extraction_plus_classifiers(tiny_record):
    r, _ = tiny_record
    n = r["classifier_sizes"]["train"] + r["classifier_sizes"]["test"]
    want = r["extract_first_call_s"] + n / r["extract_images_per_s"] + r["classifier_total_s"]
    assert r["eval_seconds_estimate"] == pytest.approx(want, rel=0.02, abs=0.02)


# ----------------------------------------------------------------------------- ISA and CPU time
def test_records_carry_cpu_seconds_isa_and_allocator(tiny_record):
    r, _ = tiny_record
    assert r["cpu_user_s"] > 0 and r["cpu_system_s"] >= 0
    assert r["cpu_system_pct"] == pytest.approx(
        100 * r["cpu_system_s"] / (r["cpu_user_s"] + r["cpu_system_s"]), abs=0.1
    )
    assert r["isa"]["name"] and r["isa"]["cpu_flags"] == isa.cpu_flags()
    assert r["allocator"]["allocator"] in ("glibc", "glibc-tuned", "tcmalloc", "jemalloc")


def test_isa_record_names_an_emulation(monkeypatch):
    monkeypatch.setattr(isa, "cpu_flags", lambda: ["avx", "avx2", "avx512_bf16", "avx512f"])
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert isa.describe()["name"] == "avx512_bf16" and not isa.describe()["emulated"]
    assert isa.needs_child("avx2") and not isa.needs_child("native")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert isa.describe() | {"cpu_flags": None} == {
        "name": "avx2",
        "emulated": True,
        "onednn_max_cpu_isa": "avx2",
        "cpu_flags": None,
    }
    assert not isa.needs_child("avx2")  # this process is already capped
    monkeypatch.setattr(isa, "cpu_flags", lambda: ["avx", "avx2", "fma"])
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert isa.describe()["name"] == "avx2" and not isa.needs_child("avx2")  # a real AVX2 CPU


@pytest.mark.slow  # a child process, about 13 s
def test_avx2_case_runs_capped_in_a_child(tmp_path):
    out = tmp_path / "bench.jsonl"
    (record,) = bench.main(
        [
            "--cases=tiny",
            "--isa=avx2",
            f"--out={out}",
            "--cls_train=100",
            "--cls_test=100",
            "--classifiers=gde",
            "--peak_size=128",
            "--strategy=default",
        ]
    )
    assert json.loads(out.read_text()) == record
    assert record["isa"]["name"] == "avx2"
    if "avx512f" in isa.cpu_flags():
        assert record["isa"]["emulated"] and record["isa"]["onednn_max_cpu_isa"] == "avx2"
        assert record["process_cpu_user_s"] >= record["cpu_user_s"] > 0


def test_bad_isa_is_a_usage_error():
    with pytest.raises(cases.BenchError, match="--isa must list native and/or avx2"):
        bench.main(["--cases=tiny", "--isa=avx9000"])
