"""One fit per (feature, classifier): fitted once by the run, saved with it, served as evaluated.

The protocol. The classifier-train features (the ``cls_*`` arrays of ``embeddings.npz``: the
un-augmented training inliers, capped at ``--max_cls``) are split by a seeded hold-out of
``--cls_holdout`` (default 10%) of the rows. Every classifier is fit ONCE, on the other rows;
that one fit

* scores the test set: the AUROCs of ``summary.json``,
* scores the held-out rows: the inlier-score quantiles of ``thresholds.json``,
* is saved to ``<run>/classifiers.npz`` (arrays only, loaded with ``allow_pickle=False``) and
  ``<run>/classifiers.json`` (scorer names, parameters, the split), and is what ``Detector``,
  ``score``, ``export`` and ``explain`` load: nothing is refitted to serve a run.

``--cls_holdout=0`` (or fewer than ``MIN_ROWS`` rows on either side) fits on every row, the
reference's protocol; the thresholds are then measured in-sample and say so. The reference fit
its classifiers on all rows, so with the default the fit set is 10% smaller than the
reference's (for KDE and 1-NN a 10% smaller bank; the AUROCs move by a few hundredths).

Identical arrays of different classifiers (the KDE and 1-NN banks of one feature) are stored
once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.evaluation.scorers import SCORERS, Scorer, as_features
from deep_representation_one_class.utils import io, run_folder

logger = logging.getLogger(__name__)

FILENAME = run_folder.CLASSIFIERS
META_FILENAME = run_folder.CLASSIFIERS_META
VERSION = 1
# Fewer held-out (or fit) rows than this and every row is fit (in-sample thresholds).
MIN_ROWS = 5
# Stream id of the hold-out generator, distinct from the dataset module's split streams.
_STREAM_HOLDOUT = 3


class ClassifierError(UserError, ValueError):
    """Saved classifiers are missing, stale or unreadable; the message says what to do."""


# The saved arrays of every scorer, their shapes in rows ``n`` (at least one) and the feature
# dimension ``d`` recorded in classifiers.json; scalars are ``()``. Checked on load, so that a
# damaged or edited file is refused naming itself and the array, instead of scoring NaN.
_STATE_SHAPES: dict[str, tuple[str, ...]] = {
    "train_features": ("n", "d"),
    "support_vectors": ("n", "d"),
    "dual_coef": ("n",),
    "mean": ("d",),
    "precision_cholesky": ("d", "d"),
    "coef": ("d",),
    "gamma": (),
    "offset": (),
    "log_norm": (),
}
_POSITIVE = ("gamma",)


def _check_state(key: str, dim: Any, state: Mapping[str, np.ndarray]) -> str | None:
    """The first problem of one classifier's saved arrays (None when they are sound)."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        return f"{key} has dim {dim!r} in {META_FILENAME}, expected a positive integer"
    rows: int | None = None
    for name, arr in state.items():
        what = f"{key} array '{name}'"
        if arr.dtype.kind not in "fiu":
            return f"{what} has dtype {arr.dtype}, expected numbers"
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            return f"{what} holds NaN or Inf"
        want = _STATE_SHAPES.get(name)
        if want is not None:
            sizes = []
            for letter in want:
                if letter == "d":
                    sizes.append(dim)
                else:
                    rows = rows if rows is not None else (arr.shape[0] if arr.ndim else 0)
                    sizes.append(rows)
            if arr.shape != tuple(sizes) or (want and want[0] == "n" and rows < 1):
                shown = "x".join(str(v) for v in sizes) or "a scalar"
                return f"{what} has shape {arr.shape}, expected {shown} (at least one row)"
        if name in _POSITIVE and not float(arr) > 0:
            return f"{what} is {float(arr)}, expected a positive number"
    return None


@dataclasses.dataclass(frozen=True)
class FitSplit:
    """Which classifier-train rows every classifier is fit on, and which are held out.

    Attributes:
      fit_rows: [F] sorted int64 row indices the classifiers are fit on.
      holdout_rows: [H] sorted int64 rows held out (empty when ``source == "in_sample"``).
      source: ``cls_holdout`` or ``in_sample`` (every row fit; thresholds in-sample).
      fraction: the requested hold-out share.
      seed: the run's seed, which determines the split.
      num_rows: N, the number of classifier-train rows.
    """

    fit_rows: np.ndarray
    holdout_rows: np.ndarray
    source: str
    fraction: float
    seed: int
    num_rows: int

    @property
    def threshold_rows(self) -> np.ndarray:
        """The rows whose scores set the thresholds: the hold-out, or all rows in-sample."""
        return self.fit_rows if self.source == "in_sample" else self.holdout_rows


