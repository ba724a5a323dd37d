"""Serving throughput: the in-process Detector against its exports in every runtime.

``python -m deep_representation_one_class.bench --serving=RUN[,RUN...]`` exports each run folder
(SavedModel, TFLite float32 and dynamic int8, ONNX) into a scratch folder, then scores the run's
own test images, in one process and one sitting, with:

  detector         ``Detector.score`` (the package's path: tf.data preprocessing, float64 scorers)
  savedmodel       the SavedModel's signature (``tf.saved_model.load``)
  tflite           LiteRT / ``tf.lite.Interpreter`` (XNNPACK), float32
  tflite_int8      the same with int8 weights (``--quantize=dynamic_int8``)
  onnxruntime      ONNX Runtime, CPU provider (extra ``[export]``)
  openvino         OpenVINO compiling the TFLite file for the CPU (extra ``[openvino]``; its
                   ONNX and TensorFlow frontends cannot convert these exports)

Per runtime: images/s on batches (median of timed windows after a warm-up), the latency of one
image (median and 90th percentile of single-image calls), the load time, and how far its scores
are from the Detector's on the same images (largest difference over the score range, and the
change of the test AUROC); a runtime whose package is missing or that rejects the model is
recorded as skipped with the reason. Every record carries the CPU flags, the thread settings
and the load average, and goes to ``--out`` (JSONL, default ``results/serving_bench.jsonl``);
``--serving_md`` writes the Markdown table of the records of this command.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.benchmarks import perf
from deep_representation_one_class.benchmarks.cases import BenchError
from deep_representation_one_class.config import eval_compute_precision
from deep_representation_one_class.evaluation import metrics
from deep_representation_one_class.serving import convert, runtimes
from deep_representation_one_class.serving import export as export_lib
from deep_representation_one_class.serving.detector import Detector
from deep_representation_one_class.training import build
from deep_representation_one_class.utils import cpuinfo as cpuinfo_lib
from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf

# Runtime name -> (export format, quantize, runtimes.RUNTIMES loader); detector is separate.
RUNTIME_CASES = {
    "savedmodel": ("savedmodel", "none", "savedmodel"),
    "tflite": ("tflite", "none", "tflite"),
    "tflite_int8": ("tflite", "dynamic_int8", "tflite"),
    "onnxruntime": ("onnx", "none", "onnxruntime"),
    "openvino": ("tflite", "none", "openvino"),
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "fma")


def cpu_flags() -> list[str]:
    """The SIMD flags of ``/proc/cpuinfo`` that decide which kernels run."""
    have = cpuinfo_lib.cpu_flags()
    return [flag for flag in CPU_FLAGS if flag in have]


def _windows(fn: Callable[[], None], windows: int, calls: int) -> list[float]:
    """Seconds per call of ``fn`` in ``windows`` windows of ``calls`` calls each."""
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls)
    return out


def _score_diffs(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    """How far a runtime's scores are from the Detector's, per classifier.

    ``max_diff_over_range``: the largest |difference| divided by the spread (max - min) of the
    Detector's scores, which stays meaningful for scores that cross zero (GDE log-densities,
    OC-SVM decisions); ``auroc_delta``: the largest change of the test AUROC (x100).
    """
    keys = sorted(set(got) & set(want))
    over_range, auroc_delta = {}, {}
    for k in keys:
        g = np.asarray(got[k], np.float64)
        spread = float(np.ptp(want[k])) or 1.0
        over_range[k] = float(np.max(np.abs(g - want[k]))) / spread
        if labels is not None and 0 < labels.sum() < labels.size:
            auroc_delta[k] = abs(metrics.auroc(labels, g) - metrics.auroc(labels, want[k]))
    return {
        "max_diff_over_range": max(over_range.values()) if over_range else None,
        "diff_over_range": {k: float(f"{v:.3g}") for k, v in over_range.items()},
        "max_auroc_delta": max(auroc_delta.values()) if auroc_delta else None,
    }


def measure(
    score: Callable[[np.ndarray], dict[str, np.ndarray]],
    images: np.ndarray,
    batch: int,
    reference: dict[str, np.ndarray] | None,
    windows: int = 5,
    latency_calls: int = 20,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Throughput, single-image latency and score difference of one scoring function."""
    batch = min(batch, len(images))
    x = images[:batch]
    t0 = time.perf_counter()
    score(x)  # warm-up: first call traces / allocates
    first = time.perf_counter() - t0
    score(images[:1])
    per_batch = _windows(lambda: score(x), windows, max(1, 64 // batch))
    single = _windows(lambda: score(images[:1]), latency_calls, 1)
    got = score(images) if reference is not None else {}
    diffs = _score_diffs(got, reference, labels) if reference is not None else {}
    return {
        "images_per_s": round(batch / statistics.median(per_batch), 1),
        "batch": batch,
        "latency_ms_median": round(1000 * statistics.median(single), 2),
        "latency_ms_p90": round(1000 * float(np.percentile(single, 90)), 2),
        "first_call_s": round(first, 3),
        **diffs,
    }


def bench_run(
    run_dir: str,
    runtimes_wanted: Sequence[str],
    batch: int,
    max_images: int,
    threads: int,
    windows: int = 5,
) -> list[dict[str, Any]]:
    """Exports one run in every format and measures each runtime on its test images."""
    det = Detector.load(run_dir)
    data = build.load_data(det.config)
    images = np.asarray(data.test_x[:max_images])
    labels = np.asarray(data.test_y[:max_images]).astype(bool)
    h, w, _ = det.input_shape
    # Batches of at most 2**19 pixels: 64 images at 32x32 ... 8 at 256x256.
    batch = max(1, min(batch, 2**19 // (h * w)))
    base = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "dataset": det.config.dataset,
        "input_shape": list(det.input_shape),
        "network": f"{det.config.net_type} width {det.config.net_width:g}",
        # What the served network computes in (the run's --eval_precision).
        "precision": eval_compute_precision(det.config),
        "classifiers": det.classifiers,
        "images": len(images),
        "cpu_flags": cpu_flags(),
        "threads": threads,
    }
    records = []
    load_start = perf.loadavg()
    want = det.score(images)
    record = {"runtime": "detector", "load_s": None, "loadavg_start": load_start}
    record.update(measure(det.score, images, batch, want, windows, labels=labels))
    record["loadavg_end"] = perf.loadavg()
    records.append({**base, **record})
    scratch = tempfile.mkdtemp(prefix="droc_serving_bench_")
    exported: dict[tuple[str, str], str] = {}
    try:
        for name in runtimes_wanted:
            fmt, quantize, loader = RUNTIME_CASES[name]
            record = {"runtime": name, "loadavg_start": perf.loadavg()}
            try:
                if (fmt, quantize) not in exported:
                    out = os.path.join(scratch, f"{fmt}_{quantize}")
                    t0 = time.perf_counter()
                    export_lib.export_model(
                        run_dir, out, fmt, quantize, det.classifiers, det.feature
                    )
                    record["export_s"] = round(time.perf_counter() - t0, 2)
                    exported[(fmt, quantize)] = out
                t0 = time.perf_counter()
                score = runtimes.load(loader, exported[(fmt, quantize)], threads)
                record["load_s"] = round(time.perf_counter() - t0, 3)
                record.update(measure(score, images, batch, want, windows, labels=labels))
            except (runtimes.RuntimeMissingError, convert.ConvertError) as e:
                record["skipped"] = str(e)
            except Exception as e:  # a runtime that rejects the model: recorded, not fatal
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                record["skipped"] = f"failed: {type(e).__name__}: {first}"
            record["loadavg_end"] = perf.loadavg()
            records.append({**base, **record})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [{**r, "timestamp": stamp} for r in records]


def render_markdown(records: Sequence[dict[str, Any]]) -> str:
    """One table: a row per (run, runtime)."""
    lines = [
        "| run | input, precision | runtime | images/s (batch) | 1-image latency ms (median / p90) "
        "| max score diff / score range | max AUROC change | load s | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        shape = "x".join(str(v) for v in r["input_shape"]) + f", {r.get('precision', '?')}"
        if "skipped" in r:
            lines.append(
                f"| {r['run']} | {shape} | {r['runtime']} | skipped: {r['skipped']} ||||||"
            )
            continue
        diff = r.get("max_diff_over_range")
        delta = r.get("max_auroc_delta")
        load = r.get("load_s")
        lines.append(
            f"| {r['run']} | {shape} | {r['runtime']} | {r['images_per_s']:.0f} ({r['batch']}) "
            f"| {r['latency_ms_median']:.1f} / {r['latency_ms_p90']:.1f} "
            f"| {'–' if diff is None else f'{diff:.1e}'} "
            f"| {'–' if delta is None else f'{delta:.2f}'} "
            f"| {'–' if load is None else f'{load:.2f}'} "
            f"| {r['loadavg_start'][0]:.1f}–{r['loadavg_end'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(
    runs: Sequence[str],
    out: str,
    md_out: str = "",
    runtimes_wanted: Sequence[str] = tuple(RUNTIME_CASES),
    batch: int = 64,
    max_images: int = 256,
    windows: int = 5,
) -> list[dict[str, Any]]:
    """Benchmarks every run; appends the records to ``out`` and writes ``md_out`` if given."""
    unknown = [r for r in runtimes_wanted if r not in RUNTIME_CASES]
    if unknown:
        raise BenchError(f"unknown runtimes {unknown}; valid: {', '.join(RUNTIME_CASES)}")
    missing = [r for r in runs if not os.path.isfile(rf.path(r, rf.CONFIG))]
    if missing:
        raise BenchError(f"--serving: {missing[0]} is not a run folder (no {rf.CONFIG})")
    threads = os.cpu_count() or 1
    records = []
    for run in runs:
        for record in bench_run(run, runtimes_wanted, batch, max_images, threads, windows):
            print(json.dumps(record), flush=True)
            records.append(record)
            if out:
                os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
                with open(out, "a") as f:
                    f.write(json.dumps(record) + "\n")
    if md_out:
        io.write_text(md_out, render_markdown(records))
    return records


if __name__ == "__main__":
    # Re-render the Markdown table of a JSONL file: python -m ...benchmarks.serving FILE.jsonl
    import sys

    with open(sys.argv[1]) as f:
        sys.stdout.write(render_markdown([json.loads(line) for line in f if line.strip()]))
