"""Reads run folders into typed records labelled with the paper's table rows and columns.

A finished run folder holds ``summary.json`` (``{"metrics": {"pool.kde": 93.1, ...}, "config":
{...every flag...}, "run": {...}}``, AUROC x 100); an unfinished one holds ``config.json`` but no
summary. The reference layout (``<run>/stats/summary.json`` with flat metrics next to
``hparams.json``) is read too. Labels come from the config only: the representation (Table 7's
row group, from the method's description or its ``table_label``), the dataset column (the
dataset's description: its label and categories) and a canonical category; nothing here imports
the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from deep_representation_one_class import catalog
from deep_representation_one_class.errors import UserError
from deep_representation_one_class.methods import METHODS
from deep_representation_one_class.models.backbones import BACKBONES
from deep_representation_one_class.reports import paper_results as paper
from deep_representation_one_class.utils import run_folder as rf

_ABSENT = object()


class AggregateError(UserError, ValueError):
    """Bad input to the aggregation: a folder that does not exist or a malformed option."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A table column: its label and full category list (None when unknown, e.g. ``fake``)."""

    label: str
    categories: tuple[str, ...] | None

    def category_name(self, category: str) -> str:
        """The paper's class name of a category value (e.g. "3" -> "cat"), or ''."""
        names = paper.CATEGORY_NAMES.get(self.label, ())
        if self.categories and category in self.categories:
            index = self.categories.index(category)
            return names[index] if index < len(names) else ""
        return ""


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: its labels and metrics (AUROC x 100, keys like ``pool.kde``)."""

    path: str
    representation: str
    dataset: DatasetSpec
    category: str
    seed: int | str | None
    metrics: Mapping[str, float]
    train_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Unfinished:
    """A run folder without a usable summary; labels are None when its config is unreadable."""

    path: str
    reason: str
    representation: str | None = None
    dataset: DatasetSpec | None = None
    category: str | None = None
    seed: int | str | None = None


def config_get(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Looks ``key`` up in a flat config, then depth-first in nested sections (``{"data": {}}``).

    Args:
        config: the run's config mapping.
        key: a flag name such as ``dataset``.
        default: returned when the key is nowhere.

    Returns:
        The value; a nested ``{"name": ...}`` section is reduced to its name.
    """
    value = config.get(key, _ABSENT)
    if value is _ABSENT:
        for section in config.values():
            if isinstance(section, Mapping):
                value = config_get(section, key, _ABSENT)
                if value is not _ABSENT:
                    break
    if isinstance(value, Mapping) and "name" in value:
        value = value["name"]
    return default if value is _ABSENT else value


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config (``{"data": {...}}``) as one flat dict, as ``config.json`` writes it."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and "name" not in value:
            out.update({k: v for k, v in _flat(value).items() if k not in out})
        else:
            out[key] = config_get(config, key)
    return out


def representation_label(config: Mapping[str, Any]) -> str:
    """The paper's representation label (Table 7 row group) of a run config.

    Evaluation-only methods (ImageNet features, PatchCore) are named by their method (with the
    backbone); otherwise ``ResNet-18 (random)`` when ``num_epoch == 0`` (the random init), a
    fine-tuned pretrained backbone is appended, and the method's ``table_label`` names the rest
    (e.g. ``Contrastive (DA)`` with distribution augmentation); an unknown method keeps its own
    name.
    """
    method = str(config_get(config, "method", "")).strip().lower()
    if method not in METHODS:
        return method or "?"
    cls = METHODS.get(method)
    flat = _flat(config)
    if cls.fixed.get("train_steps") == 0:
        return cls.table_label(flat)
    backbone = str(flat.get("backbone") or "").strip().lower()
    if backbone in BACKBONES and BACKBONES.get(backbone).pretrained:
        base = representation_label({**flat, "backbone": ""})
        return f"{base}, fine-tuned {BACKBONES.get(backbone).label}"
    with contextlib.suppress(TypeError, ValueError):
        if int(float(flat.get("num_epoch", -1))) == 0:
            return "ResNet-18 (random)"
    return cls.table_label(flat)


def dataset_spec(dataset: str, category: Any = "") -> tuple[DatasetSpec, str]:
    """Maps a ``--dataset``/``--category`` pair to its table column and canonical category.

    The column is the dataset's description (``catalog.py``): its label and categories.
    Integer categories are canonicalized like the reference's ``int(float(c))`` ("3.0" -> "3").
    A dataset with ``table_categories`` (CelebA: the paper's column is Eyeglasses) gets one
    column per category ("CelebA eyeglasses"; any case, empty = the first), so other attributes
    get columns of their own.

    Returns:
        (DatasetSpec, canonical category string).
    """
    name = str(dataset).strip().lower()
    category = str(category).strip()
    entry = catalog.find("dataset", name)
    if entry is None:
        return DatasetSpec(name or "?", None), category
    if entry.table_categories is not None:
        known = {c.lower(): c for c in entry.table_categories}
        category = known.get(category.lower(), category) or entry.table_categories[0]
        return DatasetSpec(f"{entry.table_label} {category.lower()}", (category,)), category
    cats = entry.categories
    if cats is not None and all(c.isdigit() for c in cats):
        with contextlib.suppress(ValueError):
            category = str(int(float(category)))
    return DatasetSpec(entry.table_label, cats), category


