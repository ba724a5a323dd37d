"""The real training loop, end to end, on the tiny synthetic dataset: the paper's two methods
(contrastive, with and without distribution augmentation, and rotation prediction), the CLI,
resume, evaluation-only mode and the run-folder contract.

The other registered methods run end to end in their own files: the Table 7 baselines
(``rotnet``, ``denoising``, ``imagenet``) in unit/methods/test_baselines.py, ``cutpaste`` and
``patchcore`` in unit/methods/test_defect_methods.py, and the patch task in
unit/tasks/test_patches.py; the last test below keeps that list
complete."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import conftest
import numpy as np
import pytest

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import resolve
from deep_representation_one_class.errors import RunError
from deep_representation_one_class.training import runner

REPO = str(pathlib.Path(__file__).resolve().parents[3])


def tiny_config(tmp_path, method="contrastive", **kw) -> config_lib.Config:
    base = dict(
        num_epoch=1, strategy="default", model_dir=str(tmp_path / "run"), eval_batch_size=64
    )
    return conftest.tiny_config(method, **{**base, **kw})


def _check_run_folder(run_dir, method):
    for name in ("config.json", "summary.json", "embeddings.npz", ".droc_run"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert os.listdir(os.path.join(run_dir, "checkpoints"))
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(run_dir, "tb")))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    metrics = summary["metrics"]
    expected = {
        f"{f}.{c}" for f in ("pool", "embed") for c in ("auc", "kde", "gde", "kocsvm", "locsvm")
    }
    if method == "rotation":
        expected |= {"logit.auc", "dscore.auc"}
    assert set(metrics) == expected
    for value in metrics.values():
        assert 0.0 <= value <= 100.0 and not np.isnan(value)
    # The fake classes (horizontal vs vertical stripes) are separable: a working pipeline
    # separates them with the pool features (AUROC 96-100 in every method's smoke run).
    assert metrics["pool.auc"] > 90 and metrics["pool.gde"] > 90, metrics
    assert summary["run"]["complete"] is True
    assert summary["config"]["method"] == method
    emb = np.load(os.path.join(run_dir, "embeddings.npz"))
    assert emb["test_pool"].shape[0] == emb["test_y"].shape[0] == 32
    return summary


@pytest.mark.parametrize(
    "method,kw",
    [
        ("contrastive", {}),
        ("rotation", {}),
        ("contrastive", {"distaug_type": "rot", "symmetric_loss": True}),
    ],
)
def test_each_method_trains_and_evaluates(tmp_path, method, kw):
    cfg = tiny_config(tmp_path, method, **kw)
    result = runner.run(cfg)
    assert result.status == "complete"
    factor = 4 if kw.get("distaug_type") == "rot" else 1
    summary = _check_run_folder(cfg.model_dir, method)
    assert summary["run"]["train_examples"] == 64 * factor
    assert result.global_step == (64 * factor) // 8


def test_rerun_is_complete_and_resume_continues(tmp_path):
    cfg = tiny_config(tmp_path, num_epoch=2, ckpt_epoch=1)
    first = runner.run(cfg)
    again = runner.run(cfg)
    assert again.status == "already_complete" and again.metrics == first.metrics
    # Simulate a crash after epoch 1: drop the summary and the last checkpoint.
    run_dir = cfg.model_dir
    os.remove(os.path.join(run_dir, "summary.json"))
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    for f in os.listdir(ckpt_dir):
        if f.startswith("ckpt-16"):
            os.remove(os.path.join(ckpt_dir, f))
    with open(os.path.join(ckpt_dir, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-8"\nall_model_checkpoint_paths: "ckpt-8"\n')
    resumed = runner.run(cfg)
    assert resumed.status == "complete" and resumed.global_step == 16


def test_changed_settings_are_refused(tmp_path):
    cfg = tiny_config(tmp_path)
    runner.run(cfg)
    with pytest.raises(RunError, match="different settings"):
        runner.run(cfg.replace(learning_rate=0.5))
    # --force_init on a marked run folder starts over.
    assert runner.run(cfg.replace(learning_rate=0.5, force_init=True)).status == "complete"


def test_eval_only_random_init(tmp_path):
    cfg = tiny_config(tmp_path, num_epoch=0)
    result = runner.run(cfg)
    assert result.global_step == 0
    assert set(result.metrics) >= {"pool.kde", "embed.kocsvm"}


def test_cli_bad_flag_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train_and_eval_loop.py", "--method=nope", f"--model_dir={tmp_path}/x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err and "valid: contrastive" in err[0]
    assert "Traceback" not in proc.stderr


def test_standalone_evaluate_rescores_saved_embeddings(tmp_path):
    from deep_representation_one_class.training import rescore as evaluate

    cfg = tiny_config(tmp_path, method="rotation")
    first = runner.run(cfg)
    rescored = evaluate.evaluate_run(cfg.model_dir, classifiers=["kde", "gde"])
    assert set(rescored) == {
        "pool.kde",
        "pool.gde",
        "embed.kde",
        "embed.gde",
        "logit.auc",
        "dscore.auc",
    }
    for key, value in rescored.items():
        assert value == pytest.approx(first.metrics[key], abs=1e-9)
    again = evaluate.evaluate_run(cfg.model_dir, reextract=True)
    for key, value in again.items():
        assert value == pytest.approx(first.metrics[key], abs=1e-6)


def test_reextract_in_another_precision(tmp_path):
    # A mixed_bfloat16 run evaluated in bfloat16 (--eval_precision=train), re-extracted in
    # float32: same checkpoint, float32 features, the precision recorded in summary.json and
    # config.json (what serving reads); AUROCs stay close (the weights are the same).
    from deep_representation_one_class import config as config_lib
    from deep_representation_one_class.training import rescore as evaluate
    from deep_representation_one_class.utils import io

    cfg = tiny_config(
        tmp_path, method="contrastive", precision="mixed_bfloat16", eval_precision="train"
    )
    first = runner.run(cfg)
    assert io.read_json(f"{cfg.model_dir}/summary.json")["eval_precision"] == "mixed_bfloat16"
    with pytest.raises(config_lib.ConfigError, match="add --reextract"):
        evaluate.evaluate_run(cfg.model_dir, precision="float32")
    with pytest.raises(config_lib.ConfigError, match="neither float32 nor"):
        evaluate.evaluate_run(cfg.model_dir, reextract=True, precision="mixed_float16")
    with pytest.raises(config_lib.ConfigError, match="disagree"):
        evaluate.evaluate_run(
            cfg.model_dir, reextract=True, precision="float32", eval_precision="train"
        )
    again = evaluate.evaluate_run(cfg.model_dir, reextract=True, precision="float32")
    assert set(again) == set(first.metrics)
    for key, value in again.items():
        assert value == pytest.approx(first.metrics[key], abs=5.0), key
    summary = io.read_json(f"{cfg.model_dir}/summary.json")
    assert summary["eval_precision"] == "float32"
    assert summary["metrics"] == again
    # The training precision is kept; the evaluation precision is the run's setting now.
    written = io.read_json(f"{cfg.model_dir}/config.json")
    assert (written["precision"], written["eval_precision"]) == ("mixed_bfloat16", "float32")
    assert summary["config"]["precision"] == "mixed_bfloat16"


def test_regularize_bn_false_drops_exactly_the_batchnorm_variables(tmp_path):
    import keras

    from deep_representation_one_class.training import build, distribute, loop

    cfg = tiny_config(tmp_path, regularize_bn=False)
    trainer = loop.Trainer(cfg, distribute.make_strategy("default"), 2, build.StepPlan(1, 1, 1))
    model = trainer.model
    bn = [
        v
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.trainable_variables
    ]
    assert bn and all(v.path.rsplit("/", 1)[-1] in ("gamma", "beta") for v in bn)
    bn_ids = {id(v) for v in bn}
    decayed = {id(v) for v in trainer.decay_vars}
    others = {id(v) for v in model.trainable_variables} - bn_ids
    assert decayed == others  # every conv/dense weight, and no BatchNorm gamma/beta
    every = loop.Trainer(
        cfg.replace(regularize_bn=True), distribute.make_strategy("default"), 2,
        build.StepPlan(1, 1, 1),
    )  # fmt: skip
    assert len(every.decay_vars) == len(every.model.trainable_variables)


def test_a_run_written_with_every_option_resumes_without_a_settings_clash(tmp_path):
    # Versions before 0.2 wrote every option (patch_size, imagenet_weights, ...) into every
    # config.json; an identical rerun must not see them as changed settings.
    import json

    cfg = tiny_config(tmp_path)
    runner.run(cfg)
    path = os.path.join(cfg.model_dir, "config.json")
    with open(path) as f:
        old = json.load(f)
    old.update(patch_size=32, patch_stride=8, imagenet_weights=None)
    del old["cls_holdout"]  # and it lacked settings added since
    with open(path, "w") as f:
        json.dump(old, f)
    assert runner.run(cfg).status == "already_complete"
    with pytest.raises(RunError, match="different settings"):
        runner.run(cfg.replace(learning_rate=0.5))


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    # The loss explodes at once: no checkpoint is written, and the folder the run created goes
    # (marker, config.json and tb/ included), so a corrected command starts clean.
    from deep_representation_one_class.errors import NonFiniteLossError

    cfg = tiny_config(tmp_path, learning_rate=1e30, weight_decay=0.0)
    with pytest.raises(NonFiniteLossError):
        runner.run(cfg)
    assert not os.path.exists(cfg.model_dir)
    # --force_init over a finished run that also holds a user's file: the old run's files are
    # deleted, the failed start leaves none of its own, the user's file stays.
    good = cfg.replace(learning_rate=0.1)
    runner.run(good)
    with open(os.path.join(cfg.model_dir, "NOTES.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(NonFiniteLossError):
        runner.run(cfg.replace(force_init=True))
    assert os.listdir(cfg.model_dir) == ["NOTES.txt"]


def test_precision_auto_follows_the_hardware(tmp_path, monkeypatch):
    from deep_representation_one_class.utils import hardware

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    assert hardware._cpu_has_bf16(str(flags))
    flags.write_text("processor : 0\nflags : fpu sse avx2 avx512f\n")
    assert not hardware._cpu_has_bf16(str(flags))
    for native, want in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(hardware, "fast_bfloat16", lambda native=native: native)
        # The contrastive quick default is "auto"; config.json records the resolved precision.
        assert resolve.build(dataset="fake").precision == want
        assert resolve.build(dataset="fake", precision="float32").precision == "float32"
        assert resolve.build(dataset="fake", method="rotation").precision == "float32"


# Where each registered method is trained and evaluated through ``runner.run`` (or the CLI).
_END_TO_END = {
    "contrastive": "unit/training/test_runner.py",
    "rotation": "unit/training/test_runner.py",
    "rotnet": "unit/methods/test_baselines.py",
    "denoising": "unit/methods/test_baselines.py",
    "imagenet": "unit/methods/test_baselines.py",
    "cutpaste": "unit/methods/test_defect_methods.py",
    "patchcore": "unit/methods/test_defect_methods.py",
    "mean_shifted": "unit/methods/test_mean_shifted.py",
}


def test_every_registered_method_runs_end_to_end_somewhere():
    from deep_representation_one_class import methods

    assert set(methods.METHODS.names()) == set(_END_TO_END), (
        "a registered method needs a tiny end-to-end run (runner.run) in a test; add it and "
        "name its file here"
    )
    here = str(pathlib.Path(__file__).resolve().parents[2])  # tests/
    for method, name in _END_TO_END.items():
        with open(os.path.join(here, name)) as f:
            text = f.read()
        assert "runner.run(" in text or "main.main(" in text, name
        assert f'"{method}"' in text, f"{name} never names --method={method}"
