"""The from-scratch baseline of pretrained runs (``tasks/scratch.py``): a tiny folder run and a
tiny MVTec-layout run train the recipe for a few steps and report ``baseline_scratch.*`` in
summary.json, the run's report and the aggregated tables; ``--scratch_steps=0`` turns it off;
an interrupted baseline resumes from its checkpoint and a finished one is not recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import resolve
from deep_representation_one_class.reports import aggregate, mvtec_table
from deep_representation_one_class.tasks import patch_cache, patch_eval, scratch
from deep_representation_one_class.training import loop, runner
from deep_representation_one_class.training import scratch as scratch_training
from unit.tasks.test_patches import SIZE, make_mvtec_tree

# Tiny everywhere: the run's network (the untrained and from-scratch baselines use it).
TINY = dict(net_type="resnet10", net_width=0.0625, cache_dir="", strategy="default")


def _photos(root: Path) -> Path:
    """root/train/good: 24 smooth colour gradients; root/test/{good,odd}: gradients and noise."""
    rng = np.random.default_rng(0)

    def gradient() -> np.ndarray:
        yy, xx = np.mgrid[0:40, 0:40] / 40.0
        a, b, c = rng.uniform(0.2, 0.8, 3)
        img = np.stack([a + 0.2 * yy, b + 0.2 * xx, c + 0.1 * (xx - yy)], -1)
        return np.clip(img * 255, 0, 255).astype(np.uint8)

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(24):
        save(root / "train" / "good" / f"{i}.png", gradient())
    for i in range(6):
        save(root / "test" / "good" / f"{i}.png", gradient())
        save(root / "test" / "odd" / f"{i}.png", rng.integers(0, 256, (40, 40, 3), np.uint8))
    return root


def _folder_config(root: Path, run: Path, **kw) -> config_lib.Config:
    fields = dict(
        dataset="folder",
        category="good",
        root=str(root),
        input_shape=(48, 48, 3),  # the recipe trains at the folder's from-scratch 32 px
        pretrained_size=32,
        classifiers=("gde", "kde"),
        synthetic_holdout=4,
        scratch_steps=3,
        **TINY,
    )
    fields.update(kw)
    fields = {k: v for k, v in fields.items() if v is not None}
    return resolve.build(**fields).replace(model_dir=str(run))


def _mvtec_config(root: Path, run: Path, **kw) -> config_lib.Config:
    fields = dict(
        dataset="mvtec",
        category="tile",
        root=str(root),
        input_shape=(SIZE, SIZE, 3),
        pretrained_size=32,
        patch_size=16,
        patch_stride=8,
        patch_bank=300,
        smooth_sigma=2.0,
        eval_batch_size=256,
        synthetic_holdout=4,
        scratch_steps=3,
        report=False,
        **TINY,
    )
    fields.update(kw)
    return resolve.build(**fields).replace(model_dir=str(run))


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.model_dir) / "summary.json").read_text())


def test_scratch_config_is_the_tasks_recipe_with_the_runs_data_and_network(tmp_path):
    cfg = _folder_config(tmp_path / "photos", tmp_path / "run")
    assert cfg.method == "imagenet" and scratch.applies(cfg)
    s = scratch_training.scratch_config(cfg)
    assert (s.method, s.distaug_type, s.train_steps) == ("contrastive", "rot", 3)
    assert s.input_shape == (32, 32, 3) and (s.net_type, s.net_width) == ("resnet10", 0.0625)
    assert s.classifiers == cfg.classifiers and s.seed == cfg.seed
    assert not s.baselines and s.options["scratch_steps"] == 0
    m = scratch_training.scratch_config(_mvtec_config(tmp_path / "mvtec", tmp_path / "run2"))
    assert (m.method, m.input_shape, m.patch_size) == ("contrastive", (SIZE, SIZE, 3), 16)
    # Only pretrained runs get it, and only with the baselines and a positive budget.
    own = _folder_config(tmp_path, tmp_path / "r", method="contrastive", pretrained_size=None)
    assert not scratch.applies(own)
    assert not scratch.applies(_folder_config(tmp_path, tmp_path / "r", scratch_steps=0))
    assert not scratch.applies(_folder_config(tmp_path, tmp_path / "r", baselines=False))
    with pytest.raises(config_lib.ConfigError, match="--scratch_steps must be >= 0"):
        _folder_config(tmp_path, tmp_path / "r", scratch_steps=-1)


def test_folder_run_reports_the_from_scratch_row(tmp_path, capsys):
    cfg = _folder_config(_photos(tmp_path / "photos"), tmp_path / "runs" / "run", report=True)
    result = runner.run(cfg)
    assert result.status == "complete"
    summary = _summary(cfg)
    m = summary["metrics"]
    for key in ("baseline_scratch.pool.gde", "baseline_scratch.pool.kde"):
        assert 0 <= m[key] <= 100, sorted(m)
    assert "baseline_random.pool.gde" in m and "baseline_pixels.gde" in m
    record = summary["baseline_scratch"]
    assert (record["method"], record["distaug_type"], record["train_steps"]) == (
        "contrastive",
        "rot",
        3,
    )
    assert record["input_shape"] == [32, 32, 3]
    assert record["train_images"] == 4 * (24 - 4)  # rotations x training images after hold-out
    assert record["seconds"] >= record["train_seconds"] > 0 and record["cpu_seconds"] > 0
    assert summary["run"]["timings"]["baseline_scratch"] > 0
    assert not (Path(cfg.model_dir) / patch_cache.CACHE_DIR).exists()
    html = (Path(cfg.model_dir) / "report.html").read_text()
    assert "from scratch" in html and "untrained network" in html
    # The aggregated table carries the baselines as rows next to the run's own.
    assert aggregate.main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "from scratch [baseline]" in out and "raw pixels [baseline]" in out, out


def test_scratch_steps_zero_turns_it_off(tmp_path):
    cfg = _folder_config(_photos(tmp_path / "photos"), tmp_path / "run", scratch_steps=0)
    metrics = runner.run(cfg.replace(report=False)).metrics
    assert not [k for k in metrics if k.startswith("baseline_scratch")]
    assert "baseline_random.pool.gde" in metrics
    assert "baseline_scratch" not in _summary(cfg)


def test_mvtec_run_reports_the_from_scratch_row_and_resumes(tmp_path, monkeypatch, capsys):
    cfg = _mvtec_config(make_mvtec_tree(tmp_path / "mvtec", "tile"), tmp_path / "runs" / "run")
    assert cfg.method == "patchcore"
    # 1. Cut right after the from-scratch training (its checkpoint is saved at the last step).
    trained_steps = []
    train_loop = loop.train_loop

    def counted(state, start):
        trained_steps.append((start, state.plan.total_steps))
        return train_loop(state, start)

    monkeypatch.setattr(loop, "train_loop", counted)
    with monkeypatch.context() as m:

        def cut(*a, **kw):
            raise RuntimeError("cut while scoring the from-scratch network")

        m.setattr(patch_eval, "_baseline", _only_scratch_fails(patch_eval._baseline, cut))
        with pytest.raises(RuntimeError, match="cut while scoring"):
            runner.run(cfg)
    assert trained_steps == [(0, 3)]
    cache = Path(cfg.model_dir) / patch_cache.CACHE_DIR
    assert list((cache / scratch.SCRATCH_DIR).glob("*/checkpoints/checkpoint"))
    # 2. The rerun reuses the trained network (no step trained again) and finishes.
    result = runner.run(cfg)
    assert result.status == "complete" and trained_steps == [(0, 3)]
    summary = _summary(cfg)
    m = summary["metrics"]
    for kind in ("", ".image_auroc", ".pixel_auroc", ".pro"):
        assert 0 <= m[f"baseline_scratch.pool.auc{kind}"] <= 100, sorted(m)
    assert "synthetic.baseline_scratch.pool.auc" in m
    assert summary["baseline_scratch"]["resumed_at_step"] == 3
    assert summary["baseline_scratch"]["method"] == "contrastive"
    assert not cache.exists()
    # The per-category table lists the baselines as their own rows.
    assert mvtec_table.main([str(tmp_path / "runs"), "--key", "pool.auc"]) == 0
    out = capsys.readouterr().out
    assert "patchcore · from scratch [baseline]" in out, out
    assert "patchcore · untrained network [baseline]" in out, out


def _only_scratch_fails(real, fail):
    def wrapped(name, *a, **kw):
        return fail() if name == "scratch" else real(name, *a, **kw)

    return wrapped


def test_a_finished_scratch_baseline_is_not_recomputed(tmp_path, monkeypatch):
    cfg = _mvtec_config(make_mvtec_tree(tmp_path / "mvtec", "tile"), tmp_path / "run")
    calls = []
    real = scratch_training.train

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(scratch_training, "train", counted)
    with monkeypatch.context() as m:

        def cut(*a, **kw):
            raise RuntimeError("cut after the baselines")

        m.setattr(patch_eval.visualize, "write_panels", cut)
        with pytest.raises(RuntimeError, match="cut after the baselines"):
            runner.run(cfg)
    assert calls == [1]
    first = json.loads(
        (Path(cfg.model_dir) / patch_cache.CACHE_DIR / f"{scratch.NAME}.json").read_text()
    )
    result = runner.run(cfg)
    assert result.status == "complete" and calls == [1]
    for key, value in first["metrics"].items():
        assert result.metrics[key] == value
