"""Recipe selection by synthetic anomalies vs the real defect labels, from patch-run folders.

Walks a folder for ``summary.json`` files of patch-level runs; every (run, feature, scorer) is a
candidate recipe, plus the raw-pixel and untrained-network baselines of the runs that computed
them. For each candidate the table lists the synthetic-anomaly validation score (no real
anomaly used) next to the real test image AUROC, pixel AUROC and PRO, and the report states
how well the synthetic score ranks the candidates like the real image AUROC: Spearman's rank
correlation, the share of concordant pairs, and the real rank of the candidate the synthetic
score would pick.

CLI: ``python -m deep_representation_one_class.reports.selection RUNS_DIR --out PREFIX``
writes ``PREFIX.md`` and ``PREFIX.csv`` (relative paths in the text).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Sequence

import numpy as np
from scipy import stats

from deep_representation_one_class import catalog
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.utils import io as io_lib
from deep_representation_one_class.utils import run_folder as rf

__all__ = ["candidates", "main", "ranking", "render"]

# The scorers of the patch task (its synthetic scores exist for these only), in catalog order.
_SCORERS = catalog.scorers_for("patches")
_FIELDS = ("recipe", "features", "synthetic", "image_auroc", "pixel_auroc", "pro", "train_s")


def _runs(root: str) -> list[tuple[str, dict]]:
    found = []
    for dirpath, _, files in os.walk(root):
        if rf.SUMMARY in files:
            summary = io_lib.read_json(rf.path(dirpath, rf.SUMMARY))
            if summary.get("run", {}).get("complete"):
                found.append((os.path.relpath(dirpath, root), summary))
    return sorted(found)


def candidates(root: str) -> list[dict]:
    """One row per (run or baseline, feature, scorer) with a synthetic score."""
    rows = []
    baselines_done = False
    for name, summary in _runs(root):
        m = summary["metrics"]
        groups = [(name, f) for f in ("pool", "embed")]
        if not baselines_done and any(k.startswith("baseline_") for k in m):
            groups += [("raw pixels [baseline]", "baseline_pixels")]
            groups += [("untrained network [baseline]", "baseline_random.pool")]
            baselines_done = True
        for recipe, feat in groups:
            for c in _SCORERS:
                key = f"{feat}.{c}"
                if f"synthetic.{key}" not in m or key not in m:
                    continue
                rows.append(
                    {
                        "recipe": recipe,
                        "features": f"{feat.split('.')[-1]}.{c}".replace("baseline_", ""),
                        "synthetic": m[f"synthetic.{key}"],
                        "image_auroc": m[key],
                        "pixel_auroc": m.get(f"{key}.pixel_auroc", float("nan")),
                        "pro": m.get(f"{key}.pro", float("nan")),
                        "train_s": summary["run"].get("train_seconds", float("nan"))
                        if not recipe.endswith("[baseline]")
                        else 0.0,
                    }
                )
    return rows


def ranking(rows: Sequence[dict], real: str = "image_auroc") -> dict[str, float]:
    """Agreement of the synthetic score with ``real`` over the candidates."""
    syn = np.array([r["synthetic"] for r in rows], np.float64)
    ref = np.array([r[real] for r in rows], np.float64)
    n = len(rows)
    pairs = [
        (i, j) for i in range(n) for j in range(i + 1, n) if syn[i] != syn[j] and ref[i] != ref[j]
    ]
    concordant = sum((syn[i] - syn[j]) * (ref[i] - ref[j]) > 0 for i, j in pairs)
    pick = int(np.argmax(syn))
    return {
        "candidates": float(n),
        "spearman": float(stats.spearmanr(syn, ref).statistic) if n > 2 else float("nan"),
        "concordant_pairs": 100.0 * concordant / max(len(pairs), 1),
        "pick_real": float(ref[pick]),
        "pick_real_rank": float(1 + np.sum(ref > ref[pick])),
        "best_real": float(ref.max()),
        "pick": pick,
    }


def _fmt(v) -> str:
    return (
        f"{v:.1f}"
        if isinstance(v, float) and np.isfinite(v)
        else ("-" if isinstance(v, float) else str(v))
    )


def render(rows: Sequence[dict], title: str) -> str:
    """The Markdown report."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["synthetic"])
    out = [
        f"# {title}",
        "",
        "| recipe | features.scorer | synthetic AUROC | image AUROC | pixel AUROC | PRO "
        "| train s |",
    ]
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for i in order:
        r = rows[i]
        out.append("| " + " | ".join(_fmt(r[k]) for k in _FIELDS) + " |")
    out.append("")
    others = [r for r in rows if "cutpaste" not in r["recipe"]]
    subsets = [("all candidates", list(rows)), *_per_scorer(rows)]
    if 2 < len(others) < len(rows):
        subsets += [
            ("all but the CutPaste recipes", others),
            *_per_scorer(others, " (no CutPaste)"),
        ]
    for subset_name, subset in subsets:
        if len(subset) < 3:
            continue
        rk = ranking(subset)
        pick = subset[rk["pick"]]
        out.append(
            f"- {subset_name} ({int(rk['candidates'])}): Spearman {rk['spearman']:.2f}, "
            f"concordant pairs {rk['concordant_pairs']:.0f}%; the synthetic score picks "
            f"{pick['recipe']} {pick['features']} (real image AUROC {rk['pick_real']:.1f}, rank "
            f"{int(rk['pick_real_rank'])}; best {rk['best_real']:.1f})."
        )
    return "\n".join(out) + "\n"


def _per_scorer(rows: Sequence[dict], note: str = "") -> list[tuple[str, list[dict]]]:
    return [
        (
            f"scorer {c}, pool features{note}",
            [r for r in rows if r["features"] in (f"pool.{c}", f"pixels.{c}")],
        )
        for c in _SCORERS
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="folder holding the selection study's run folders")
    parser.add_argument("--out", required=True, help="output prefix (writes .md and .csv)")
    parser.add_argument("--title", default="Recipe selection: synthetic anomalies vs real labels")
    args = parser.parse_args(argv)
    rows = candidates(args.runs)
    if not rows:
        raise UserError(f"no finished patch runs with synthetic scores under {args.runs}")
    io_lib.write_text(args.out + ".md", render(rows, args.title))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    io_lib.write_text(args.out + ".csv", buf.getvalue())
    print(render(rows, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
