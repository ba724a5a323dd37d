"""Prints one line per finished run of a preset sweep: minutes and the main AUROCs, then means.

Usage: python scripts/preset_summary.py RUNS_DIR METHOD DATASET [--target 95.8]
Reads RUNS_DIR/METHOD/DATASET/c*/s*/summary.json (scripts/sweep.sh's layout, where METHOD is the
sweep's method name, e.g. contrastive_da). Minutes are training plus evaluation wall time.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys

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
    args = p.parse_args()
    pattern = os.path.join(args.runs_dir, args.method, args.dataset, "c*", "s*", "summary.json")
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        minutes = (s["run"]["train_seconds"] + s["run"]["eval_seconds"]) / 60
        vals = [s["metrics"].get(k, math.nan) for k in KEYS]
        rows.append((s["config"]["category"], minutes, vals))
    if not rows:
        print(f"no finished runs under {pattern}", file=sys.stderr)
        return 1
    keys = [k for i, k in enumerate(KEYS) if any(not math.isnan(r[2][i]) for r in rows)]
    idx = [KEYS.index(k) for k in keys]
    print(f"{args.method} on {args.dataset}")
    print("class  minutes  " + "  ".join(f"{k.replace('baseline_', 'b_'):>10}" for k in keys))
    for cat, minutes, vals in sorted(rows, key=lambda r: str(r[0]).zfill(4)):
        print(f"{cat:>5}  {minutes:7.1f}  " + "  ".join(f"{vals[i]:10.2f}" for i in idx))
    means = [statistics.fmean(r[2][i] for r in rows) for i in idx]
    tail = f"   ({len(rows)} classes"
    tail += f"; target: mean >= {args.target})" if args.target is not None else ")"
    print(
        f"{'mean':>5}  {statistics.fmean(r[1] for r in rows):7.1f}  "
        + "  ".join(f"{v:10.2f}" for v in means)
        + tail
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