def split_rows(num_rows: int, seed: int, fraction: float = 0.1) -> FitSplit:
    """The seeded fit / hold-out partition of ``num_rows`` classifier-train rows.

    A pure function of ``(num_rows, seed, fraction)``: ``round(fraction * N)`` rows are held out
    unless either side would have fewer than ``MIN_ROWS`` rows (or ``fraction`` is 0), in which
    case every row is fit (``source="in_sample"``).
    """
    if not 0.0 <= fraction < 1.0:
        raise ClassifierError(f"hold-out fraction must be in [0, 1), got {fraction}")
    every = np.arange(num_rows, dtype=np.int64)
    n_hold = round(fraction * num_rows)
    if n_hold < MIN_ROWS or num_rows - n_hold < MIN_ROWS:
        return FitSplit(every, every[:0], "in_sample", float(fraction), int(seed), num_rows)
    perm = np.random.default_rng([int(seed) % (2**63), _STREAM_HOLDOUT]).permutation(num_rows)
    return FitSplit(
        np.sort(perm[n_hold:]).astype(np.int64),
        np.sort(perm[:n_hold]).astype(np.int64),
        "cls_holdout",
        float(fraction),
        int(seed),
        num_rows,
    )


def canonical_names(classifiers: Sequence[str]) -> list[str]:
    """Canonical scorer keys in request order, duplicates and featureless names dropped.

    ``logit`` and ``dscore`` (the rotation classifier's own scores) are not fit on features.

    Raises:
      ClassifierError: an unknown name (the message lists the valid ones).
    """
    names: list[str] = []
    for name in classifiers:
        if str(name).lower() in ("logit", "dscore"):
            continue
        try:
            key = SCORERS.canonical(name)
        except KeyError as e:
            raise ClassifierError(str(e.args[0])) from None
        if key not in names:
            names.append(key)
    return names


