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
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from deep_representation_one_class import cli
from deep_representation_one_class.benchmarks import isa, perf, serving
from deep_representation_one_class.benchmarks.cases import (
    CASES,
    CIFAR10_CLASS_IMAGES,
    DEFAULT_CASES,
    PAPER_EPOCHS,
    REFERENCE,
    BenchCase,
    BenchError,
    _device_kind,
    make_config,
)
from deep_representation_one_class.benchmarks.measure import (
    measure_classifiers,
    measure_data,
    measure_extraction,
    measure_training,
)
from deep_representation_one_class.benchmarks.summary import summarize
from deep_representation_one_class.utils import allocator


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
    load_start = perf.loadavg()
    cfg = make_config(case, steps_per_call, jit_compile, strategy)
    keras.backend.clear_session()
    gc.collect()
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


# ----------------------------------------------------------------------------- command line
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.bench"),
        description="Throughput benchmark; prints one JSON line per case.",
    )
    p.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated cases; valid: {', '.join(CASES)}",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSONL file to append to (default results/bench_cpu.jsonl; --serving: "
        "results/serving_bench.jsonl)",
    )
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
    p.add_argument(
        "--serving",
        default="",
        help="comma-separated run folders: measure scoring in every runtime instead "
        "(benchmarks/serving.py; JSONL to --out, default results/serving_bench.jsonl)",
    )
    p.add_argument("--serving_md", default="", help="--serving: also write this Markdown table")
    p.add_argument(
        "--isa",
        default="native",
        help="comma-separated: native (the CPU as it is) and/or avx2 (as on a CPU without "
        "AVX-512: natively where the CPU has none, else each case in a child process with "
        "oneDNN capped by ONEDNN_MAX_CPU_ISA=AVX2; the JSON says which)",
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
    args.isas = [i.strip().lower() for i in args.isa.split(",") if i.strip()]
    if not args.isas or set(args.isas) - set(isa.ISAS):
        raise BenchError(f"--isa must list {' and/or '.join(isa.ISAS)}, got {args.isa!r}")
    args.case_names = names
    if args.out is None and not args.serving:
        args.out = "results/bench_cpu.jsonl"
    return args


def _emit(record: dict[str, Any], out: str) -> None:
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs the benchmark CLI; returns the records it printed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return []
    if args.serving:
        out = "results/serving_bench.jsonl" if args.out is None else args.out
        runs = [r.strip() for r in args.serving.split(",") if r.strip()]
        return serving.main(runs, out, args.serving_md)
    records: list[dict[str, Any]] = []
    ran_here = False
    for kind in args.isas:
        if isa.needs_child(kind):
            # oneDNN reads its ISA cap once, when it first runs: another process is needed.
            for name in args.case_names:
                if CASES[name].precision == "mixed_bfloat16":
                    # Under the cap TensorFlow still sends bfloat16 ops to oneDNN, which has no
                    # kernel for them below AVX512_CORE_BF16: the process crashes
                    # (results/onednn_isa.md). A real AVX2 CPU runs them, slower than float32.
                    print(f"note: {name} skipped for --isa={kind} (emulated: no bfloat16 "
                          "kernels under the oneDNN cap)", file=sys.stderr)  # fmt: skip
                    continue
                for record in isa.run_in_child(kind, name, isa.child_options(args)):
                    _emit(record, args.out)
                    records.append(record)
        elif not ran_here:  # "avx2" on a CPU without AVX-512 is this process as it is
            records += _run_here(args)
            ran_here = True
    return records


def _run_here(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measures every case in this process (the ISA it runs with)."""
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
        # No bfloat16 under an emulated ISA cap: oneDNN has no kernel for it there and the
        # process would crash (results/onednn_isa.md).
        bf16 = () if isa.describe()["emulated"] else ("bfloat16",)
        for dtype in ("float32", *bf16) + (("float16",) if gpu else ()):
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
        usage = resource.getrusage(resource.RUSAGE_SELF)
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
        after = resource.getrusage(resource.RUSAGE_SELF)
        # User and system CPU seconds of the case (all its threads): system time is what the
        # allocator and thread hand-offs cost (utils/allocator.py).
        user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
        record.update(
            isa=isa.describe(),
            allocator=allocator.current(),
            cpu_user_s=round(user, 2),
            cpu_system_s=round(system, 2),
            cpu_system_pct=round(100.0 * system / max(user + system, 1e-9), 1),
        )
        if case.impl == "reference" and _same_config(case):
            reference = record
        _emit(record, args.out)
        records.append(record)
    return records


def run_cli() -> None:
    """Console entry point: one-line errors for bad options."""

    def run() -> int:
        main()
        return 0

    cli.entry_point(lambda: cli.guard(run, verbose="--verbose" in sys.argv))


if __name__ == "__main__":
    run_cli()
