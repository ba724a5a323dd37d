"""TFLite and ONNX exports: scores against the in-process Detector, loading without the package.

The run is a tiny Fashion-MNIST run on a real subset of the shipped Fashion-MNIST files
(600 training and 200 test images), so the exported graph has the real preprocessing (28x28
gray padded to 32x32x3) and classifiers fitted on real features.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAKE_RUN_CLASSIFIERS as CLASSIFIERS
from conftest import tiny_config

from deep_representation_one_class.serving import convert, runtimes
from deep_representation_one_class.serving import export as export_lib


def _onnx_or_skip():
    for module in ("tf2onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed (pip install '.[export]'); ONNX not tested")


def _subset_fmnist(root) -> str:
    """The first 600 training and 200 test images of the shipped Fashion-MNIST, as IDX files."""
    from deep_representation_one_class.datasets import fmnist

    counts = {"train": 600, "t10k": 200}
    os.makedirs(root, exist_ok=True)
    for name in fmnist.IDX_FILES.values():
        arr = fmnist.read_idx(fmnist.SHIPPED_DIR / f"{name}.gz")
        arr = arr[: counts[name.split("-")[0]]].astype(np.uint8)
        head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in arr.shape
        )
        with open(os.path.join(root, f"{name}.gz"), "wb") as f:
            f.write(gzip.compress(head + arr.tobytes()))
    return str(root)


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory) -> str:
    from deep_representation_one_class.training import runner

    base = tmp_path_factory.mktemp("fmnist_run")
    cfg = tiny_config(
        dataset="fmnistood",
        root=_subset_fmnist(base / "data"),
        strategy="default",
        model_dir=str(base / "run"),
        classifiers=CLASSIFIERS,
    )
    runner.run(cfg)
    return str(base / "run")


@pytest.fixture(scope="module")
def images_and_scores(fmnist_run):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build

    det = Detector.load(fmnist_run, CLASSIFIERS)
    x = build.load_data(det.config).test_x
    return x, det.score(x)


_EXPORTS: dict[tuple[str, str, str], str] = {}


def _export(run_dir, tmp_path_factory, fmt, quantize="none") -> str:
    """The run's export in ``fmt`` (converted once per test module)."""
    if (run_dir, fmt, quantize) not in _EXPORTS:
        out = str(tmp_path_factory.mktemp(f"export_{fmt}_{quantize}") / "model")
        export_lib.export_model(run_dir, out, fmt, quantize, CLASSIFIERS)
        _EXPORTS[(run_dir, fmt, quantize)] = out
    return _EXPORTS[(run_dir, fmt, quantize)]


# The exports compute in float32. 1e-3 relative, plus 1e-5 absolute for scores near zero: the
# 1-NN cosine distance 1 - max cos is a difference of numbers near 1, whose float32 rounding
# (~1e-7 per term over D terms) is absolute, not relative.
ABS_TOL = 1e-5


def _relative_error(got, want) -> dict[str, float]:
    """Largest |got - want| / (|want| + ABS_TOL / 1e-3) per output: < 1e-3 is the tolerance."""
    return {
        k: float(
            np.max(
                np.abs(np.asarray(got[k], np.float64) - want[k])
                / (np.abs(want[k]) + ABS_TOL / 1e-3)
            )
        )
        for k in want
    }


def _check_in_isolated_process(fmt, out, x, want, tmp_path):
    """Scores ``x`` with the exported file in a process that cannot import this package (-I:
    no PYTHONPATH, no user site, no script folder on sys.path; run from an empty folder, so
    neither the repository nor an editable install is importable) and compares with ``want``."""
    np.save(tmp_path / "x.npy", x)
    model = os.path.join(out, convert.FORMATS.get(fmt).filename)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _LOADER, fmt, model, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = _relative_error(got, want)
    assert max(errors.values()) < 1e-3, errors


