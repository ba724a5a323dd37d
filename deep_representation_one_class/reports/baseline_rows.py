"""The baselines' rows in every table: the run report, the end-of-run summary, ``aggregate`` and
the MVTec AD table.

A defect run (``--baselines``) stores its baselines' metrics under their own prefixes
(``tasks/baselines.py``, ``tasks/scratch.py``): ``baseline_pixels.<scorer>[.<kind>]`` (raw
pixels: no feature), ``baseline_random.<feature>.<scorer>[.<kind>]`` (the untrained network)
and ``baseline_scratch.<feature>.<scorer>[.<kind>]`` (the from-scratch recipe of a pretrained
run). A table shows each as a row labelled ``<what> [baseline]`` next to the run's own rows.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BASELINES", "is_baseline", "label", "row_prefixes", "scorer_rows"]

# (metric prefix, row label, whether a feature name follows the prefix), in table order.
BASELINES = (
    ("baseline_pixels", "raw pixels", False),
    ("baseline_random", "untrained network", True),
    ("baseline_scratch", "from scratch", True),
)


def is_baseline(key: str) -> bool:
    """Whether a metric key (or a synthetic-check key) belongs to a baseline."""
    return key.removeprefix("synthetic.").startswith("baseline_")


def row_prefixes(keys: Iterable[str], feature: str | None = None) -> list[tuple[str, str]]:
    """``(name, prefix)`` of every baseline row among metric ``keys`` (synthetic ones left
    out): the row's cells are ``<prefix>.<scorer>[.<kind>]``; ``label(name)`` is its row label.

    Args:
      keys: metric keys of one run or of many.
      feature: keep only this feature's rows of the featured baselines (None: all of them;
        the raw-pixel row has no feature and is always kept).
    """
    keys = [k for k in keys if not k.startswith("synthetic.")]
    rows = []
    for prefix, name, featured in BASELINES:
        mine = [k[len(prefix) + 1 :] for k in keys if k.startswith(prefix + ".")]
        if not featured:
            if mine:
                rows.append((name, prefix))
            continue
        feats = sorted({k.split(".")[0] for k in mine if "." in k})
        for f in feats:
            if feature is None or f == feature:
                rows.append((name if f == "pool" else f"{name}, {f}", f"{prefix}.{f}"))
    return rows


def label(name: str, scorer: str = "") -> str:
    """A baseline row's label: ``from scratch [baseline]``, ``from scratch: auc [baseline]``."""
    return f"{name}: {scorer} [baseline]" if scorer else f"{name} [baseline]"


def scorer_rows(keys: Iterable[str]) -> list[tuple[str, str]]:
    """``(label, metric base)`` of every baseline row per scorer, e.g. ``("from scratch: auc
    [baseline]", "baseline_scratch.pool.auc")``; the row's cells are ``<base>.<kind>``."""
    keys = list(keys)
    out = []
    for name, prefix in row_prefixes(keys):
        scorers = {k[len(prefix) + 1 :].split(".")[0] for k in keys if k.startswith(prefix + ".")}
        out += [(label(name, c), f"{prefix}.{c}") for c in sorted(scorers)]
    return out
