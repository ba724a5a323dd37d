"""``report.html`` of a sweep folder: the aggregated tables, per-class plots, links to the runs.

The tables are those of ``python -m deep_representation_one_class.aggregate`` (mean ± SD over
seeds beside the paper's numbers, missing and unfinished runs listed), plus the MVTec image /
pixel / PRO table when the folder holds patch runs. One figure per (representation,
classifier, dataset) shows the per-class AUROC next to the paper's per-class number, and every
run that has its own ``report.html`` is linked (relative links, always starting with ``./`` and
percent-encoded, so that a run folder named like a URL scheme stays a relative link: the folder
can be moved). A ``report.html`` or ``report_files/`` of the user's is never written over, and
the new page replaces the old one only once it is complete (``publish``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections import defaultdict

from deep_representation_one_class.reports import html_page as H
from deep_representation_one_class.reports import mvtec_table, plots, publish
from deep_representation_one_class.reports.aggregate import aggregate
from deep_representation_one_class.reports.run_artifacts import ReportError
from deep_representation_one_class.reports.run_records import scan_runs, sort_key
from deep_representation_one_class.reports.tables import (
    order_key,
    paper_category_value,
    render_markdown,
)

REPORT = publish.REPORT
FILES = publish.FILES


def _slug(*parts: str) -> str:
    text = "_".join(parts).lower()
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _per_class_figures(report, folder: str) -> list[tuple[str, str]]:
    cells = defaultdict(dict)
    for (rep, clf, label, category), stat in report.per_category.items():
        cells[(rep, clf, label)][category] = stat
    out = []
    for rep, clf, label in sorted(cells, key=lambda t: order_key(t[0], t[2], t[1])):
        spec = report.specs[label]
        cats = sorted(cells[(rep, clf, label)], key=sort_key)
        ours = [(s.mean, s.sd or 0.0) for s in (cells[(rep, clf, label)][c] for c in cats)]
        ref = [paper_category_value(rep, clf, spec, c) for c in cats]
        names = [f"{c} {spec.category_name(c)}".strip() for c in cats]
        title = f"{label}: {rep}, {clf} (mean ± SD over seeds)"
        fig = plots.per_class_figure(names, ours, [r[0] if r else None for r in ref], title)
        name = f"per_class_{_slug(label, rep, clf)}.png"
        plots.save_figure(fig, os.path.join(folder, name))
        out.append((f"{FILES}/{name}", title))
    return out


def _run_links(root: str, runs, unfinished) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: r.path):
        rel = os.path.relpath(run.path, root)
        page = os.path.join(run.path, REPORT)
        href = "./" + urllib.parse.quote(os.fsencode(os.path.join(rel, REPORT)), safe="/")
        link = (
            f'<a href="{H.esc(href)}">{H.esc(rel)}</a>'
            if os.path.isfile(page)
            else H.esc(rel) + ' <span class="muted">(no report.html)</span>'
        )
        best = max((v for k, v in run.metrics.items() if k.count(".") == 1), default=None)
        rows.append(
            f"<tr><td class='l'>{link}</td><td class='l'>{H.esc(run.representation)}</td>"
            f"<td>{'' if best is None else f'{best:.2f}'}</td></tr>"
        )
    for item in unfinished:
        rows.append(
            f"<tr><td class='l'>{H.esc(os.path.relpath(item.path, root))}</td>"
            f"<td class='l'>unfinished: {H.esc(item.reason)}</td><td></td></tr>"
        )
    head = "<tr><th class='l'>run</th><th class='l'>representation</th><th>best AUROC</th></tr>"
    return "<table>" + head + "".join(rows) + "</table>"


def write_sweep_report(root: str) -> str:
    """Writes ``<root>/report.html`` and ``<root>/report_files/``; returns the page path.

    Raises:
      ReportError: the folder holds no run folders.
    """
    runs, unfinished, warnings = scan_runs([root])
    if not runs and not unfinished:
        raise ReportError(
            f"{root} holds no finished runs (no summary.json below it); pass a run folder or "
            "the --out folder of scripts/sweep.sh"
        )
    report = aggregate(runs, unfinished, warnings, roots=[root])
    publish.check_owned(root, lambda name: name.startswith("per_class_"))
    return publish.write_page(root, lambda folder: _render(root, runs, unfinished, report, folder))


def _render(root, runs, unfinished, report, folder) -> str:
    title = f"Sweep {os.path.basename(os.path.abspath(root))}"
    body = [f"<h1>{H.esc(title)}</h1>"]
    body.append(H.paragraph(f"{len(runs)} finished, {len(unfinished)} unfinished run(s).", True))
    tables = H.markdown(render_markdown(report))
    body.append(H.section("Tables (as python -m deep_representation_one_class.aggregate)", tables))
    if any(str(r.dataset.label).lower().startswith("mvtec") for r in runs):
        table = mvtec_table.collect(root)
        body.append(
            H.section("MVTec AD", H.markdown(mvtec_table.render_markdown(table, "pool.gde")))
        )
    figs = _per_class_figures(report, folder)
    if figs:
        body.append(H.section("Per-class AUROC next to the paper", H.figures(figs)))
    body.append(H.section("Runs", _run_links(root, runs, unfinished)))
    return H.page(title, body)
