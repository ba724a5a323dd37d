"""The aggregated report record and its renderings: Markdown tables and CSV, beside the paper.

``Report`` (built by ``aggregate.aggregate``) holds per-class and per-dataset statistics;
this module looks up the comparable paper numbers (``paper_results``) and renders the Table 7
layout (representation x classifier rows, dataset columns, the 43-task Mean), per-class tables in
the layout of Tables 8-11, the missing/unfinished run lists, and long-format and summary CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from deep_representation_one_class.reports import paper_results as paper
from deep_representation_one_class.reports.run_records import DatasetSpec, Run, Unfinished, sort_key


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and SD of AUROC x 100 over ``n`` items; ``sd`` is None when undefined (n=1)."""

    n: int
    mean: float
    sd: float | None


@dataclasses.dataclass(frozen=True)
class Missing:
    """An expected (representation, dataset, category, seed) without a finished run."""

    representation: str
    dataset: DatasetSpec
    category: str
    seed: int | str | None
    unfinished_path: str | None = None


@dataclasses.dataclass(frozen=True)
class Row:
    """One long-format value: a run's AUROC for one classifier."""

    representation: str
    classifier: str
    metric: str
    run: Run
    auroc: float


@dataclasses.dataclass
class Report:
    """Everything the renderers need; built by ``aggregate.aggregate``."""

    feature: str
    roots: tuple[str, ...]
    runs: list[Run]
    unfinished: list[Unfinished]
    warnings: list[str]
    rows: list[Row]
    per_category: dict[tuple[str, str, str, str], Stat]  # (rep, clf, dataset label, category)
    per_dataset: dict[tuple[str, str, str], Stat]  # n = number of classes averaged
    task_mean: dict[tuple[str, str], tuple[float | None, int]]  # (43-task mean, tasks present)
    missing: list[Missing]
    specs: dict[str, DatasetSpec]  # dataset label -> spec
    expected_seeds: tuple[int, ...] | None
    note: str = ""  # said under the title: which data, settings and commands made the runs


def order_key(representation: str = "", dataset: str = "", classifier: str = "") -> tuple:
    """Paper order first (Table 7 rows, dataset columns, classifiers), then alphabetical."""

    def rank(value: str, order: Sequence[str]) -> tuple[int, str]:
        return (order.index(value), "") if value in order else (len(order), value)

    return (
        rank(representation, paper.REPRESENTATIONS),
        rank(dataset, paper.DATASETS),
        rank(classifier, paper.CLASSIFIERS),
    )


def paper_category_value(
    representation: str, classifier: str, spec: DatasetSpec, category: str
) -> paper.Value | None:
    """The paper's per-class (mean, sd) comparable to one of our per-class cells, or None."""
    if spec.label not in paper.DATASETS or not spec.categories or category not in spec.categories:
        return None
    index = spec.categories.index(category)
    return paper.class_value(representation, classifier, spec.label, index)


def paper_dataset_value(
    representation: str, classifier: str, spec: DatasetSpec, categories: Iterable[str]
) -> tuple[paper.Value | None, bool]:
    """The paper's value comparable to our per-dataset cell over ``categories``.

    Returns:
        ((mean, sd) or None, is_subset). With every class present it is the Table 7/5 value;
        with a subset it is the mean over the same classes from Tables 8-11 (SD = mean of the
        SDs), flagged ``is_subset``; None if a class has no per-class number.
    """
    categories = list(categories)
    if spec.categories and set(spec.categories) <= set(categories):
        value = paper.dataset_value(representation, classifier, spec.label)
        if value is not None:
            return value, False
    values = [paper_category_value(representation, classifier, spec, c) for c in categories]
    if not values or any(v is None for v in values):
        return None, False
    sds = [v[1] for v in values if v[1] is not None]
    return (statistics.fmean(v[0] for v in values), statistics.fmean(sds) if sds else None), True


# ----------------------------------------------------------------------------- Markdown


def _fmt(mean: float, sd: float | None) -> str:
    return f"{mean:.1f}" if sd is None else f"{mean:.1f}±{sd:.1f}"


def _cell(stat: Stat | None, ref: paper.Value | None, mark: str = "", note: str = "") -> str:
    """``ours (paper; ours - paper)``; '–' where we have no value."""
    if stat is None:
        return "–" if ref is None else f"– ({_fmt(*ref)}{mark})"
    ours = _fmt(stat.mean, stat.sd) + note
    return ours if ref is None else f"{ours} ({_fmt(*ref)}{mark}; {stat.mean - ref[0]:+.1f})"