def test_float32_lowering_rewrites_every_double_and_bfloat16():
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float64, [None], name="x")
        half = tf.cast(tf.cast(x, tf.bfloat16) * tf.constant(3.0, tf.bfloat16), tf.float64)
        tf.identity(x * np.float64(0.5) + half, name="y")
    gd = graph.as_graph_def()
    convert.lower_to_float32(gd)
    lowered = {tf.float64.as_datatype_enum, tf.bfloat16.as_datatype_enum}
    for node in gd.node:
        for attr in node.attr.values():
            assert attr.type not in lowered and attr.tensor.dtype not in lowered, node
    # The rewritten graph is valid and computes the same thing in float32.
    fn = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(gd, name=""), [])
    run = fn.prune("x:0", "y:0")
    got = run(tf.constant([1.0, 2.0], tf.float32)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [3.5, 7.0])


def test_tflite_matches_detector(fmnist_run, tmp_path_factory, images_and_scores):
    x, want = images_and_scores
    out = _export(fmnist_run, tmp_path_factory, "tflite")
    got = runtimes.load("tflite", out)(x)
    assert set(got) == set(want)
    errors = _relative_error(got, want)
    assert max(errors.values()) < 1e-3, errors
    with open(os.path.join(out, export_lib.EXPORT_INFO)) as f:
        info = json.load(f)
    assert info["format"] == "tflite" and info["model_file"] == "model.tflite"
    assert info["input_shape"] == [32, 32, 3] and "pool.kde" in info["thresholds"]["quantiles"]


def test_tflite_dynamic_int8_keeps_the_ranking(fmnist_run, tmp_path_factory, images_and_scores):
    from deep_representation_one_class.evaluation import metrics
    from deep_representation_one_class.serving.detector import read_run_config
    from deep_representation_one_class.training import build

    labels = (build.load_data(read_run_config(fmnist_run)).test_y != 0).astype(int)
    x, want = images_and_scores
    out = _export(fmnist_run, tmp_path_factory, "tflite", "dynamic_int8")
    got = runtimes.load("tflite", out)(x)
    float_size = os.path.getsize(_export(fmnist_run, tmp_path_factory, "tflite") + "/model.tflite")
    assert os.path.getsize(os.path.join(out, "model.tflite")) < float_size
    for name in ("gde", "kde"):
        # int8 weights move the scores (this tiny network is the worst case: 1/16 width); the
        # ranking of the images must stay close and detection must stay far above chance.
        ranks = [np.argsort(np.argsort(np.asarray(v, np.float64))) for v in (want[name], got[name])]
        assert np.corrcoef(*ranks)[0, 1] > 0.8, name
        assert metrics.auroc(labels, np.asarray(got[name], np.float64)) > 70.0, name


def test_onnx_matches_detector(fmnist_run, tmp_path_factory, images_and_scores):
    _onnx_or_skip()
    x, want = images_and_scores
    out = _export(fmnist_run, tmp_path_factory, "onnx")
    got = runtimes.load("onnxruntime", out)(x)
    assert set(got) == set(want)
    errors = _relative_error(got, want)
    assert max(errors.values()) < 1e-3, errors


_LOADER = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deep_representation_one_class", "sklearn"):
            raise ImportError(f"{name} is blocked")
        return None
sys.meta_path.insert(0, Block())
import numpy as np
fmt, path, x = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
if fmt == "tflite":
    import tensorflow as tf
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    out = runner(images=x)
else:
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x})))
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_exports_load_without_the_package(
    fmt, fmnist_run, tmp_path_factory, images_and_scores, tmp_path
):
    if fmt == "onnx":
        _onnx_or_skip()
    x, want = images_and_scores
    out = _export(fmnist_run, tmp_path_factory, fmt)
    _check_in_isolated_process(fmt, out, x[:8], {k: v[:8] for k, v in want.items()}, tmp_path)


