"""Per-class comparison of CPU-preset tables: each (representation, classifier) column from the
``aggregate`` summary CSVs given, the paper's number where the CSV carries it, and the mean over
the classes every column has.

Usage:
  python scripts/compare_presets.py --out results/cifar10_pretrained_vs_scratch.md \\
      --column "results/cpu_preset_cifar10_pretrained_summary.csv|EfficientNet-Lite0 \\
(ImageNet)|GDE" \\
      --column "results/cpu_preset_cifar10_summary.csv|Contrastive (DA)|KDE" [--note TEXT]

Each ``--column`` is ``CSV|representation|classifier``. The paper's values (``paper_mean``) are
those of the first column that has them.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["level"] == "category"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--column", action="append", required=True, help="CSV|representation|clf[|column title]"
    )
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.add_argument("--note", default="", help="a paragraph under the title")
    args = p.parse_args()
    columns, paper, names, paper_from = [], {}, {}, ""
    for spec in args.column:
        parts = spec.split("|")
        if len(parts) not in (3, 4) or not os.path.isfile(parts[0]):
            print(
                f"compare_presets.py: bad --column {spec!r} (CSV|representation|classifier"
                "[|column title])"
            )
            return 2
        path, rep, clf = parts[:3]
        title = parts[3] if len(parts) == 4 else f"{rep} / {clf}"
        values = {}
        for r in _rows(path):
            if r["representation"] == rep and r["classifier"] == clf:
                values[r["category"]] = float(r["mean"])
                names[r["category"]] = r["category_name"]
                if r.get("paper_mean") and (not paper_from or paper_from == f"{rep} / {clf}"):
                    paper_from = f"{rep} / {clf}"
                    paper[r["category"]] = float(r["paper_mean"])
        if not values:
            print(f"compare_presets.py: no rows for {rep} / {clf} in {path}")
            return 2
        columns.append((title, values))
    common = sorted(set.intersection(*(set(v) for _, v in columns)), key=int)
    header = ["class", *(name for name, _ in columns), f"paper ({paper_from or 'none'})"]
    lines = [
        "# CIFAR-10 (JPEG q75 copy): frozen pretrained features next to the from-scratch preset",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cat in common:
        cells = [f"{cat} {names[cat]}", *(f"{v[cat]:.1f}" for _, v in columns)]
        cells.append(f"{paper[cat]:.1f}" if cat in paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    means = [sum(v[c] for c in common) / len(common) for _, v in columns] if common else []
    pm = [paper[c] for c in common if c in paper]
    lines.append(
        "| "
        + " | ".join(
            [
                f"**mean ({len(common)} classes)**",
                *(f"**{m:.1f}**" for m in means),
                f"{sum(pm) / len(pm):.1f}" if len(pm) == len(common) and pm else "–",
            ]
        )
        + " |"
    )
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, args.out)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