def canonical_seed(value: Any) -> int | str | None:
    """Seeds as ints where possible ("3", 3.0 -> 3) so that runs group across JSON writers."""
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return str(value)


def sort_key(value: Any) -> tuple[int, Any]:
    """Orders numbers numerically, before strings (CelebA attributes, unknown seeds)."""
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def _labels(config: Mapping[str, Any]) -> tuple[str, DatasetSpec, str, int | str | None]:
    spec, category = dataset_spec(
        config_get(config, "dataset", "?"), config_get(config, "category", "")
    )
    return representation_label(config), spec, category, canonical_seed(config_get(config, "seed"))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _unwrap(loaded: Any) -> Mapping[str, Any] | None:
    if not isinstance(loaded, Mapping):
        return None
    return loaded["config"] if isinstance(loaded.get("config"), Mapping) else loaded


def _config_of(summary: Mapping[str, Any], folder: str) -> Mapping[str, Any] | None:
    """The run config: inside summary.json, else a sibling hparams/config file or the parent's."""
    if isinstance(summary.get("config"), Mapping):
        return summary["config"]
    for candidate in (rf.HPARAMS, rf.CONFIG, os.path.join(os.pardir, rf.CONFIG)):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return _unwrap(_read_json(path))
    return None


def _metrics_of(summary: Mapping[str, Any]) -> dict[str, float]:
    raw = summary.get("metrics")
    if not isinstance(raw, Mapping):  # reference layout: a flat {metric: value} dict
        raw = {k: v for k, v in summary.items() if k not in ("config", "run")}
    return {
        str(key).lower(): float(value)
        for key, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _matches(config: Mapping[str, Any], where: Sequence[tuple[str, str]]) -> bool:
    def norm(value: Any) -> str:
        with contextlib.suppress(TypeError, ValueError):
            return repr(float(value))
        return str(value).strip().lower()

    return all(norm(config_get(config, key, "")) == norm(value) for key, value in where)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_finished(
    folder: str, run_path: str, where: Sequence[tuple[str, str]], warnings: list[str]
) -> Run | Unfinished | None:
    try:
        summary = _read_json(rf.path(folder, rf.SUMMARY))
        config = _config_of(summary, folder) if isinstance(summary, Mapping) else None
    except (OSError, ValueError) as e:
        return Unfinished(run_path, f"unreadable summary.json ({e})")
    if config is None:
        return Unfinished(run_path, "summary.json without a config")
    if where and not _matches(config, where):
        return None
    info = summary.get("run") if isinstance(summary.get("run"), Mapping) else {}
    if info.get("complete") is False:
        return Unfinished(run_path, "summary.json says complete=false", *_labels(config))
    metrics = _metrics_of(summary)
    finite = [v for v in metrics.values() if math.isfinite(v)]
    if finite and max(finite) <= 1.0:
        warnings.append(f"{run_path}: every metric is <= 1; expected AUROC x 100")
    return Run(run_path, *_labels(config), metrics, _float_or_none(info.get("train_seconds")))


def _read_unfinished(
    folder: str, run_path: str, where: Sequence[tuple[str, str]]
) -> Unfinished | None:
    try:
        config = _unwrap(_read_json(rf.path(folder, rf.CONFIG))) or {}
    except (OSError, ValueError) as e:
        return Unfinished(run_path, f"no summary.json; unreadable config.json ({e})")
    if where and not _matches(config, where):
        return None
    return Unfinished(run_path, "no summary.json", *_labels(config))


def scan_runs(
    roots: Sequence[str], where: Sequence[tuple[str, str]] = ()
) -> tuple[list[Run], list[Unfinished], list[str]]:
    """Walks ``roots`` for run folders.

    Args:
        roots: folders to walk (e.g. the ``--out`` of ``scripts/sweep.sh``).
        where: ``(flag, value)`` filters on the config; non-matching runs are counted and skipped.

    Returns:
        (finished runs, unfinished or unreadable run folders, warnings). Of duplicate runs of one
        (representation, dataset, category, seed) the first path in sorted order is kept and the
        others are named in a warning.
    """
    runs: list[Run] = []
    unfinished: list[Unfinished] = []
    warnings: list[str] = []
    excluded = 0
    for root in roots:
        if not os.path.isdir(root):
            raise AggregateError(f"runs folder '{root}' does not exist; pass a folder of runs")
        for folder, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            run_path = os.path.dirname(folder) if os.path.basename(folder) == "stats" else folder
            if rf.SUMMARY in filenames:
                record = _read_finished(folder, run_path, where, warnings)
            elif rf.CONFIG in filenames:
                record = _read_unfinished(folder, run_path, where)
            else:
                continue
            if record is None:
                excluded += 1
            elif isinstance(record, Run):
                runs.append(record)
            else:
                unfinished.append(record)
    if excluded:
        warnings.append(f"{excluded} run folder(s) excluded by --where")
    kept: dict[tuple[Any, ...], Run] = {}
    for run in sorted(runs, key=lambda r: r.path):
        key = (run.representation, run.dataset.label, run.category, run.seed)
        if key in kept:
            warnings.append(
                f"duplicate run {key}: using {kept[key].path}, ignoring {run.path} "
                "(pick one configuration with --where)"
            )
        else:
            kept[key] = run
    return list(kept.values()), unfinished, warnings
