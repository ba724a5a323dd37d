"""Tables of a validation selection: per recipe and classifier, the AUROC of each category.

Usage: python scripts/selection_table.py RUNS --out results/selection/NAME [--title T]
RUNS holds <recipe>/<method>/<dataset>/c<cat>/s<seed>/summary.json (scripts/select_recipes.sh).
Every run must be an --is_validation run (a test-set run is refused: recipes are chosen on
validation only). Writes NAME.md and NAME.csv (AUROC x 100; mean over seeds, then over
categories; minutes = training + evaluation wall time per run). Paths are printed relative to
the current directory.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deep_representation_one_class.utils import io as io_utils

FEATURES = ("pool.", "embed.", "dscore.", "baseline_")  # baseline_*: --baselines


def collect(runs: str):
    """{recipe: {"cats": {cat: {metric: [values]}}, "minutes": [..], "steps": int, ...}}."""
    table: dict = {}
    for path in sorted(glob.glob(os.path.join(runs, "*", "*", "*", "c*", "s*", "summary.json"))):
        recipe = os.path.relpath(path, runs).split(os.sep)[0]
        s = io_utils.read_json(path, dict)
        if not s.get("config", {}).get("is_validation"):
            raise SystemExit(f"error: {os.path.relpath(path)} is not an --is_validation run")
        if not s.get("run", {}).get("complete"):
            continue
        entry = table.setdefault(
            recipe, {"cats": defaultdict(lambda: defaultdict(list)), "minutes": []}
        )
        entry["minutes"].append((s["run"]["train_seconds"] + s["run"]["eval_seconds"]) / 60)
        entry["steps"] = s["run"]["total_steps"]
        entry["precision"] = s["config"].get("precision")
        entry["train_examples"] = s["run"].get("train_examples")
        for key, value in s["metrics"].items():
            if key.startswith(FEATURES) and isinstance(value, (int, float)):
                entry["cats"][str(s["config"]["category"])][key].append(float(value))
    return table


def _relative(path: str) -> str:
    """``path`` relative to the working directory, or its last two parts when outside it."""
    rel = os.path.relpath(path)
    if rel.startswith(os.pardir):
        full = os.path.abspath(path)
        return os.path.join(os.path.basename(os.path.dirname(full)), os.path.basename(full))
    return rel


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--out", required=True, help="output stem (NAME.md and NAME.csv)")
    p.add_argument("--title", default="Validation selection")
    args = p.parse_args()
    table = collect(args.runs)
    if not table:
        print(f"error: no finished runs under {args.runs}", file=sys.stderr)
        return 1
    cats = sorted({c for e in table.values() for c in e["cats"]}, key=lambda c: c.zfill(4))
    rows = []
    for recipe in sorted(table):
        e = table[recipe]
        keys = sorted({k for c in e["cats"].values() for k in c})
        for key in keys:
            per = [statistics.fmean(e["cats"][c][key]) if e["cats"][c][key] else None for c in cats]
            have = [v for v in per if v is not None]
            mean = statistics.fmean(have) if len(have) == len(cats) else None
            rows.append((recipe, key, per, mean, e))
    header = [
        "recipe",
        "steps",
        "precision",
        "train images",
        "minutes/run",
        "classifier",
        *[f"c{c}" for c in cats],
        "mean",
    ]

    def fmt(v):
        return "" if v is None else f"{v:.2f}"

    body = [
        [
            r,
            str(e["steps"]),
            str(e["precision"]),
            str(e["train_examples"]),
            f"{statistics.fmean(e['minutes']):.1f}",
            k,
            *map(fmt, per),
            fmt(mean),
        ]
        for r, k, per, mean, e in rows
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *body])
    io_utils.write_text(args.out + ".csv", buf.getvalue())
    ranked = sorted((r for r in rows if r[3] is not None), key=lambda r: -r[3])
    md = [
        f"# {args.title}",
        "",
        f"Validation AUROC x 100 (`--is_validation`; the test set is not read). Runs: "
        f"`{_relative(args.runs)}`; made by `scripts/selection_table.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(row) + " |" for row in body]
    if ranked:
        best = ranked[0]
        md += ["", f"Best mean: {best[0]} / {best[1]} = {best[3]:.2f}."]
    io_utils.write_text(args.out + ".md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