def _pairs(report: Report, dataset: str | None = None) -> list[tuple[str, str]]:
    pairs = {(r, c) for (r, c, d) in report.per_dataset if dataset in (None, d)}
    return sorted(pairs, key=lambda rc: order_key(rc[0], "", rc[1]))


def _columns(report: Report) -> list[str]:
    labels = set(paper.DATASETS) | {d for (_, _, d) in report.per_dataset}
    return sorted(labels, key=lambda d: order_key("", d))


def _categories(report: Report, rep: str, clf: str, label: str) -> list[str]:
    cats = [c for (r, k, d, c) in report.per_category if (r, k, d) == (rep, clf, label)]
    return sorted(cats, key=sort_key)


def _all_categories(report: Report, label: str) -> list[str]:
    known = list(report.specs[label].categories or ())
    seen = {c for (_, _, d, c) in report.per_category if d == label} - set(known)
    return known + sorted(seen, key=sort_key)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _dataset_cell(report: Report, rep: str, clf: str, label: str) -> str:
    stat = report.per_dataset.get((rep, clf, label))
    if stat is None:
        return _cell(None, paper.dataset_value(rep, clf, label))
    spec = report.specs[label]
    cats = _categories(report, rep, clf, label)
    full = len(spec.categories) if spec.categories else 0
    note = f" [{len(cats)}/{full}]" if len(cats) < full else ""
    ref, subset = paper_dataset_value(rep, clf, spec, cats)
    return _cell(stat, ref, "*" if subset else "", note)


_LEGEND = """\
Cells: ours = mean±SD over seeds (AUROC x 100), then (paper mean±SD; ours - paper).
SD over seeds is the sample SD (ddof=1; none for a single seed). Per dataset: the mean of the
per-class means, and SD = the mean of the per-class SDs, the convention of the paper's per-class
Tables 8-11 (their printed SDs are the mean of the per-class SDs). `[k/n]`: only k of n classes
present; `*`: paper value averaged over those same classes (Tables 8-11). `[n=k]`: k seeds, not the
expected number. Mean: the paper's 43-task mean (10 CIFAR-10 + 20 CIFAR-20 + 10 f-MNIST +
2 Cat-vs-Dog + 1 CelebA tasks, weighted accordingly), given only when all 43 tasks are present.
Paper numbers: a third-party transcription of Tables 5 and 7-11, believed to use pool features."""


def render_markdown(report: Report) -> str:
    """The report as Markdown: Table 7 layout, per-class tables, missing/unfinished, warnings."""
    hours = sum(r.train_seconds or 0.0 for r in report.runs) / 3600.0
    out = [
        f"# One-class AUROC ({report.feature} features)",
        "",
        f"Runs: {len(report.runs)} finished, {len(report.unfinished)} unfinished, "
        f"{len(report.missing)} missing; summed train time {hours:.1f} h. "
        f"Source: {', '.join(report.roots) or '-'}.",
        "",
        *([report.note, ""] if report.note else []),
        _LEGEND,
        "",
        "## Representation x classifier (Table 7 layout)",
        "",
    ]
    columns = _columns(report)
    rows = []
    for rep, clf in _pairs(report):
        value, tasks = report.task_mean.get((rep, clf), (None, 0))
        if value is None:
            mean = f"n/a ({tasks}/{paper.NUM_TASKS} tasks)"
        else:
            mean = _cell(Stat(tasks, value, None), paper.dataset_value(rep, clf, "Mean"))
        rows.append([rep, clf, *[_dataset_cell(report, rep, clf, d) for d in columns], mean])
    if rows:
        out += _table(["representation", "classifier", *columns, "Mean"], rows)
    else:
        out.append("No finished runs found.")
    expected = len(report.expected_seeds) if report.expected_seeds else None
    for label in columns:
        pairs = _pairs(report, label)
        if not pairs:
            continue
        spec = report.specs[label]
        rows = []
        for category in _all_categories(report, label):
            row = [f"{category} {spec.category_name(category)}".strip()]
            for rep, clf in pairs:
                stat = report.per_category.get((rep, clf, label, category))
                note = f" [n={stat.n}]" if stat and expected and stat.n != expected else ""
                ref = paper_category_value(rep, clf, spec, category)
                row.append(_cell(stat, ref, note=note))
            rows.append(row)
        rows.append(["mean", *[_dataset_cell(report, r, c, label) for r, c in pairs]])
        out += ["", f"## Per class: {label}", ""]
        out += _table(["class", *[f"{r} / {c}" for r, c in pairs]], rows)
    out += ["", "## Missing runs", "", *(_missing_lines(report) or ["None."])]
    out += ["", "## Unfinished runs", "", *(_unfinished_lines(report) or ["None."])]
    if report.warnings:
        out += ["", "## Warnings", "", *[f"- {w}" for w in report.warnings]]
    return "\n".join(out) + "\n"


