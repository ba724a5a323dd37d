"""Aggregates finished run folders into the paper's tables: mean ± SD over seeds, per class/dataset.

Walks a folder for ``summary.json`` files (``run_records``), maps metric keys to the paper's
classifier columns (``pool.locsvm`` -> OC-SVM linear, ``pool.kocsvm`` -> OC-SVM kernel,
``pool.kde`` -> KDE, ``pool.gde`` -> GDE, ``pool.auc`` -> 1-NN, ``dscore.auc`` -> Rotation
classifier; ``--feature embed`` reads ``embed.*`` instead; the baselines a run measured,
``baseline_pixels.*``, ``baseline_random.pool.*`` and ``baseline_scratch.pool.*``, are rows of
their own: ``<representation> · from scratch [baseline]`` ...), averages seeds per (representation,
classifier, dataset, class) with the sample SD, averages classes per dataset (SD = mean of the
per-class SDs, as the paper's per-class tables do), and computes the paper's 43-task weighted
Mean when all 43 tasks are present. Missing and unfinished runs are reported, never dropped.
Outputs (``result_tables``): Markdown in the layout of Table 7 and Tables 8-11 and CSV, each with
the paper's numbers and ours - paper.

CLI: ``python -m deep_representation_one_class.aggregate RUNS_DIR [--out results/name]
[--seeds "1 2 3 4 5"] [--feature pool|embed] [--where num_epoch=2048] [--strict]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from deep_representation_one_class import cli
from deep_representation_one_class.reports import paper_results as paper
from deep_representation_one_class.reports.baseline_rows import label as baseline_label
from deep_representation_one_class.reports.baseline_rows import row_prefixes
from deep_representation_one_class.reports.run_records import (
    AggregateError,
    Run,
    Unfinished,
    dataset_spec,
    scan_runs,
    sort_key,
)
from deep_representation_one_class.reports.tables import (
    Missing,
    Report,
    Row,
    Stat,
    order_key,
    render_csv,
    render_markdown,
    render_summary_csv,
)
from deep_representation_one_class.utils import io

__all__ = [
    "AggregateError",
    "aggregate",
    "category_average",
    "find_missing",
    "main",
    "scan_runs",
    "seed_stat",
    "task_weighted_mean",
    "write_outputs",
]

FEATURES = ("pool", "embed")
ROTATION_METRIC = "dscore.auc"
# Metric-key suffix (``<feature>.<suffix>``) -> the paper's classifier column (spec §8).
CLASSIFIER_BY_SUFFIX = {
    "locsvm": "OC-SVM linear",
    "kocsvm": "OC-SVM kernel",
    "kde": "KDE",
    "gde": "GDE",
    "auc": "1-NN",
}


def classifier_metrics(feature: str = "pool") -> dict[str, str]:
    """Metric key -> classifier column for ``feature`` (``pool`` or ``embed``)."""
    if feature not in FEATURES:
        raise AggregateError(f"--feature must be one of {', '.join(FEATURES)}, got '{feature}'")
    metrics = {f"{feature}.{suffix}": label for suffix, label in CLASSIFIER_BY_SUFFIX.items()}
    metrics[ROTATION_METRIC] = "Rotation classifier"
    return metrics


def seed_stat(values: Sequence[float]) -> Stat:
    """Mean and *sample* SD (ddof=1) over seeds; the SD is None for a single seed.

    The paper reports "mean ± SD over 5 runs" without saying which SD; ddof=1 (the usual
    estimate from 5 samples) is 1.12x the ddof=0 value at n=5.
    """
    mean = statistics.fmean(values)
    return Stat(len(values), mean, statistics.stdev(values) if len(values) > 1 else None)


def category_average(stats: Sequence[Stat]) -> Stat:
    """A dataset's value: the mean of its per-class means, SD = the mean of the per-class SDs.

    That SD convention is the paper's: in Tables 8-11 every printed per-dataset SD equals the
    mean of the per-class SDs within rounding (not their RMS, nor the SD of the class means).
    Classes with an undefined SD (one seed) are left out of the SD average.

    Returns:
        Stat with ``n`` = the number of classes averaged.
    """
    sds = [s.sd for s in stats if s.sd is not None]
    return Stat(
        len(stats), statistics.fmean(s.mean for s in stats), statistics.fmean(sds) if sds else None
    )


def task_weighted_mean(dataset_means: Mapping[str, float]) -> float:
    """The paper's "Mean" column: the average over the 43 one-class tasks.

    Equals ``sum_d TASK_WEIGHTS[d] * mean_d / 43`` (10 CIFAR-10 + 20 CIFAR-20 + 10 f-MNIST +
    2 Cat-vs-Dog + 1 CelebA), which is *not* the plain mean of the 5 dataset columns.

    Args:
        dataset_means: dataset label (``paper_results.DATASETS``) -> mean over its classes.
    """
    missing = [d for d in paper.DATASETS if d not in dataset_means]
    if missing:
        raise AggregateError(f"the 43-task mean needs all 5 datasets; missing {', '.join(missing)}")
    total = sum(paper.TASK_WEIGHTS[d] * dataset_means[d] for d in paper.DATASETS)
    return total / paper.NUM_TASKS


def find_missing(
    runs: Sequence[Run],
    unfinished: Sequence[Unfinished] = (),
    expected_seeds: Sequence[int] | None = None,
    expected_datasets: Sequence[str] = (),
) -> list[Missing]:
    """Lists the expected (representation, dataset, category, seed) tasks without a finished run.

    Expected categories are the dataset's full list (the seen ones for unknown datasets);
    expected seeds are ``expected_seeds`` or, if None, every seed seen for that (representation,
    dataset). Datasets are the ones seen per representation plus ``expected_datasets``
    (``--dataset`` names). A gap with an unfinished run folder carries its path.
    """
    done = {(r.representation, r.dataset.label, r.category, r.seed) for r in runs}
    labelled = [u for u in unfinished if u.dataset is not None]
    pending = {(u.representation, u.dataset.label, u.category, u.seed): u.path for u in labelled}
    seen: dict[tuple[str, str], tuple[Any, set, set]] = {}
    for rec in [*runs, *labelled]:
        _, cats, seeds = seen.setdefault(
            (rec.representation, rec.dataset.label), (rec.dataset, set(), set())
        )
        cats.add(rec.category)
        seeds.add(rec.seed)
    for rep in {rep for rep, _ in seen}:
        for name in expected_datasets:
            spec = dataset_spec(name)[0]
            seen.setdefault((rep, spec.label), (spec, set(), set()))
    missing = []
    for (rep, label), (spec, cats, seen_seeds) in sorted(
        seen.items(), key=lambda item: order_key(*item[0])
    ):
        seeds = list(expected_seeds) if expected_seeds else sorted(seen_seeds, key=sort_key)
        for category in spec.categories or sorted(cats, key=sort_key):
            for seed in seeds or [None]:
                if (rep, label, category, seed) not in done:
                    path = pending.get((rep, label, category, seed))
                    missing.append(Missing(rep, spec, category, seed, path))
    return missing


def _cells(run: Run, metric_map: Mapping[str, str], feature: str):
    """``(representation, metric, classifier)`` of a run's cells: its own, then those of the
    baselines it measured (``--baselines``), each a representation of its own, e.g.
    ``EfficientNet-Lite0 (ImageNet) · from scratch [baseline]``."""
    for metric, classifier in metric_map.items():
        yield run.representation, metric, classifier
    for name, prefix in row_prefixes(run.metrics, feature):
        rep = f"{run.representation} · {baseline_label(name)}"
        for suffix, classifier in CLASSIFIER_BY_SUFFIX.items():
            yield rep, f"{prefix}.{suffix}", classifier


def aggregate(
    runs: Sequence[Run],
    unfinished: Sequence[Unfinished] = (),
    warnings: Sequence[str] = (),
    *,
    feature: str = "pool",
    expected_seeds: Sequence[int] | None = None,
    expected_datasets: Sequence[str] = (),
    roots: Sequence[str] = (),
) -> Report:
    """Aggregates runs into per-class, per-dataset and 43-task statistics.

    Args:
        runs: finished runs (``scan_runs``).
        unfinished: unfinished run folders (``scan_runs``); listed and matched to the gaps.
        warnings: warnings collected so far.
        feature: ``pool`` (f, which the paper's numbers are believed to use; spec §8) or
            ``embed`` (g∘f, the head output).
        expected_seeds: seeds every task should have; default: the seeds seen per
            (representation, dataset).
        expected_datasets: ``--dataset`` names every representation should cover.
        roots: the scanned folders, for the report header.

    Returns:
        A Report (render it with ``result_tables``).
    """
    metric_map = classifier_metrics(feature)
    warnings = list(warnings)
    rows: list[Row] = []
    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for run in runs:
        for rep, metric, classifier in _cells(run, metric_map, feature):
            value = run.metrics.get(metric)
            if value is None:
                continue
            if not math.isfinite(value):
                warnings.append(f"{run.path}: {metric} = {value}; left out")
                continue
            rows.append(Row(rep, classifier, metric, run, value))
            values[(rep, classifier, run.dataset.label, run.category)].append(value)
    per_category = {key: seed_stat(v) for key, v in values.items()}
    by_dataset: dict[tuple[str, str, str], list[Stat]] = defaultdict(list)
    for (rep, clf, label, _), stat in per_category.items():
        by_dataset[(rep, clf, label)].append(stat)
    per_dataset = {key: category_average(stats) for key, stats in by_dataset.items()}

    specs = {run.dataset.label: run.dataset for run in runs}
    tasks: dict[tuple[str, str], int] = defaultdict(int)
    for rep, clf, label, category in per_category:
        if label in paper.TASK_WEIGHTS and category in (specs[label].categories or ()):
            tasks[(rep, clf)] += 1
    task_mean: dict[tuple[str, str], tuple[float | None, int]] = {}
    for rep, clf, _ in per_dataset:
        count = tasks[(rep, clf)]
        mean = None
        if count == paper.NUM_TASKS:
            means = {d: per_dataset[(rep, clf, d)].mean for d in paper.DATASETS}
            mean = task_weighted_mean(means)
        task_mean[(rep, clf)] = (mean, count)
    return Report(
        feature=feature,
        roots=tuple(roots),
        runs=list(runs),
        unfinished=list(unfinished),
        warnings=warnings,
        rows=rows,
        per_category=per_category,
        per_dataset=per_dataset,
        task_mean=task_mean,
        missing=find_missing(runs, unfinished, expected_seeds, expected_datasets),
        specs=specs,
        expected_seeds=tuple(expected_seeds) if expected_seeds else None,
    )


def write_outputs(report: Report, prefix: str, overwrite: bool = True) -> list[str]:
    """Writes ``PREFIX.md``, ``PREFIX.csv`` (long format) and ``PREFIX_summary.csv``.

    Without ``overwrite`` an existing file (or one another command writes meanwhile) is
    refused (``io.Output``, ``OutputExistsError``) before anything is written.

    Returns:
        The written paths.
    """
    prefix = prefix[: -len(".md")] if prefix.endswith(".md") else prefix
    outputs = {
        f"{prefix}.md": render_markdown(report),
        f"{prefix}.csv": render_csv(report),
        f"{prefix}_summary.csv": render_summary_csv(report),
    }
    targets = {path: io.Output(path, overwrite).check() for path in outputs}
    for path, text in outputs.items():
        with (
            targets[path].open(os.path.splitext(path)[1]) as tmp,
            open(tmp, "w", encoding="utf-8") as f,
        ):
            f.write(text)
    return list(outputs)


def _parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise AggregateError(f"--seeds must be integers like '1 2 3 4 5', got '{text}'") from None


def _parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AggregateError(f"--where expects KEY=VALUE (e.g. num_epoch=2048), got '{item}'")
        pairs.append((key.strip(), value.strip()))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog=cli.prog_name("python -m deep_representation_one_class.aggregate"),
        description="Aggregate run folders (summary.json) into the paper's result tables.",
    )
    p.add_argument("runs_dir", nargs="+", help="folder(s) to walk for run folders")
    p.add_argument(
        "--out",
        help="output prefix: writes PREFIX.md, PREFIX.csv (one row per run and classifier) and "
        "PREFIX_summary.csv; without it the Markdown is printed",
    )
    p.add_argument(
        "--feature",
        choices=FEATURES,
        default="pool",
        help="features the classifiers ran on: pool = f (the paper's, default), embed = g(f)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing --out files (refused otherwise)"
    )
    p.add_argument("--seeds", help="expected seeds, e.g. '1 2 3 4 5'; every gap is listed")
    p.add_argument(
        "--datasets",
        default="",
        help="--dataset names every representation should cover, e.g. 'cifar10ood fmnistood' "
        "(default: the ones seen)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only runs whose config has KEY=VALUE, e.g. num_epoch=2048 (repeatable)",
    )
    p.add_argument(
        "--note",
        default="",
        help="a paragraph under the title: which data (e.g. 'CIFAR-10, JPEG q75 copy'), "
        "settings and commands made the runs",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit with 1 if any run is missing or unfinished"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        runs, unfinished, warnings = scan_runs(args.runs_dir, _parse_where(args.where))
        roots = args.runs_dir
        runs = [dataclasses.replace(r, path=_relative(r.path, roots)) for r in runs]
        unfinished = [dataclasses.replace(u, path=_relative(u.path, roots)) for u in unfinished]
        report = aggregate(
            runs,
            unfinished,
            warnings,
            feature=args.feature,
            expected_seeds=_parse_seeds(args.seeds),
            expected_datasets=args.datasets.replace(",", " ").split(),
            # Tables under results/ carry relative paths only (they are committed).
            roots=[_relative(r) for r in args.runs_dir],
        )
        report.note = args.note.strip()
        if args.out:
            for path in write_outputs(report, args.out, args.overwrite):
                print(f"wrote {path}")
        else:
            sys.stdout.write(render_markdown(report))
    except (AggregateError, io.OutputExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{len(report.runs)} finished, {len(report.unfinished)} unfinished, "
        f"{len(report.missing)} missing run(s)",
        file=sys.stderr,
    )
    return 1 if args.strict and (report.missing or report.unfinished) else 0


def _relative(path: str, roots: Sequence[str] = ()) -> str:
    """``path`` relative to the working directory when it lies below it, else relative to the
    parent of the scanned root that holds it (never an absolute machine path)."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    if not rel.startswith(os.pardir):
        return rel
    for root in roots:
        root = os.path.abspath(root)
        if full == root or full.startswith(root + os.sep):
            return os.path.relpath(full, os.path.dirname(root))
    return os.path.basename(full)


def run_cli() -> None:
    """Console-script entry point."""
    cli.entry_point(main)


if __name__ == "__main__":
    run_cli()
