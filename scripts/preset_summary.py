"""Prints one line per finished run of a preset sweep: minutes and the main AUROCs, then means.

Usage: python scripts/preset_summary.py RUNS_DIR METHOD DATASET [--target 95.8] [--out FILE]
Reads RUNS_DIR/METHOD/DATASET/c*/s*/summary.json (scripts/sweep.sh's layout, where METHOD is the
sweep's method name, e.g. contrastive_da). Minutes are training plus evaluation wall time (they
depend on the machine's load); CPU minutes are the run's own CPU time over all its threads
(``train_cpu_seconds + eval_cpu_seconds`` of summary.json; 0 where a run did not record them).
``--out`` also writes the table to FILE (Markdown code block, the CPU named).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deep_representation_one_class.utils.cpuinfo import machine_line

# auc: 1-NN; baseline_*: raw pixels and the untrained network (--baselines), where scored.
KEYS = (
    "pool.kde",
    "pool.gde",
    "pool.kocsvm",
    "pool.auc",
    "embed.gde",
    "dscore.auc",
    "baseline_pixels.gde",
    "baseline_random.pool.gde",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs_dir")
    p.add_argument("method")
    p.add_argument("dataset")
    p.add_argument("--target", type=float, default=None, help="the mean AUROC aimed at")
    p.add_argument("--out", default="", help="also write the table to this file")
    args = p.parse_args()
    pattern = os.path.join(args.runs_dir, args.method, args.dataset, "c*", "s*", "summary.json")
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        run = s["run"]
        minutes = (run["train_seconds"] + run["eval_seconds"]) / 60
        cpu = (run.get("train_cpu_seconds", 0.0) + run.get("eval_cpu_seconds", 0.0)) / 60
        vals = [s["metrics"].get(k, math.nan) for k in KEYS]
        rows.append((s["config"]["category"], minutes, cpu, vals))
    if not rows:
        print(f"no finished runs under {pattern}", file=sys.stderr)
        return 1
    keys = [k for i, k in enumerate(KEYS) if any(not math.isnan(r[3][i]) for r in rows)]
    idx = [KEYS.index(k) for k in keys]
    lines = [f"{args.method} on {args.dataset}"]
    lines.append(
        "class  minutes  CPU-min  " + "  ".join(f"{k.replace('baseline_', 'b_'):>10}" for k in keys)
    )
    for cat, minutes, cpu, vals in sorted(rows, key=lambda r: str(r[0]).zfill(4)):
        lines.append(
            f"{cat:>5}  {minutes:7.1f}  {cpu:7.1f}  " + "  ".join(f"{vals[i]:10.2f}" for i in idx)
        )
    means = [statistics.fmean(r[3][i] for r in rows) for i in idx]
    tail = f"   ({len(rows)} classes"
    tail += f"; target: mean >= {args.target})" if args.target is not None else ")"
    lines.append(
        f"{'mean':>5}  {statistics.fmean(r[1] for r in rows):7.1f}  "
        f"{statistics.fmean(r[2] for r in rows):7.1f}  "
        + "  ".join(f"{v:10.2f}" for v in means)
        + tail
    )
    print("\n".join(lines))
    if args.out:
        text = (
            f"# Minutes per run: {args.method} on {args.dataset}\n\n"
            f"`python scripts/preset_summary.py {os.path.basename(args.runs_dir.rstrip('/'))} "
            f"{args.method} {args.dataset}`; wall minutes (training + evaluation) depend on the "
            "machine's load, CPU minutes are the runs' own CPU time over all threads. Machine: "
            f"{machine_line()}.\n\n```\n"
            + "\n".join(lines)
            + "\n```\n"
        )
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0



if __name__ == "__main__":
    sys.exit(main())
