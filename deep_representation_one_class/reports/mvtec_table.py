"""Per-category MVTec AD table (image/pixel AUROC, AUPR, F1-max, AU-PRO) with the mean.

Walks a folder for ``summary.json`` files of ``--dataset=mvtec`` runs, groups them by
representation (method, plus distribution augmentation; the baselines a run measured, raw
pixels, untrained network and from scratch, as representations of their own) and category,
averages seeds (mean and sample SD when there are several) and writes one Markdown table per
representation, with the mean over the categories present, the categories missing from the 15
and the paper's 15-category means for orientation, then the image AUROC of each defect type.
A CSV with one row per (representation, category) goes next to it. Runs evaluated before
AUPR/F1-max existed show "–" there (``evaluate --model_dir=RUN --reextract`` recomputes them).

CLI: ``python -m deep_representation_one_class.reports.mvtec_table RUNS_DIR [--key pool.gde]
[--out results/mvtec]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence

from deep_representation_one_class.datasets.mvtec import CATEGORIES
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.reports.baseline_rows import label as baseline_label
from deep_representation_one_class.reports.baseline_rows import row_prefixes
from deep_representation_one_class.utils import run_folder as rf
from deep_representation_one_class.utils.io import atomic_path

__all__ = ["PAPER", "ReportError", "collect", "main", "render_csv", "render_markdown"]

# Spec §9.3: the paper's 15-category means (detection = image AUROC, localisation = pixel AUROC).
PAPER = {
    "contrastive_da": (86.5, 90.4, "DisAug CLR (contrastive + DA)"),
    "rotation": (86.3, 93.0, "RotNet (MLP head)"),
}
KINDS = (
    ("image", ".image_auroc"),
    ("pixel", ".pixel_auroc"),
    ("pro", ".pro"),
    ("image_aupr", ".image_aupr"),
    ("image_f1_max", ".image_f1_max"),
    ("pixel_aupr", ".pixel_aupr"),
    ("pixel_f1_max", ".pixel_f1_max"),
)
HEADERS = (
    "image AUROC",
    "pixel AUROC",
    "AU-PRO@0.3",
    "image AUPR",
    "image F1-max",
    "pixel AUPR",
    "pixel F1-max",
)
_PER_TYPE = ".image_auroc."


class ReportError(UserError, ValueError):
    """The runs folder or an option is unusable; the message says what to pass instead."""


def _representation(config: dict) -> str:
    method = str(config.get("method", "?"))
    distaug = str(config.get("distaug_type", "1"))
    return method if distaug in ("", "1", "none") else f"{method}_da"


def collect(runs_dir: str, key: str = "pool.gde") -> dict[str, dict[str, list[dict]]]:
    """``{representation: {category: [{"image": .., "pixel": .., "pro": .., "seed": ..}]}}``.

    Args:
      runs_dir: a folder searched recursively for ``summary.json``.
      key: ``<feature>.<scorer>`` whose metrics are tabulated (``pool.gde``, ``pool.auc``, ...).

    Raises:
      ReportError: the folder does not exist.
    """
    if not os.path.isdir(runs_dir):
        raise ReportError(f"runs folder {runs_dir} does not exist; pass the sweep's --out folder")
    table: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for folder, _, files in os.walk(runs_dir):
        if rf.SUMMARY not in files:
            continue
        try:
            with open(rf.path(folder, rf.SUMMARY)) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            continue
        config = summary.get("config", {})
        if config.get("dataset") != "mvtec" or not summary.get("run", {}).get("complete"):
            continue
        metrics = summary.get("metrics", {})
        rep, category = _representation(config), str(config.get("category"))
        row = {kind: metrics.get(key + suffix) for kind, suffix in KINDS}
        row["seed"] = config.get("seed")
        prefix = key + _PER_TYPE
        row["types"] = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
        table[rep][category].append(row)
        # The baselines the run measured, each a representation of its own, same scorer.
        feature, _, scorer = key.rpartition(".")
        for name, base in row_prefixes(metrics, feature):
            cells = {kind: metrics.get(f"{base}.{scorer}{suffix}") for kind, suffix in KINDS}
            if cells["image"] is not None:
                label = f"{rep} · {baseline_label(name)}"
                table[label][category].append({**cells, "seed": config.get("seed"), "types": {}})
    return table


def _stat(values: Sequence[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    return statistics.fmean(vals), sd


def _cell(stat: tuple[float, float] | None) -> str:
    if stat is None:
        return "–"
    mean, sd = stat
    return f"{mean:.1f}" if math.isnan(sd) else f"{mean:.1f} ± {sd:.1f}"


def _ordered(categories) -> list[str]:
    known = [c for c in CATEGORIES if c in categories]
    return known + sorted(set(categories) - set(CATEGORIES))


def render_markdown(table: dict[str, dict[str, list[dict]]], key: str) -> str:
    """One table per representation: category rows, seed mean ± SD, then the category mean."""
    out = [f"# MVTec AD results ({key}; all x100)", ""]
    for rep in sorted(table):
        cats = table[rep]
        out += [f"## {rep}", "", f"| category | {' | '.join(HEADERS)} | seeds |"]
        out.append("|---" * (len(HEADERS) + 2) + "|")
        means = {kind: [] for kind, _ in KINDS}
        for cat in _ordered(cats):
            rows = cats[cat]
            stats = {kind: _stat([r[kind] for r in rows]) for kind, _ in KINDS}
            for kind, _ in KINDS:
                if stats[kind] is not None:
                    means[kind].append(stats[kind][0])
            cells = " | ".join(_cell(stats[kind]) for kind, _ in KINDS)
            out.append(f"| {cat} | {cells} | {len(rows)} |")
        mean_cells = " | ".join(
            f"**{statistics.fmean(v):.1f}**" if v else "–" for v in means.values()
        )
        out.append(f"| **mean ({len(cats)} categories)** | {mean_cells} | |")
        out += _per_type_lines(cats)
        missing = [c for c in CATEGORIES if c not in cats]
        if missing:
            out.append("")
            out.append(f"Missing categories ({len(missing)}): {', '.join(missing)}.")
        if rep in PAPER:
            det, loc, name = PAPER[rep]
            out.append("")
            out.append(
                f"Paper ({name}), mean over the 15 categories: detection {det}, "
                f"localisation {loc} (spec §9.3)."
            )
        out.append("")
    if not table:
        out.append("No finished mvtec runs found.")
    return "\n".join(out).rstrip() + "\n"


def _per_type_lines(cats: dict[str, list[dict]]) -> list[str]:
    """Image AUROC per defect type (seed mean ± SD), one row per (category, type)."""
    lines = []
    for cat in _ordered(cats):
        types = sorted({t for r in cats[cat] for t in r.get("types", {})})
        for t in types:
            stat = _stat([r.get("types", {}).get(t) for r in cats[cat]])
            lines.append(f"| {cat} | {t} | {_cell(stat)} |")
    if not lines:
        return []
    head = ["", "Image AUROC per defect type (that type against the good images):", ""]
    return [*head, "| category | defect type | image AUROC |", "|---|---|---|", *lines]


def render_csv(table: dict[str, dict[str, list[dict]]]) -> str:
    """``representation,category,seeds,image_auroc,pixel_auroc,pro,image_aupr,...`` (seed means)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = [
        "image_auroc" if k == "image" else "pixel_auroc" if k == "pixel" else k for k, _ in KINDS
    ]
    writer.writerow(["representation", "category", "seeds", *columns])
    for rep in sorted(table):
        for cat in _ordered(table[rep]):
            rows = table[rep][cat]
            stats = [_stat([r[kind] for r in rows]) for kind, _ in KINDS]
            writer.writerow(
                [rep, cat, len(rows), *("" if s is None else f"{s[0]:.4f}" for s in stats)]
            )
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", help="folder searched recursively for summary.json")
    parser.add_argument(
        "--key", default="pool.gde", help="<feature>.<scorer> to tabulate (default pool.gde)"
    )
    parser.add_argument(
        "--out", default=None, help="write <out>.md and <out>.csv (default: print Markdown)"
    )
    args = parser.parse_args(argv)
    try:
        table = collect(args.runs_dir, args.key)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = render_markdown(table, args.key)
    if args.out is None:
        sys.stdout.write(md)
        return 0
    for suffix, text in ((".md", md), (".csv", render_csv(table))):
        with atomic_path(args.out + suffix, suffix) as tmp, open(tmp, "w") as f:
            f.write(text)
    print(f"wrote {args.out}.md and {args.out}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
