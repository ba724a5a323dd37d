"""The run folder's schema: every file a run writes, every array key of its ``.npz`` files, and
the typed reads and writes of them.

This module is the only place that spells a run folder's file names and array keys; writers
(the runner, the tasks, ``evaluate``) and readers (serving, export, explain, the report, the
tools) take them from here. TensorFlow-free (NumPy and the atomic writes of ``utils.io``).

Layout (``docs/run_folder.md`` describes every file)::

    .droc_run           MARKER: this folder belongs to a run (guards --force_init)
    .droc_lock          LOCK: held while a process trains or evaluates the run
    config.json         CONFIG: the resolved configuration
    data.json           DATA: what the data resolved to (category, classes, test digest)
    preprocessing.json  PREPROCESSING: how images become the network's input
    checkpoints/        CHECKPOINTS: model + optimizer + step
    tb/                 TENSORBOARD: events
    embeddings.npz      EMBEDDINGS: features (image runs) or image scores and maps (patch runs)
    scores.npz          SCORES: the evaluation's test scores, one array per score key
    classifiers.npz     CLASSIFIERS (+ classifiers.json, CLASSIFIERS_META): the fitted scorers
    thresholds.json     THRESHOLDS: inlier-score quantiles and the test report
    summary.json        SUMMARY: metrics, config, bookkeeping; written last = run complete
    eval_cache/         EVAL_CACHE: finished phases of a patch evaluation
    plots/ maps/        PLOTS, MAPS: figures of the plotting tools and the patch evaluation
    explain/            EXPLAIN: attribution grids of ``explain``
    report.html         REPORT (+ report_files/, REPORT_FILES): the run's page
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deep_representation_one_class.utils import io

# ----------------------------------------------------------------------------- names
MARKER = ".droc_run"
LOCK = ".droc_lock"
CONFIG = "config.json"
DATA = "data.json"
PREPROCESSING = "preprocessing.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_INDEX = "checkpoint"  # TensorFlow's index file inside CHECKPOINTS
TENSORBOARD = "tb"
EMBEDDINGS = "embeddings.npz"
SCORES = "scores.npz"
CLASSIFIERS = "classifiers.npz"
CLASSIFIERS_META = "classifiers.json"
THRESHOLDS = "thresholds.json"
EVAL_CACHE = "eval_cache"
EVAL_CACHE_KEY = "key.json"  # inside EVAL_CACHE: what the cached phases were computed for
PLOTS = "plots"
MAPS = "maps"
EXPLAIN = "explain"
EXPLAIN_GRIDS = ("_most_anomalous.png", "_most_normal.png")  # suffixes of explain's grids
REPORT = "report.html"
REPORT_FILES = "report_files"
HPARAMS = "hparams.json"  # the reference's name for config.json (read, never written)
# The files with which an old run folder (written before they existed) is upgraded.
UPGRADE_COMMAND = "python -m deep_representation_one_class.evaluate --model_dir={run} --reextract"

# Everything a run writes into its folder; --force_init deletes these and nothing else.
RUN_FILES = (
    MARKER,
    CONFIG,
    DATA,
    SUMMARY,
    CHECKPOINTS,
    TENSORBOARD,
    EMBEDDINGS,
    SCORES,
    CLASSIFIERS,
    CLASSIFIERS_META,
    THRESHOLDS,
    PREPROCESSING,
    PLOTS,
    MAPS,
    EVAL_CACHE,
    EXPLAIN,
    REPORT,
    REPORT_FILES,
)
# What ``RunFolder.start`` writes before the first checkpoint (undone by a failed start).
START_FILES = (MARKER, CONFIG, DATA, PREPROCESSING)


def path(run_dir: str, *names: str) -> str:
    """``run_dir/name/...``: the path of a run file named by this module's constants."""
    return os.path.join(run_dir, *names)


def upgrade_hint(run_dir: str) -> str:
    """The command that records an old run's missing files (preprocessing spec, classifiers,
    scores) from its checkpoint."""
    return UPGRADE_COMMAND.format(run=run_dir)