def test_export_cli_formats_and_errors(fake_run, tmp_path, capsys):
    out = tmp_path / "m"
    assert export_lib.main(["--model_dir", fake_run, "--out", str(out), "--format=tflite"]) == 0
    assert (out / "model.tflite").is_file() and (out / export_lib.EXPORT_INFO).is_file()
    # An earlier export of another format is replaced only with --overwrite.
    assert export_lib.main(["--model_dir", fake_run, "--out", str(out)]) != 0
    assert "--overwrite" in capsys.readouterr().err
    base = ["--model_dir", fake_run, "--quantize=dynamic_int8"]
    rc = export_lib.main([*base, "--out", str(out), "--format=tflite", "--overwrite"])
    assert rc == 0
    with open(out / export_lib.EXPORT_INFO) as f:
        assert json.load(f)["quantize"] == "dynamic_int8"
    bad = export_lib.main([*base, "--out", str(tmp_path / "q"), "--format=savedmodel"])
    err = capsys.readouterr().err
    assert bad != 0 and "tflite only" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_missing_runtime_is_one_actionable_line(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("no")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(runtimes.RuntimeMissingError, match=r"\[openvino\]"):
        runtimes.load("openvino", str(tmp_path))


def test_serving_bench_records_every_runtime_and_checks_scores(fake_run, tmp_path):
    from deep_representation_one_class.benchmarks import serving

    out, md = tmp_path / "s.jsonl", tmp_path / "s.md"
    records = serving.main(
        [fake_run], str(out), str(md), ("tflite", "onnxruntime"), max_images=16, windows=1
    )
    assert [r["runtime"] for r in records] == ["detector", "tflite", "onnxruntime"]
    assert len(out.read_text().splitlines()) == 3
    for r in records:
        if "skipped" in r:  # onnxruntime absent: recorded with the reason, not dropped
            assert r["runtime"] == "onnxruntime" and "[export]" in r["skipped"]
            continue
        assert r["images_per_s"] > 0 and r["latency_ms_median"] > 0 and r["images"] == 16
        # fake_run is float32: the float32 exports are within ~1e-5 of the score range.
        assert r["max_diff_over_range"] < 1e-3, r
        assert r["max_auroc_delta"] is None or r["max_auroc_delta"] < 0.5, r
        assert r["loadavg_start"] and isinstance(r["cpu_flags"], list)
    assert md.read_text().count(f"| {os.path.basename(fake_run)} |") == 3


def test_serving_bench_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from deep_representation_one_class.benchmarks import bench

    with pytest.raises(bench.BenchError, match="not a run folder"):
        bench.main(["--serving", str(tmp_path)])


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> str:
    """A Fashion-MNIST subset run trained in mixed bfloat16 (emulated on CPUs without
    AVX512_BF16), with the default --eval_precision=float32."""
    from deep_representation_one_class.training import runner

    base = tmp_path_factory.mktemp("bf16_run")
    cfg = tiny_config(
        dataset="fmnistood",
        root=_subset_fmnist(base / "data"),
        strategy="default",
        model_dir=str(base / "run"),
        classifiers=CLASSIFIERS,
        precision="mixed_bfloat16",
    )
    runner.run(cfg)
    return str(base / "run")


def _policies(model) -> set[str]:
    return {layer.dtype_policy.name for layer in model._flatten_layers()}


def _evaluated_scores(run_dir) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The test scores behind the run's summary.json: its saved test features through its
    saved classifiers (nothing refit), and the labels."""
    from deep_representation_one_class.evaluation import classifiers as classifiers_lib

    emb = np.load(os.path.join(run_dir, "embeddings.npz"))
    cset = classifiers_lib.ClassifierSet.load(run_dir, [f"pool.{c}" for c in CLASSIFIERS])
    scores = cset.score({"pool": emb["test_pool"]})
    return {k.split(".", 1)[1]: v for k, v in scores.items()}, emb["test_y"]


def _check_served_as_evaluated(run_dir, det, x):
    """Detector scores equal the run's evaluated test scores; its AUROCs are summary.json's."""
    from deep_representation_one_class.evaluation import metrics
    from deep_representation_one_class.utils import io

    want, labels = _evaluated_scores(run_dir)
    got = det.score(x)
    summary = io.read_json(os.path.join(run_dir, "summary.json"))
    for name in CLASSIFIERS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        auroc = metrics.auroc(labels, got[name])
        assert auroc == pytest.approx(summary["metrics"][f"pool.{name}"], abs=0.01), name
    return got


def test_mixed_bfloat16_run_evaluates_and_serves_in_float32(bf16_run):
    """Training in bfloat16, evaluation and serving in float32 from the float32 weights: the
    Detector's network is float32 and scores exactly what the run evaluated."""
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build
    from deep_representation_one_class.utils import io

    summary = io.read_json(os.path.join(bf16_run, "summary.json"))
    assert summary["config"]["precision"] == "mixed_bfloat16"
    assert summary["config"]["eval_precision"] == "float32"
    assert summary["eval_precision"] == "float32"
    det = Detector.load(bf16_run, CLASSIFIERS)
    assert _policies(det.model) == {"float32"}
    _check_served_as_evaluated(bf16_run, det, build.load_data(det.config).test_x)


@pytest.fixture(scope="module")
def bf16_scores(bf16_run):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build

    det = Detector.load(bf16_run, CLASSIFIERS)
    x = build.load_data(det.config).test_x
    return x, det.score(x)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_mixed_bfloat16_run_exports_match_in_process(
    fmt, bf16_run, bf16_scores, tmp_path_factory, tmp_path
):
    """TFLite and ONNX of a bfloat16-trained run: the in-process scores to 1e-3 relative, in
    this process and in one where the package cannot be imported."""
    if fmt == "onnx":
        _onnx_or_skip()
    x, want = bf16_scores
    out = _export(bf16_run, tmp_path_factory, fmt)
    with open(os.path.join(out, export_lib.EXPORT_INFO)) as f:
        assert json.load(f)["compute_precision"] == "float32"
    got = runtimes.load("tflite" if fmt == "tflite" else "onnxruntime", out)(x)
    errors = _relative_error(got, want)
    assert max(errors.values()) < 1e-3, errors
    _check_in_isolated_process(fmt, out, x[:8], {k: v[:8] for k, v in want.items()}, tmp_path)


def test_old_bfloat16_evaluated_run_keeps_its_behaviour_then_upgrades(bf16_run, tmp_path):
    """A folder written before --eval_precision (features extracted in bfloat16, no setting
    recorded) is served in bfloat16 as evaluated; converting it is refused with the upgrade
    command, which makes it a float32 run; a half-upgraded folder is refused."""
    import shutil

    from deep_representation_one_class.serving.detector import Detector, DetectorError
    from deep_representation_one_class.training import build
    from deep_representation_one_class.training import rescore as evaluate
    from deep_representation_one_class.utils import io

    run = str(tmp_path / "old")
    shutil.copytree(bf16_run, run)
    # The old version's folder: evaluated in the training precision, nothing recorded.
    evaluate.evaluate_run(run, reextract=True, eval_precision="train")
    for name in ("config.json", "summary.json"):
        d = io.read_json(os.path.join(run, name))
        d.pop("eval_precision")
        d.get("config", {}).pop("eval_precision", None)
        io.write_json(os.path.join(run, name), d)
    det = Detector.load(run, CLASSIFIERS)
    assert det.config.eval_precision == "train"
    assert "mixed_bfloat16" in _policies(det.model)
    x = build.load_data(det.config).test_x
    _check_served_as_evaluated(run, det, x)
    with pytest.raises(export_lib.ExportError, match="--eval_precision=float32") as e:
        export_lib.export_model(run, str(tmp_path / "tfl"), "tflite", "none", CLASSIFIERS)
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "tfl").exists()
    # What the previous version's `evaluate --reextract --precision=float32` left: float32
    # classifiers, config.json without the setting (bfloat16 serving) -> refused.
    summary = io.read_json(os.path.join(run, "summary.json"))
    io.write_json(os.path.join(run, "summary.json"), {**summary, "eval_precision": "float32"})
    with pytest.raises(DetectorError, match="--reextract --eval_precision=float32") as e:
        Detector.load(run, CLASSIFIERS)
    assert len(str(e.value).splitlines()) == 1
    # The upgrade: float32 features, classifiers and serving.
    evaluate.evaluate_run(run, reextract=True, eval_precision="float32")
    assert io.read_json(os.path.join(run, "config.json"))["eval_precision"] == "float32"
    det = Detector.load(run, CLASSIFIERS)
    assert _policies(det.model) == {"float32"}
    _check_served_as_evaluated(run, det, x)
