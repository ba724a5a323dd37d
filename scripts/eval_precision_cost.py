"""What ``--eval_precision`` costs and changes on a finished run: its evaluation features
extracted from the same checkpoint in float32 and in the training precision, in alternation
(so both see the same machine load), then the run's classifiers fit on each.

    python scripts/eval_precision_cost.py --model_dir=RUN [--rounds=3] [--out=results/NAME.md]

Prints (and with ``--out`` writes) a Markdown table: per precision, the seconds of one
extraction of the classifier-train and test images (median over ``--rounds``; wall and CPU
seconds of this process), the first call's seconds (tracing included) and the AUROCs (x100) of
the run's classifiers. Nothing in the run folder is written. Needs the run's data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "fma")
KEYS = ("pool.gde", "pool.kde", "pool.auc", "pool.kocsvm", "embed.gde", "embed.kde")


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def measure(run_dir: str, rounds: int) -> dict:
    import tensorflow as tf

    from deep_representation_one_class.benchmarks import perf
    from deep_representation_one_class.benchmarks.isa import cpu_flags
    from deep_representation_one_class.serving import run_loading
    from deep_representation_one_class.tasks import image as image_task
    from deep_representation_one_class.training import build

    cfg = run_loading.read_run_config(run_dir)
    task = build.task_for(cfg)
    if not isinstance(task, image_task.ImageTask):
        raise SystemExit(f"{run_dir} is a {task.name}-level run; this script measures image runs")
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if latest is None:
        raise SystemExit(f"no checkpoint in {run_dir}/checkpoints")
    data = build.load_data(cfg)
    with_logits = build.method_for(cfg).extra_eval != ()
    precisions = list(dict.fromkeys(["float32", cfg.precision]))
    models = {}
    for p in precisions:
        models[p] = build.make_model(cfg.replace(precision=p))
        tf.train.Checkpoint(model=models[p]).restore(latest).expect_partial()
    load_start = perf.loadavg()
    first, wall, cpu, arrays = {}, {p: [] for p in precisions}, {p: [] for p in precisions}, {}
    for p in precisions:
        arrays[p], first[p], _ = _timed(lambda p=p: task.extract(models[p], data, with_logits))
    for _ in range(rounds):
        for p in precisions:
            arrays[p], w, c = _timed(lambda p=p: task.extract(models[p], data, with_logits))
            wall[p].append(w)
            cpu[p].append(c)
    load_end = perf.loadavg()
    rows = {}
    for p in precisions:
        metrics, _ = image_task.score_saved_features(cfg, arrays[p], None)
        rows[p] = {
            "first_s": first[p],
            "wall_s": statistics.median(wall[p]),
            "cpu_s": statistics.median(cpu[p]),
            "metrics": {k: metrics.get(k) for k in KEYS},
        }
    return {
        "run": run_dir,
        "training_precision": cfg.precision,
        "images": len(data.cls_x) + len(data.test_x),
        "rounds": rounds,
        "rows": rows,
        "load": (load_start, load_end),
        "flags": [f for f in cpu_flags() if f in _FLAGS or f.startswith("amx")],
    }


def table(result: dict, command: str) -> str:
    head = ["eval precision", "extraction s (wall)", "extraction CPU s", "first call s"]
    lines = [
        f"Run: `{os.path.basename(os.path.normpath(result['run']))}` (trained in "
        f"{result['training_precision']}); {result['images']} images per extraction "
        f"(classifier-train + test), median of {result['rounds']} alternated rounds.",
        f"CPU flags: {' '.join(result['flags'])}; 1-minute load average "
        f"{result['load'][0][0]:.1f} at the start, {result['load'][1][0]:.1f} at the end.",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(head + list(KEYS)) + " |",
        "| " + " | ".join("---" for _ in range(len(head) + len(KEYS))) + " |",
    ]
    for p, r in result["rows"].items():
        aucs = [f"{r['metrics'][k]:.2f}" if r["metrics"][k] is not None else "–" for k in KEYS]
        cells = [p, f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['first_s']:.1f}", *aucs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="Markdown file to write the table to")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = measure(args.model_dir, args.rounds)
    command = "python scripts/eval_precision_cost.py --model_dir=RUN --rounds=" + str(args.rounds)
    text = table(result, command)
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
