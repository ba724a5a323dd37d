"""TensorBoard HParams: every run logs its settings and final AUROCs so that
``tensorboard --logdir runs/`` lines a sweep up side by side. Checked by reading the written
event files through the HParams plugin's own backend (what the dashboard asks for)."""

from __future__ import annotations

import json
import shutil

import pytest
import tensorflow as tf
from conftest import tiny_config
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
)

from deep_representation_one_class.reports import hparams

_STATUSES = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_RUNNING]


def dashboard(logdir: str) -> tuple[api_pb2.Experiment, list[api_pb2.SessionGroup]]:
    """(experiment, session groups) as the HParams dashboard receives them for ``logdir``."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = backend_context.Context(
        base_plugin.TBContext(logdir=logdir, multiplexer=mux, data_provider=provider)
    )
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, ctx, "", api_pb2.GetExperimentRequest()).run()
    listing = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, allowed_statuses=_STATUSES
    )
    groups = list_session_groups.Handler(request, ctx, "", listing).run().session_groups
    return experiment, list(groups)


def test_hparam_values_are_plain_types():
    cfg = tiny_config(model_dir="runs/x", root="/data")
    values = hparams.hparam_values(cfg.to_dict())
    assert "model_dir" not in values and "root" not in values and "report" not in values
    assert values["head_dims"] == "16,8" and values["seed"] == 0 and values["dataset"] == "fake"
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())


def test_a_sweep_lines_up_in_the_hparams_dashboard(fake_run, tmp_path):
    logdir = tmp_path / "runs"
    # One real run (its tb/ as the runner wrote it) and a second run of another seed.
    shutil.copytree(fake_run, logdir / "c0" / "s0")
    summary = json.loads((logdir / "c0" / "s0" / "summary.json").read_text())
    other = tiny_config(seed=7, model_dir=str(logdir / "c0" / "s7"))
    writer = tf.summary.create_file_writer(str(logdir / "c0" / "s7" / "tb"))
    with writer.as_default(step=3):
        tf.summary.scalar("eval/pool/kde_auroc", 12.5)
    hparams.log_run(writer, other, {"pool.kde": 12.5})
    writer.close()

    experiment, groups = dashboard(str(logdir))
    infos = {h.name: h for h in experiment.hparam_infos}
    assert infos["seed"].differs and not infos["method"].differs
    assert {"method", "dataset", "category", "learning_rate", "batch_size"} <= set(infos)
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {f"eval/{k.replace('.', '/')}_auroc" for k in summary["metrics"]} <= metrics
    assert len(groups) == 2
    by_seed = {g.hparams["seed"].number_value: g for g in groups}
    values = {m.name.tag: m.value for m in by_seed[0].metric_values}
    for key, auroc in summary["metrics"].items():
        assert values[f"eval/{key.replace('.', '/')}_auroc"] == pytest.approx(auroc, abs=1e-4)
    assert {m.name.tag: m.value for m in by_seed[7].metric_values}[
        "eval/pool/kde_auroc"
    ] == pytest.approx(12.5)