def _missing_lines(report: Report) -> list[str]:
    source = "--seeds" if report.expected_seeds else "the seeds seen for this representation"
    grouped: dict[tuple[str, str], dict[str, list[Missing]]] = defaultdict(dict)
    for m in report.missing:
        grouped[(m.representation, m.dataset.label)].setdefault(m.category, []).append(m)
    lines = []
    for (rep, label), by_category in grouped.items():
        count = sum(len(items) for items in by_category.values())
        lines.append(f"- **{rep} / {label}**: {count} run(s) missing (expected seeds: {source})")
        for category, items in by_category.items():
            seeds = ", ".join(str(m.seed) for m in items)
            pending = [str(m.seed) for m in items if m.unfinished_path]
            extra = f" (unfinished: {', '.join(pending)})" if pending else ""
            name = f"{category} {items[0].dataset.category_name(category)}".strip()
            lines.append(f"  - {name}: seeds {seeds}{extra}")
    return lines


def _unfinished_lines(report: Report) -> list[str]:
    lines = []
    for u in report.unfinished:
        labels = ""
        if u.dataset is not None:
            labels = f" ({u.representation}, {u.dataset.label}, c{u.category}, s{u.seed})"
        lines.append(f"- `{u.path}`: {u.reason}{labels}")
    return lines


# ----------------------------------------------------------------------------- CSV

_LABELS = ("representation", "classifier")
_PAPER = ("paper_mean", "paper_sd", "diff")
LONG_HEADER = (*_LABELS, "metric", "dataset", "category", "category_name", "seed", "auroc")
LONG_HEADER += (*_PAPER, "run_dir")
SUMMARY_HEADER = ("level", *_LABELS, "dataset", "category", "category_name", "n", "mean", "sd")
SUMMARY_HEADER += (*_PAPER, "note")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            ["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in row]
        )
    return buffer.getvalue()


def _with_paper(stat_mean: float, ref: paper.Value | None) -> tuple[Any, Any, Any]:
    if ref is None:
        return None, None, None
    return ref[0], ref[1], stat_mean - ref[0]


def render_csv(report: Report) -> str:
    """Long format: one row per (representation, classifier, dataset, category, seed)."""

    def key(row: Row) -> tuple:
        run = row.run
        ordering = order_key(row.representation, run.dataset.label, row.classifier)
        return (*ordering, sort_key(run.category), sort_key(run.seed))

    lines = []
    for row in sorted(report.rows, key=key):
        run = row.run
        ref = paper_category_value(row.representation, row.classifier, run.dataset, run.category)
        name = run.dataset.category_name(run.category)
        head = (row.representation, row.classifier, row.metric, run.dataset.label, run.category)
        lines.append((*head, name, run.seed, row.auroc, *_with_paper(row.auroc, ref), run.path))
    return _csv(LONG_HEADER, lines)


def render_summary_csv(report: Report) -> str:
    """Aggregates: ``category``, ``dataset`` and ``mean43`` rows, each with the paper's value."""
    lines = []
    for rep, clf in _pairs(report):
        for label in _columns(report):
            if (rep, clf, label) not in report.per_dataset:
                continue
            spec = report.specs[label]
            cats = _categories(report, rep, clf, label)
            for cat in cats:
                stat = report.per_category[(rep, clf, label, cat)]
                ref = paper_category_value(rep, clf, spec, cat)
                head = ("category", rep, clf, label, cat, spec.category_name(cat))
                lines.append((*head, stat.n, stat.mean, stat.sd, *_with_paper(stat.mean, ref), ""))
            stat = report.per_dataset[(rep, clf, label)]
            ref, subset = paper_dataset_value(rep, clf, spec, cats)
            note = f"{len(cats)}/{len(spec.categories) if spec.categories else '?'} classes"
            note += "; paper over the same classes" if subset else ""
            head = ("dataset", rep, clf, label, "", "")
            lines.append((*head, stat.n, stat.mean, stat.sd, *_with_paper(stat.mean, ref), note))
        value, tasks = report.task_mean.get((rep, clf), (None, 0))
        if value is not None:
            ref = paper.dataset_value(rep, clf, "Mean")
            head = ("mean43", rep, clf, "", "", "")
            lines.append((*head, tasks, value, None, *_with_paper(value, ref), "43 tasks"))
    return _csv(SUMMARY_HEADER, lines)
