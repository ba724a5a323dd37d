"""SavedModel export: round trip against Detector.score, and loading with TensorFlow alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import FAKE_RUN_CLASSIFIERS as CLASSIFIERS

from deep_representation_one_class.serving import export


@pytest.fixture(scope="module")
def run_dir(fake_run):
    return fake_run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "model")
    return export.export_saved_model(run_dir, out, classifiers=CLASSIFIERS)


@pytest.fixture(scope="module")
def images_and_scores(run_dir):
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build

    det = Detector.load(run_dir, CLASSIFIERS)
    x = build.load_data(det.config).test_x
    return x, det.score(x)


def _assert_close(got, want):
    # Float32 features computed in two graphs differ by ~1e-7 relative; the scorers then run in
    # float64 on both sides.
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-4, atol=1e-6)


def test_export_round_trip_matches_detector(exported, images_and_scores):
    import tensorflow as tf

    x, want = images_and_scores
    model = tf.saved_model.load(exported)
    got = {k: v.numpy() for k, v in model.serve(tf.constant(x)).items()}
    _assert_close(got, want)
    assert all(v.dtype == np.float64 for v in got.values())
    sig = model.signatures["serving_default"]
    got_sig = {k: v.numpy() for k, v in sig(images=tf.constant(x[:5])).items()}
    _assert_close(got_sig, {k: v[:5] for k, v in want.items()})
    with open(os.path.join(exported, export.EXPORT_INFO)) as f:
        info = json.load(f)
    assert info["classifiers"] == list(CLASSIFIERS)
    assert info["input_shape"] == [32, 32, 3] and info["feature"] == "pool"
    assert "pool.kde" in info["thresholds"]["quantiles"]
    # How images must be prepared before they go in (the run's preprocessing spec).
    assert info["preprocessing"]["input_shape"] == [32, 32, 3]
    assert info["preprocessing"]["resize_policy"] == "squash"


_LOADER = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deep_representation_one_class", "sklearn"):
            raise ImportError(f"{name} is blocked")
        return None
sys.meta_path.insert(0, Block())
import numpy as np
import tensorflow as tf
x = np.load(sys.argv[2])
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](images=tf.constant(x))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def test_export_loads_without_the_package_or_sklearn(exported, images_and_scores, tmp_path):
    x, want = images_and_scores
    np.save(tmp_path / "x.npy", x[:6])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # Run from an empty folder so that the repository is not importable by path either.
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, exported, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    _assert_close(got, {k: v[:6] for k, v in want.items()})


def test_tf_scorers_match_numpy_scorers():
    from deep_representation_one_class.evaluation import scorers

    rng = np.random.default_rng(0)
    train = rng.normal(size=(80, 5)) + 1.0
    test = np.r_[rng.normal(size=(10, 5)) + 1.0, rng.normal(size=(10, 5)) * 3]
    for name in CLASSIFIERS:
        scorer = scorers.make_scorer(name).fit(train)
        state = {k: tf.constant(np.asarray(v, np.float64)) for k, v in scorer.state().items()}
        got = type(scorer).tf_score(state, test.astype(np.float32)).numpy()
        want = scorer.score(test.astype(np.float32))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)
    assert set(CLASSIFIERS) <= set(export.exportable())


def test_export_refuses_foreign_folders_and_unknown_classifiers(run_dir, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(export.ExportError, match="not an earlier export"):
        export.export_saved_model(run_dir, str(tmp_path / "other"))
    assert (tmp_path / "other" / "keep.txt").exists()
    with pytest.raises(export.ExportError, match="cannot be exported"):
        export.export_saved_model(run_dir, str(tmp_path / "new"), classifiers=("kde", "dscore"))


def test_export_cli_replaces_a_previous_export(run_dir, tmp_path, capsys):
    out = str(tmp_path / "cli_export")
    assert export.main([f"--model_dir={run_dir}", f"--out={out}", "--classifiers=gde"]) == 0
    # An existing export is refused, then replaced with --overwrite.
    assert export.main([f"--model_dir={run_dir}", f"--out={out}", "--classifiers=kde"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    args = [f"--model_dir={run_dir}", f"--out={out}", "--classifiers=kde", "--overwrite"]
    assert export.main(args) == 0
    with open(os.path.join(out, export.EXPORT_INFO)) as f:
        assert json.load(f)["classifiers"] == ["kde"]
    assert sorted(os.listdir(tmp_path)) == ["cli_export"]  # no temporary folders left
    assert "wrote SavedModel" in capsys.readouterr().out
    assert export.main(["--model_dir", str(tmp_path / "none"), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
