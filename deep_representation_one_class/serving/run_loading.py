"""Loading a finished run for serving: its config, preprocessing spec and restored network.

Shared by ``Detector`` (image-level runs) and ``PatchDetector`` (patch-level runs).
"""

from __future__ import annotations

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import resolve
from deep_representation_one_class.datasets import preprocessing as prep_lib
from deep_representation_one_class.serving.image_input import DetectorError
from deep_representation_one_class.training import build, checkpoints
from deep_representation_one_class.utils import io, run_folder

__all__ = [
    "FEATURES",
    "check_eval_precision",
    "read_preprocessing",
    "read_run_config",
    "restore_model",
]

FEATURES = ("pool", "embed")


def read_run_config(run_dir: str) -> config_lib.Config:
    """The ``Config`` of a run folder (``config.json``)."""
    return _read_config(run_dir)[0]


def _read_config(run_dir: str) -> tuple[config_lib.Config, dict]:
    path = run_folder.path(run_dir, run_folder.CONFIG)
    raw = run_folder.read_config(run_dir)
    if raw is None:
        raise DetectorError(
            f"{run_dir} is not a run folder (no {run_folder.CONFIG}); pass the --model_dir of a "
            "training run"
        )
    try:
        return resolve.load(raw), raw
    except io.CorruptFileError:
        raise
    except (ValueError, TypeError) as e:
        raise DetectorError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def read_preprocessing(run_dir: str, cfg: config_lib.Config | None = None):
    """The run's ``PreprocessingSpec`` (``preprocessing.json``, or derived from ``config.json``
    for a folder that predates it; ``DetectorError`` saying how to upgrade when it cannot be)."""
    raw = None
    if cfg is None:
        cfg, raw = _read_config(run_dir)
    else:
        raw = run_folder.read_config(run_dir)
    try:
        return prep_lib.for_run(run_dir, cfg, raw)
    except prep_lib.PreprocessingError as e:
        raise DetectorError(str(e)) from None


def check_eval_precision(run_dir: str, cfg: config_lib.Config) -> str:
    """The precision the run is served in (``config.json``'s ``--eval_precision``), checked
    against the one its evaluated features were computed in (``summary.json``'s
    ``eval_precision``, where recorded): the classifiers were fit on those features, so serving
    in another precision would score differently from what the run evaluated.

    A folder written before ``--eval_precision`` existed evaluated and serves in its training
    precision (``config.Config.from_dict``).
    """
    serve = config_lib.eval_compute_precision(cfg)
    summary = run_folder.read_summary(run_dir)
    if summary is None:
        return serve
    recorded = summary.get("eval_precision")
    if recorded is not None and recorded != serve:
        raise DetectorError(
            f"{run_dir}: its classifiers were fit on {recorded} features but config.json "
            f"serves in {serve}; re-evaluate it: python -m deep_representation_one_class.evaluate "
            f"--model_dir={run_dir} --reextract --eval_precision=float32"
        )
    return serve


def restore_model(run_dir: str, cfg: config_lib.Config, task=None):
    """Builds the run's network (as its method builds it; ``task``: the run's task, else built
    from ``cfg``) in its evaluation precision and restores its latest checkpoint
    (``training.checkpoints.restore``: only the model, but every model variable must be found
    in the checkpoint). The checkpointed weights are float32 under every precision policy, so
    a mixed-precision run restores into a float32 network.

    Raises:
      DetectorError: no checkpoint, one that does not match the network, or a folder whose
        evaluated and served precisions differ.
    """
    if checkpoints.latest(run_dir) is None:  # before the network is built for nothing
        raise DetectorError(
            f"no checkpoint in {checkpoints.directory(run_dir)}; train the run first (or rerun "
            "its command to finish it)"
        )
    check_eval_precision(run_dir, cfg)
    model = build.make_model(build.eval_config(cfg), task=task)
    try:
        checkpoints.restore(run_dir, model)
    except checkpoints.CheckpointError as e:
        raise DetectorError(str(e)) from None
    return model
