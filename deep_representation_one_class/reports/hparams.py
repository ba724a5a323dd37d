"""Hyperparameters and final metrics of a run for TensorBoard's HParams dashboard.

Every run logs its settings (as HParams) next to its ``eval/<feature>/<classifier>_auroc``
scalars, so ``tensorboard --logdir runs/`` lines up a sweep's runs in one table and in
parallel-coordinates views. Tuples become comma-joined strings and None becomes '' (HParams
take bool, int, float or str).

No experiment config (``hp.hparams_config``) is written, on purpose: without one the plugin
builds the columns from every run's session start (the union of their settings, those that
differ between runs first) and takes the metrics from the scalar tags of each run's ``tb/``
(the last value of ``eval/<feature>/<classifier>_auroc`` is the final AUROC). A config written
by each run would instead let one arbitrary run define the columns of the whole sweep.
``tests/unit/reports/test_hparams.py`` reads the event files through the plugin's backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tensorboard.plugins.hparams import api as hp

# Settings that do not describe the experiment (paths, mechanics) stay out of the table.
_SKIP = {"model_dir", "root", "cache_dir", "force_init", "verbose", "report"}


def hparam_values(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """A flat config dict as HParams values."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in sorted(config.items()):
        if key in _SKIP:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif value is None:
            value = ""
        elif not isinstance(value, (bool, int, float, str)):
            value = str(value)
        out[key] = value
    return out


def log_run(writer: Any, config: Any, metrics: Mapping[str, float]) -> None:
    """Writes the run's HParams (its trial id is the run folder) with ``writer``.

    The metrics themselves are the ``eval/...`` scalars the runner writes; the dashboard
    finds them by tag.
    """
    del metrics
    with writer.as_default():
        hp.hparams(hparam_values(config.to_dict()), trial_id=str(config.model_dir))