# ----------------------------------------------------------------------------- npz keys
FEATURES = ("pool", "embed")  # the features extracted for the classifiers
CLS = "cls"  # the classifier-train split
TEST = "test"  # the test split
TEST_LABELS = "test_y"  # [T] 0/1, 1 = outlier
TEST_CLASS = "test_class"  # [T] original class ids
TEST_VIEW_LOGITS = "test_view_logits"  # [T, V, K] the rotation classifier's logits
TEST_MASKS = "test_masks"  # [T, H, W] uint8 ground truth (patch runs)
TEST_SIZES = "test_sizes"  # [T, 2] content sizes of padded test images (patch runs)
GRID_Y, GRID_X = "grid_y", "grid_x"  # window offsets of the dense test grid (patch runs)
_IMAGE_SCORE = "_image_score"
_PATCH_SCORES = "_patch_scores"
_ANOMALY_MAP = "_anomaly_map"
_SCORE_PREFIX = "score/"


def feature_key(split: str, feature: str) -> str:
    """``embeddings.npz`` key of a split's features: ``feature_key("test", "pool")``."""
    if split not in (CLS, TEST):
        raise ValueError(f"unknown split {split!r}; valid: {CLS}, {TEST}")
    return f"{split}_{feature}"


def feature_arrays(
    cls: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], labels: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``embeddings.npz`` layout of features (feature -> [N, D]) of the classifier-train
    and test splits and the test labels (also what the classifier protocol takes)."""
    arrays = {feature_key(CLS, f): v for f, v in cls.items()}
    arrays.update({feature_key(TEST, f): v for f, v in test.items()})
    arrays[TEST_LABELS] = labels
    return arrays


def parse_feature_key(array_key: str) -> tuple[str, str] | None:
    """``test_pool`` -> ``("test", "pool")``; None for a key that is not a split's features
    (labels, classes, logits and masks are not)."""
    if array_key in (TEST_LABELS, TEST_CLASS, TEST_VIEW_LOGITS, TEST_MASKS, TEST_SIZES):
        return None
    split, sep, feature = array_key.partition("_")
    return (split, feature) if sep and feature and split in (CLS, TEST) else None


def _split_score_key(score_key: str) -> tuple[str, str]:
    feature, sep, scorer = score_key.partition(".")
    if not (sep and feature and scorer) or "_" in feature:
        raise ValueError(f"a score key is '<feature>.<classifier>', got {score_key!r}")
    return feature, scorer


def image_score_key(score_key: str) -> str:
    """Patch runs' ``embeddings.npz`` key of the image scores of ``pool.gde``:
    ``pool_gde_image_score``."""
    feature, scorer = _split_score_key(score_key)
    return f"{feature}_{scorer}{_IMAGE_SCORE}"


def anomaly_map_key(score_key: str) -> str:
    """Patch runs' ``embeddings.npz`` key of the anomaly maps of ``score_key``."""
    feature, scorer = _split_score_key(score_key)
    return f"{feature}_{scorer}{_ANOMALY_MAP}"


def patch_scores_key(score_key: str) -> str:
    """Patch runs' ``embeddings.npz`` key of the [T, grid] window scores of ``score_key``."""
    feature, scorer = _split_score_key(score_key)
    return f"{feature}_{scorer}{_PATCH_SCORES}"


def _parse(array_key: str, suffix: str) -> str | None:
    if not array_key.endswith(suffix):
        return None
    feature, sep, scorer = array_key[: -len(suffix)].partition("_")
    return f"{feature}.{scorer}" if sep and feature and scorer else None


def parse_image_score_key(array_key: str) -> str | None:
    """``pool_gde_image_score`` -> ``pool.gde``; None for any other key."""
    return _parse(array_key, _IMAGE_SCORE)


def parse_anomaly_map_key(array_key: str) -> str | None:
    """``pool_gde_anomaly_map`` -> ``pool.gde``; None for any other key."""
    return _parse(array_key, _ANOMALY_MAP)


def score_array_key(score_key: str) -> str:
    """``scores.npz`` key of a score key: ``score/pool.kde``."""
    return _SCORE_PREFIX + score_key


