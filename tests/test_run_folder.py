"""The run folder's schema (``utils/run_folder.py``): the only module that spells a run
folder's file names and array keys; typed keys; the scores the report shows."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "deep_representation_one_class"
SCHEMA = PACKAGE / "utils" / "run_folder.py"
# Names of a run folder that are distinctive enough to be found anywhere as a string; the
# short folder names (tb, plots, maps, explain) are words used elsewhere too, and are found
# where they are joined onto a path.
NAMES = {
    n
    for n in (*rf.RUN_FILES, rf.LOCK, rf.EVAL_CACHE_KEY, rf.HPARAMS)
    if "." in n or "_" in n or n == rf.CHECKPOINTS
}
FOLDER_WORDS = {rf.TENSORBOARD, rf.PLOTS, rf.MAPS, rf.EXPLAIN, rf.CHECKPOINT_INDEX}
# Array keys of the run's .npz files (the suffixes of the typed keys included).
KEYS = {
    rf.TEST_LABELS,
    rf.TEST_CLASS,
    rf.TEST_VIEW_LOGITS,
    rf.TEST_MASKS,
    rf.GRID_Y,
    rf.GRID_X,
    *(rf.feature_key(s, f) for s in (rf.CLS, rf.TEST) for f in rf.FEATURES),
}
SUFFIXES = ("_image_score", "_anomaly_map", "_patch_scores")
# Modules whose own data files share a key name with a run's arrays (a dataset's decoded
# cache holds ``test_masks``/``test_sizes`` too): they may spell those keys, not file names.
OWN_KEYS = {"datasets"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _is_path_join(node: ast.AST) -> bool:
    func = getattr(node, "func", None)
    return isinstance(func, ast.Attribute) and func.attr == "join"


def _spelled(path: pathlib.Path, rel: pathlib.Path | None = None) -> list[str]:
    """``rel:line: value`` of the string constants in ``path`` that spell a run file or key,
    in line order."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    rel = rel or path.relative_to(PACKAGE)
    own_keys = rel.parts[0] in OWN_KEYS
    found = []
    joined = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _is_path_join(node)
        for arg in node.args
    }
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in docs:
            continue
        v = node.value
        file_like = v in NAMES or any(v.startswith(n + "/") for n in NAMES)
        folder = v in FOLDER_WORDS and id(node) in joined
        key = not own_keys and (v in KEYS or v.endswith(SUFFIXES))
        if file_like or folder or key:
            found.append((node.lineno, node.col_offset, f"{rel}:{node.lineno}: {v!r}"))
    return [hit for *_, hit in sorted(found)]


def test_only_the_schema_spells_run_file_names_and_array_keys():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p != SCHEMA for hit in _spelled(p)]
    assert not found, "\n".join(found)


def test_the_scan_finds_a_bare_name(tmp_path):
    # The check above must see a file name in code, and must not see one in a docstring.
    mod = tmp_path / "probe.py"
    code = '"""Writes summary.json."""\nimport os\nP = os.path.join("r", "summary.json")\n'
    code += 'K = "pool_kde_image_score"\nT = os.path.join("r", "tb")\nW = "tb"\n'
    mod.write_text(code)
    hits = _spelled(mod, pathlib.Path("serving", "probe.py"))
    assert [h.split(": ", 1)[1] for h in hits] == [
        "'summary.json'",
        "'pool_kde_image_score'",
        "'tb'",
    ]


def test_typed_keys_round_trip():
    assert rf.feature_key(rf.TEST, "pool") == "test_pool"
    assert rf.parse_feature_key("cls_embed") == (rf.CLS, "embed")
    assert rf.parse_feature_key(rf.TEST_LABELS) is None
    assert rf.parse_feature_key(rf.TEST_CLASS) is None
    for key in ("pool.kde", "embed.gde", "pool.locsvm", "dscore.auc"):
        assert rf.parse_image_score_key(rf.image_score_key(key)) == key
        assert rf.parse_anomaly_map_key(rf.anomaly_map_key(key)) == key
        assert rf.parse_score_array_key(rf.score_array_key(key)) == key
        assert rf.parse_image_score_key(rf.anomaly_map_key(key)) is None
    assert rf.parse_image_score_key(rf.TEST_LABELS) is None
    with pytest.raises(ValueError, match=r"<feature>\.<classifier>"):
        rf.image_score_key("pool")
    with pytest.raises(ValueError, match="split"):
        rf.feature_key("train", "pool")


def test_scores_file_round_trip_and_damage(tmp_path):
    assert rf.read_scores(str(tmp_path)) is None  # an older run: none written
    scores = {"pool.kde": np.array([0.1, 0.9, 0.3]), "dscore.auc": np.array([1.0, 2.0, 3.0])}
    assert rf.write_scores(str(tmp_path), scores) == rf.SCORES
    back = rf.read_scores(str(tmp_path))
    assert set(back) == set(scores)
    for k, v in scores.items():
        np.testing.assert_array_equal(back[k], v)
    io.write_npz(rf.path(str(tmp_path), rf.SCORES), stray=np.zeros(3))
    with pytest.raises(io.CorruptFileError, match="stray"):
        rf.read_scores(str(tmp_path))


def test_run_files_are_unique_and_cover_what_a_start_writes():
    assert len(set(rf.RUN_FILES)) == len(rf.RUN_FILES)
    assert set(rf.START_FILES) <= set(rf.RUN_FILES)
    assert rf.LOCK not in rf.RUN_FILES  # the lock is the holder's, never deleted as output
