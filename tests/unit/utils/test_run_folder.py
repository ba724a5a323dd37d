"""The run folder's schema (``utils/run_folder.py``): the only module that spells a run
folder's file names and array keys; typed keys; the scores the report shows."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from deep_representation_one_class.utils import io
from deep_representation_one_class.utils import run_folder as rf

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "deep_representation_one_class"
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
    rf.FIT_ROWS,
    rf.HOLDOUT_ROWS,
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


# ----------------------------------------------------------------------------- old run folders
def _old_copy(fake_run, tmp_path, **config_changes) -> pathlib.Path:
    """A copy of the fake run as an older version wrote it: no preprocessing spec, no scores,
    no data record, and ``config_changes`` applied to its config.json."""
    import json
    import shutil

    run = tmp_path / "old_run"
    shutil.copytree(fake_run, run)
    for name in (rf.PREPROCESSING, rf.SCORES, rf.DATA):
        (run / name).unlink()
    raw = json.loads((run / rf.CONFIG).read_text())
    raw.pop("resize_policy")  # a run from before the flag: its images were squashed
    raw.update(config_changes)
    (run / rf.CONFIG).write_text(json.dumps(raw))
    return run


def _images(folder: pathlib.Path) -> pathlib.Path:
    from PIL import Image

    from deep_representation_one_class.datasets import fake

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, img in enumerate(fake.make_images(3, 0, (40, 24, 3), rng)):
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def test_an_old_run_without_a_spec_serves_as_it_was_trained(fake_run, tmp_path, capsys):
    from deep_representation_one_class.serving import export, score
    from deep_representation_one_class.serving.detector import Detector

    run = _old_copy(fake_run, tmp_path)
    images = _images(tmp_path / "images")
    det = Detector.load(str(run), ["kde"])
    assert det.spec.source == rf.CONFIG and det.spec.resize_policy == "squash"
    new = Detector.load(fake_run, ["kde"])  # the same run with its recorded spec
    assert det.spec.input_shape == new.spec.input_shape
    x_old, _ = det.load_images(str(images))
    x_new, _ = new.load_images(str(images))
    np.testing.assert_array_equal(x_old, x_new)
    np.testing.assert_allclose(det.score(x_old)["kde"], new.score(x_new)["kde"], rtol=1e-5)
    out = tmp_path / "scores.csv"
    assert score.main([f"--model_dir={run}", f"--images={images}", f"--out={out}"]) == 0
    assert out.is_file()
    exported = tmp_path / "export"
    assert export.main([f"--model_dir={run}", f"--out={exported}", "--classifiers=kde"]) == 0
    capsys.readouterr()


def test_an_old_same_scale_run_says_how_to_upgrade_and_the_upgrade_works(
    fake_run, tmp_path, capsys
):
    from PIL import Image

    from deep_representation_one_class.serving import explain_run, export, score
    from deep_representation_one_class.serving.detector import Detector, DetectorError
    from deep_representation_one_class.training import rescore

    # The same network, trained (as far as the folder says) on a folder of images of several
    # sizes under same_scale: the factor depended on the data and was not recorded.
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, cls, n in (("train", "part", 16), ("test", "part", 4), ("test", "defect", 4)):
        (data / split / cls).mkdir(parents=True)
        for i in range(n):
            shape = (24, 40, 3) if i % 2 else (36, 20, 3)
            img = rng.integers(0, 255, shape, dtype=np.uint8)
            Image.fromarray(img).save(data / split / cls / f"{i}.png")
    run = _old_copy(
        fake_run,
        tmp_path,
        dataset="folder",
        category="part",
        root=str(data),
        resize_policy="same_scale",
        cache_dir="",
    )
    images = _images(tmp_path / "images")
    upgrade = f"evaluate --model_dir={run} --reextract"
    with pytest.raises(DetectorError, match="same_scale") as e:
        Detector.load(str(run))
    assert upgrade in str(e.value) and "\n" not in str(e.value)
    out = tmp_path / "scores.csv"
    for main, argv in (
        (score.main, [f"--images={images}", f"--out={out}"]),
        (export.main, [f"--out={tmp_path / 'export'}"]),
        (explain_run.main, [f"--images={images}"]),
    ):
        assert main([f"--model_dir={run}", *argv]) == 2, main.__module__
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and upgrade in err, (main.__module__, err)
    assert not out.exists()
    # The upgrade: extracted again from the data, the factor is recorded, and it serves.
    rescore.evaluate_run(str(run), reextract=True)
    spec = Detector.load(str(run), ["kde"]).spec
    assert spec.resize_policy == "same_scale" and spec.scale == pytest.approx(32 / 40)
    assert score.main([f"--model_dir={run}", f"--images={images}", f"--out={out}"]) == 0
    assert rf.read_scores(str(run)) is not None


def test_the_docs_page_describes_every_run_file():
    page = (PACKAGE.parent / "docs" / "run_folder.md").read_text()
    missing = [n for n in (*rf.RUN_FILES, rf.LOCK) if f"`{n}" not in page]
    assert not missing, missing


def test_checkpoints_are_restored_in_one_place():
    # Training's resume, evaluate --reextract and serving all call training.checkpoints.restore.
    owner = PACKAGE / "training" / "checkpoints.py"
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("Checkpoint", "CheckpointManager", "latest_checkpoint")
                and getattr(node.value, "attr", None) == "train"  # tf.train.<name>
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.attr}")
    assert not found, "\n".join(found)
