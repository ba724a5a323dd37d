"""One pass through a run: the task and its views are built once, and the report shows the
scores the evaluation computed (the model never sees the test set again, and no classifier
scores it again)."""

from __future__ import annotations

import numpy as np
from conftest import tiny_config

from deep_representation_one_class.evaluation import classifiers as classifiers_lib
from deep_representation_one_class.evaluation import features as features_lib
from deep_representation_one_class.reports import run_artifacts
from deep_representation_one_class.tasks import image as image_task
from deep_representation_one_class.training import build, rescore, runner
from deep_representation_one_class.utils import run_folder as rf


def _counting(monkeypatch, owner, name, calls, *, during=None):
    """Replaces ``owner.name`` by a wrapper that appends to ``calls`` (only while ``during``
    holds a true first item, when given)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if during is None or during[0]:
            calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return original


def test_a_run_builds_its_task_once_and_its_report_scores_nothing(tmp_path, monkeypatch):
    cfg = tiny_config(strategy="default", model_dir=str(tmp_path / "run"), report=True)
    cfg = cfg.replace(eval_every=1)  # a periodic evaluation too: it uses the same views
    tasks, views = [], []
    _counting(monkeypatch, build, "task_for", tasks)
    _counting(monkeypatch, image_task, "image_views", views)
    # Counted only while the report is written: the model on images, classifiers on features.
    in_report = [False]
    extracts, scored = [], []
    _counting(monkeypatch, features_lib, "extract", extracts, during=in_report)
    _counting(monkeypatch, classifiers_lib.ClassifierSet, "score", scored, during=in_report)
    write = runner.report.try_write_run_report

    def report(*args, **kwargs):
        in_report[0] = True
        try:
            return write(*args, **kwargs)
        finally:
            in_report[0] = False

    monkeypatch.setattr(runner.report, "try_write_run_report", report)
    evaluated = {}
    evaluate = image_task.ImageTask.evaluate

    def keep(self, *args, **kwargs):
        out = evaluate(self, *args, **kwargs)
        if kwargs.get("run_dir"):
            evaluated.update(out.scores)
        return out

    monkeypatch.setattr(image_task.ImageTask, "evaluate", keep)

    assert runner.run(cfg).status == "complete"
    assert tasks == ["task_for"], tasks
    assert views == ["image_views"], views
    assert (tmp_path / "run" / rf.REPORT).is_file()
    assert extracts == [] and scored == []  # the report re-scored nothing
    # The report's scores are the evaluation's, key for key.
    shown = run_artifacts.load_run(cfg.model_dir).scores
    assert set(shown) == set(evaluated) and evaluated
    for key, s in evaluated.items():
        np.testing.assert_array_equal(shown[key], np.asarray(s, np.float64))


def test_evaluate_rewrites_the_scores_the_report_shows(fake_run, tmp_path):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(fake_run, run)
    rescore.evaluate_run(run, classifiers=["gde"])
    saved = rf.read_scores(run)
    assert set(saved) == {"pool.gde", "embed.gde"}
    cset = classifiers_lib.ClassifierSet.load(run)
    arrays = rf.read_embeddings(run)
    expected = cset.score({"pool": arrays[rf.feature_key(rf.TEST, "pool")]})["pool.gde"]
    np.testing.assert_allclose(saved["pool.gde"], expected)
    assert set(run_artifacts.load_run(run).scores) == set(saved)


def test_a_run_evaluated_before_scores_npz_is_reported_from_its_saved_classifiers(
    fake_run, tmp_path
):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(fake_run, run)
    new = run_artifacts.load_run(run).scores
    (tmp_path / "run" / rf.SCORES).unlink()
    old = run_artifacts.load_run(run).scores  # the saved fit scores the saved features
    assert set(old) == set(new)
    for key in new:
        np.testing.assert_allclose(old[key], new[key], rtol=1e-6, atol=1e-9)


def test_evaluate_reextract_builds_the_task_once(fake_run, tmp_path, monkeypatch):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(fake_run, run)
    before = rf.read_scores(run)
    tasks = []
    _counting(monkeypatch, build, "task_for", tasks)
    rescore.evaluate_run(run, reextract=True)
    assert tasks == ["task_for"]
    after = rf.read_scores(run)  # the restored checkpoint gives the features it gave
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-4, atol=1e-5)