def parse_score_array_key(array_key: str) -> str | None:
    return array_key[len(_SCORE_PREFIX) :] if array_key.startswith(_SCORE_PREFIX) else None


# classifiers.npz: the rows of the classifier-train features the classifiers were fit on (and
# held out), and each fitted scorer's arrays (their keys are recorded in classifiers.json).
FIT_ROWS = "split/fit_rows"
HOLDOUT_ROWS = "split/holdout_rows"


def classifier_array_key(score_key: str, name: str) -> str:
    """``classifiers.npz`` key of array ``name`` of the scorer fitted for ``score_key``."""
    _split_score_key(score_key)
    return f"{score_key}/{name}"


# The embeddings.npz arrays that must have one row per classifier-train / test image.
EMBEDDING_ROWS = (
    tuple(feature_key(CLS, f) for f in FEATURES),
    (*(feature_key(TEST, f) for f in FEATURES), TEST_LABELS, TEST_CLASS),
)
EMBEDDING_KEYS = (*EMBEDDING_ROWS[0], *EMBEDDING_ROWS[1][:-1])  # what re-scoring needs


# ----------------------------------------------------------------------------- reads / writes
def read_json(run_dir: str, name: str) -> dict[str, Any] | None:
    """A run's JSON file as a dict, or None when absent (``CorruptFileError`` when damaged)."""
    p = path(run_dir, name)
    return io.read_json(p, expect=dict) if os.path.isfile(p) else None


def write_json(run_dir: str, name: str, value: Mapping[str, Any]) -> None:
    io.write_json(path(run_dir, name), dict(value))


def read_config(run_dir: str) -> dict[str, Any] | None:
    """``config.json`` as written (None when absent)."""
    return read_json(run_dir, CONFIG)


def read_summary(run_dir: str) -> dict[str, Any] | None:
    """``summary.json`` (None when absent)."""
    return read_json(run_dir, SUMMARY)


def write_summary(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Writes ``summary.json`` atomically (last: the run is complete once it is there)."""
    write_json(run_dir, SUMMARY, summary)


def write_embeddings(run_dir: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Writes ``embeddings.npz`` atomically; returns its name."""
    io.write_npz(path(run_dir, EMBEDDINGS), **arrays)
    return EMBEDDINGS


def read_embeddings(
    run_dir: str, required: Sequence[str] = (), rows: Sequence[Sequence[str]] = EMBEDDING_ROWS
) -> dict[str, np.ndarray]:
    """``embeddings.npz`` (``CorruptFileError`` naming what is wrong or missing)."""
    return io.load_npz(path(run_dir, EMBEDDINGS), required=required, rows=rows)


def write_scores(run_dir: str, scores: Mapping[str, np.ndarray]) -> str:
    """Writes the evaluation's test scores (score key -> [T]) to ``scores.npz``; returns its
    name. The report reads them back instead of scoring the test set again."""
    arrays = {score_array_key(k): np.asarray(v, np.float64).reshape(-1) for k, v in scores.items()}
    io.write_npz(path(run_dir, SCORES), **arrays)
    return SCORES


def read_scores(run_dir: str) -> dict[str, np.ndarray] | None:
    """The test scores the evaluation wrote (score key -> [T]); None for a run evaluated
    before ``scores.npz`` existed."""
    p = path(run_dir, SCORES)
    if not os.path.isfile(p):
        return None
    arrays = io.load_npz(p)
    out = {}
    for k, v in arrays.items():
        key = parse_score_array_key(k)
        if key is None or v.ndim != 1:
            raise io.CorruptFileError(
                f"{p} holds {k!r} {v.shape}, expected [T] arrays keyed "
                f"'{score_array_key('<feature>.<classifier>')}'; rerun: {upgrade_hint(run_dir)}"
            )
        out[key] = v
    if len({len(v) for v in out.values()}) > 1:
        raise io.CorruptFileError(f"{p}: the score arrays differ in length")
    return out


def is_run_folder(run_dir: str) -> bool:
    """Whether ``run_dir`` carries the run marker."""
    return os.path.lexists(path(run_dir, MARKER))


def has_summary(run_dir: str) -> bool:
    return os.path.isfile(path(run_dir, SUMMARY))