@dataclasses.dataclass
class ClassifierSet:
    """Fitted scorers keyed ``"<feature>.<classifier>"`` (``"pool.kde"``) and their split.

    Attributes:
      scorers: key -> fitted ``Scorer``.
      split: the ``FitSplit`` they were fit with.
      failed: key -> reason, for classifiers that could not be fit (reported as NaN).
    """

    scorers: dict[str, Scorer]
    split: FitSplit
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.scorers)

    def for_feature(self, feature: str) -> dict[str, Scorer]:
        """Classifier name -> scorer, for one feature type."""
        prefix = f"{feature}."
        return {k[len(prefix) :]: s for k, s in self.scorers.items() if k.startswith(prefix)}

    def score(self, feats: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Scores of every classifier whose feature is in ``feats`` (feature -> [M, D])."""
        out: dict[str, np.ndarray] = {}
        for key, scorer in self.scorers.items():
            feature = key.split(".", 1)[0]
            if feature in feats:
                out[key] = scorer.score(feats[feature])
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, run_dir: str) -> None:
        """Writes ``classifiers.npz`` then ``classifiers.json`` (atomically, each fsynced)."""
        arrays: dict[str, np.ndarray] = {
            run_folder.FIT_ROWS: self.split.fit_rows,
            run_folder.HOLDOUT_ROWS: self.split.holdout_rows,
        }
        by_digest: dict[str, str] = {}
        entries: dict[str, Any] = {}
        for key, scorer in self.scorers.items():
            refs = {}
            for name, value in scorer.arrays().items():
                arr = np.asarray(value)
                if not arr.flags.c_contiguous:  # (ascontiguousarray would make scalars 1-d)
                    arr = arr.copy(order="C")
                digest = hashlib.sha256(
                    arr.dtype.str.encode() + str(arr.shape).encode() + arr.tobytes()
                ).hexdigest()
                own = run_folder.classifier_array_key(key, name)
                ref = by_digest.setdefault(digest, own)
                if ref == own:
                    arrays[ref] = arr
                refs[name] = ref
            entries[key] = {
                "scorer": scorer.name,
                "params": scorer.params(),
                "dim": scorer.dim,
                "arrays": refs,
            }
        meta = {
            "version": VERSION,
            "protocol": (
                "every classifier fit once on split/fit_rows of the classifier-train features "
                "(embeddings.npz cls_*); summary.json AUROCs, thresholds.json and every served "
                "score use this fit"
            ),
            "split": {
                "source": self.split.source,
                "fraction": self.split.fraction,
                "seed": self.split.seed,
                "num_rows": self.split.num_rows,
                "fit": int(self.split.fit_rows.size),
                "holdout": int(self.split.holdout_rows.size),
            },
            "classifiers": entries,
            "failed": self.failed,
        }
        io.write_npz(os.path.join(run_dir, FILENAME), **arrays)
        io.write_json(os.path.join(run_dir, META_FILENAME), meta)

    @classmethod
    def load(cls, run_dir: str, keys: Sequence[str] | None = None) -> ClassifierSet:
        """The run's fitted classifiers, without refitting.

        Args:
          run_dir: a finished run folder.
          keys: ``"pool.kde"``-style keys to load (None = all saved ones).

        Raises:
          ClassifierError: the files are missing (a run evaluated by an older version),
            unreadable, or lack a requested key.
        """
        meta_path = os.path.join(run_dir, META_FILENAME)
        npz_path = os.path.join(run_dir, FILENAME)
        hint = (
            f"re-evaluate it with: python -m deep_representation_one_class.evaluate "
            f"--model_dir={run_dir}"
        )
        if not (os.path.isfile(meta_path) and os.path.isfile(npz_path)):
            raise ClassifierError(f"{run_dir} has no saved classifiers ({META_FILENAME}); {hint}")
        reading = meta_path  # the file named when reading fails
        try:
            meta = io.read_json(meta_path, expect=dict)
            entries = meta["classifiers"]
            split_meta = meta["split"]
            if meta.get("version") != VERSION:
                raise ClassifierError(
                    f"{meta_path} has version {meta.get('version')}, expected {VERSION}; {hint}"
                )
            wanted = list(entries) if keys is None else list(keys)
            missing = [k for k in wanted if k not in entries]
            if missing:
                failed = meta.get("failed", {})
                why = "; ".join(f"{k}: {failed[k]}" for k in missing if k in failed)
                raise ClassifierError(
                    f"{run_dir} has no fitted {', '.join(missing)} (saved: "
                    f"{', '.join(entries) or 'none'}){'; ' + why if why else ''}; pass other "
                    f"classifiers or re-evaluate with --classifiers"
                )
            scorers: dict[str, Scorer] = {}
            reading = npz_path
            io.check_npz_headers(npz_path)
            with np.load(npz_path, allow_pickle=False) as npz:
                split = FitSplit(
                    npz[run_folder.FIT_ROWS].astype(np.int64),
                    npz[run_folder.HOLDOUT_ROWS].astype(np.int64),
                    str(split_meta["source"]),
                    float(split_meta["fraction"]),
                    int(split_meta["seed"]),
                    int(split_meta["num_rows"]),
                )
                for key in wanted:
                    entry = entries[key]
                    state = {name: npz[ref] for name, ref in entry["arrays"].items()}
                    problem = _check_state(key, entry["dim"], state)
                    if problem is not None:
                        raise ClassifierError(f"{npz_path}: {problem}; {hint}")
                    scorer_cls = SCORERS.get(entry["scorer"])
                    scorers[key] = scorer_cls.from_arrays(state, entry["params"], entry["dim"])
        except (ClassifierError, io.CorruptFileError):
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            # A tampered or truncated file: name it (meta or arrays) rather than the folder.
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise ClassifierError(f"cannot read {reading} ({why}); {hint}") from None
        return cls(scorers, split, dict(meta.get("failed", {})))


def fit(
    cls_feats: Mapping[str, Any],
    classifiers: Sequence[str],
    split: FitSplit,
    *,
    on_error: str = "nan",
    timings: dict[str, float] | None = None,
) -> ClassifierSet:
    """Fits every classifier on every feature type, once, on ``split.fit_rows``.

    Args:
      cls_feats: feature name (``pool``, ``embed``) -> ``[N, D]`` classifier-train features.
      classifiers: scorer keys or aliases (``logit``/``dscore`` are skipped).
      split: from ``split_rows(N, seed, fraction)``.
      on_error: ``"nan"``: a classifier that fails on the data (NaN features after
        divergence, a collapsed head with zero variance) is logged and left out, so one
        degenerate feature type does not lose the others; ``"raise"`` re-raises.
      timings: if given, ``timings["fit/<key>"]`` gets each fit's seconds.

    Returns:
      The ``ClassifierSet``.
    """
    if on_error not in ("raise", "nan"):
        raise ClassifierError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
    names = canonical_names(classifiers)
    scorers: dict[str, Scorer] = {}
    failed: dict[str, str] = {}
    for feature, x in cls_feats.items():
        x = np.asarray(x)
        if x.shape[0] != split.num_rows:
            raise ClassifierError(
                f"{feature} has {x.shape[0]} classifier-train rows, the split {split.num_rows}"
            )
        fit_x = x[split.fit_rows]
        for name in names:
            key = f"{feature}.{name}"
            start = time.perf_counter()
            try:
                scorers[key] = SCORERS.get(name)().fit(as_features(fit_x, f"{key} fit features"))
            except ValueError as err:
                if on_error == "raise":
                    raise
                logger.warning("%s cannot be fit, recording NaN: %s", key, err)
                failed[key] = str(err).splitlines()[0]
            if timings is not None:
                timings[f"fit/{key}"] = time.perf_counter() - start
    return ClassifierSet(scorers, split, failed)
