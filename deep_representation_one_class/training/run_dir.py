"""The run folder: what may be read, written and deleted there, its lock, and its checkpoints.

Guarantees (docs/failure_and_resume.md):

* Checks come before side effects. ``inspect`` only reads; the runner then validates the data;
  only after that does ``RunFolder.start`` take the lock and write anything.
* A folder is a run folder only if it carries the marker ``.droc_run``. Another non-empty
  folder is refused. ``--force_init`` deletes only the files and folders a run writes
  (``RUN_FILES``); anything else a user put there stays.
* One run at a time: ``.droc_lock`` holds the owner's pid, host and start time. A second
  command on the same folder is refused at once, naming the holder; a lock left behind by a
  killed process (same host, pid gone or reused) is taken over.
* A finished run is never retrained; changed settings are refused once the folder holds a
  checkpoint or results (a start that failed before its first checkpoint can be corrected by
  rerunning with other settings, and leaves no partial checkpoint behind).
* What the data resolved to is recorded at the start (``data.json``: the category as given
  and as resolved, e.g. '0' -> 'good', the class list, a digest of the test images):
  config.json stores the resolved category, and a command that loads the data again
  (resume, ``evaluate --reextract``) refuses data that no longer match.
* A run folder never lies inside the data root (its report thumbnails would become data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from typing import Any

import tensorflow as tf

from deep_representation_one_class.config import RUNTIME_KEY, Config
from deep_representation_one_class.errors import RunError
from deep_representation_one_class.resolve import option_owners
from deep_representation_one_class.training import checkpoints
from deep_representation_one_class.training.checkpoints import Checkpoints
from deep_representation_one_class.training.data_record import read_data_record
from deep_representation_one_class.training.lock import LOCK, Lock
from deep_representation_one_class.utils import hardware, io, run_folder

__all__ = ["Checkpoints", "FolderState", "Lock", "RunFolder", "inspect", "is_run_output"]

logger = logging.getLogger(__name__)

CONFIG = run_folder.CONFIG
SUMMARY = run_folder.SUMMARY
CHECKPOINTS = run_folder.CHECKPOINTS
RUN_FILES = run_folder.RUN_FILES  # --force_init deletes these and nothing else
# Flags that may change between a run and its resumption without invalidating checkpoints.
RESUMABLE_CHANGES = {
    "model_dir",
    "force_init",
    "eval_batch_size",
    "classifiers",
    "cls_holdout",
    "steps_per_call",
    "jit_compile",
    "eval_every",
    "eval_precision",
    "ckpt_epoch",
    "ckpt_steps",
    "strategy",
    "deterministic",
    "cache_dir",
    "skip_corrupt",
    "root",
    "sync_bn",
    "report",
}


def is_run_output(run_dir: str, path: str) -> bool:
    """Whether ``path`` is the run folder itself or lies among the files a run writes there
    (tools must never write over them)."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(run_dir))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return False
    return rel == os.curdir or rel.split(os.sep)[0] in RUN_FILES


@dataclasses.dataclass(frozen=True)
class FolderState:
    """What ``inspect`` found (nothing is written to find it)."""

    exists: bool
    is_run: bool
    complete: bool
    summary: dict[str, Any] | None
    has_checkpoint: bool


def _checked_summary(path: str) -> dict[str, Any] | None:
    """A complete run's summary, or None when absent, unfinished or damaged (re-evaluated)."""
    if not os.path.isfile(path):
        return None
    try:
        summary = io.read_json(path, expect=dict)
    except io.CorruptFileError as e:
        logger.warning("%s; the run will be evaluated again", e)
        return None
    run = summary.get("run")
    if not (
        isinstance(run, dict) and run.get("complete") and isinstance(summary.get("metrics"), dict)
    ):
        if run and run.get("complete"):
            logger.warning("%s lacks its metrics; the run will be evaluated again", path)
        return None
    return summary


def _old_config(run_dir: str) -> dict[str, Any] | None:
    config = run_folder.read_config(run_dir)
    if config is not None:
        return config
    summary = run_folder.read_summary(run_dir)
    if summary is not None:
        # config.json lost (deleted by hand): the summary's copy still protects the results.
        with_cfg = summary.get("config")
        return with_cfg if isinstance(with_cfg, dict) else None
    return None


def _check_writable(run_dir: str) -> None:
    """RunError unless ``run_dir`` is (or can be created as) a writable folder."""
    why = None
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        why = "it is a file, not a folder"
    else:
        probe = os.path.abspath(run_dir)
        while not os.path.isdir(probe):
            parent = os.path.dirname(probe)
            if os.path.lexists(probe) and not os.path.isdir(probe):
                why = f"{probe} is a file, not a folder"
                break
            if parent == probe:
                break
            probe = parent
        if why is None and not os.access(probe, os.W_OK | os.X_OK):
            why = f"{probe} is not writable"
    if why:
        raise RunError(f"cannot write to --model_dir {run_dir}: {why}")


def _inside(path: str, folder: str) -> bool:
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(folder))
    return rel == os.curdir or not (rel == os.pardir or rel.startswith(os.pardir + os.sep))


def _check_outside_data(cfg: Config) -> None:
    root = getattr(cfg, "root", None)
    if (
        root
        and os.path.isdir(os.path.expanduser(root))
        and _inside(cfg.model_dir, os.path.expanduser(root))
    ):
        raise RunError(
            f"--model_dir {cfg.model_dir} lies inside the data root {root}: the run's files "
            "(report thumbnails of test images) would be read as data by the next run; "
            "pick a --model_dir outside it"
        )


def inspect(cfg: Config) -> FolderState:
    """Read-only checks of ``cfg.model_dir``; raises RunError where the run must not start.

    Raises:
      RunError: a non-empty folder without the run marker; another run's settings in a folder
        that holds its checkpoints or results; a folder locked by a live process.
    """
    run_dir = cfg.model_dir
    _check_writable(run_dir)
    _check_outside_data(cfg)
    exists = os.path.isdir(run_dir)
    if exists:
        Lock(run_dir).check()
    # The lock and another process's lock being created (``.droc_lock.*.tmp``) are not content.
    entries = [e for e in os.listdir(run_dir) if not e.startswith(LOCK)] if exists else []
    is_run = run_folder.MARKER in entries
    if entries and not is_run:
        what = "--force_init refuses to delete anything in" if cfg.force_init else "--model_dir"
        raise RunError(
            f"{what} {run_dir}: it is not empty and not a run folder (no {run_folder.MARKER} "
            "marker); pick an empty or new folder"
        )
    if not is_run:
        return FolderState(exists, False, False, None, False)
    has_ckpt = checkpoints.latest(run_dir) is not None
    summary = _checked_summary(run_folder.path(run_dir, SUMMARY))
    if cfg.force_init:
        return FolderState(True, True, False, None, has_ckpt)
    index = run_folder.path(run_dir, CHECKPOINTS, run_folder.CHECKPOINT_INDEX)
    if not has_ckpt and summary is None and os.path.isfile(index):
        # TensorFlow writes this index atomically, after the checkpoint it names; one it cannot
        # parse was damaged, and training would silently start over from step 0.
        if tf.train.get_checkpoint_state(os.path.dirname(index)) is None:
            raise RunError(
                f"{index} is not a readable checkpoint index (damaged or edited); restore it "
                "or use --force_init to start over"
            )
        logger.warning("%s names checkpoint files that are gone; training starts over.", index)
    old = _old_config(run_dir)
    if old is not None and (has_ckpt or summary is not None):
        # Settings absent from an older config.json take today's defaults; settings the new
        # config does not have (another method's or task's options, written by versions that
        # stored every option) are not compared.
        new = cfg.to_dict()
        defaults = {**Config().to_dict(), **{k: o.default for k, (o, _) in option_owners().items()}}
        old = {k: old.get(k, defaults.get(k)) for k in new}
        old = {k: list(v) if isinstance(v, tuple) else v for k, v in old.items()}
        rec = read_data_record(run_dir)
        if rec is not None and new.get("category") == rec.get("category_given"):
            # config.json stores the resolved name ('good') of what was given ('0'); whether
            # '0' still resolves to it is checked once the data are loaded.
            new = {**new, "category": old.get("category")}
        diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"--{k}={old.get(k)!r}->{new.get(k)!r}" for k in diff[:4])
            raise RunError(
                f"{run_dir} holds a run with different settings ({shown}); use "
                f"another --model_dir or --force_init to start over"
            )
    return FolderState(True, True, summary is not None, summary, has_ckpt)


class RunFolder:
    """The side effects on a run folder, in order: ``start`` (lock, clean, marker, config),
    then results, then ``close`` (unlock). Created only after every check passed."""

    def __init__(self, cfg: Config, state: FolderState):
        self.cfg = cfg
        self.path = cfg.model_dir
        self.state = state
        self.lock = Lock(self.path)
        self._created = False

    def start(self, record: dict[str, Any] | None = None) -> None:
        """Creates the folder, takes the lock, applies --force_init, writes marker, config and
        the data record (``data_record``)."""
        if not os.path.isdir(self.path):
            try:
                os.makedirs(self.path)
            except OSError as e:
                raise RunError(f"cannot write to --model_dir {self.path}: {e.strerror}") from None
            self._created = True
        try:
            self.lock.acquire()
        except OSError as e:
            self._remove_if_created()
            raise RunError(f"cannot write to --model_dir {self.path}: {e.strerror}") from None
        except RunError:
            self._remove_if_created()
            raise
        if self.cfg.force_init and self.state.is_run:
            for name in RUN_FILES:
                target = os.path.join(self.path, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.remove(target)
            logger.info("--force_init: deleted the previous run's files in %s.", self.path)
        io.write_text(
            run_folder.path(self.path, run_folder.MARKER),
            "deep_representation_one_class run folder\n",
        )
        run_folder.write_json(
            self.path, CONFIG, {**self.cfg.to_dict(), RUNTIME_KEY: hardware.runtime_record()}
        )
        if record is not None:
            run_folder.write_json(self.path, run_folder.DATA, record)

    def has_progress(self) -> bool:
        """Whether the folder holds something of value: a checkpoint or a summary."""
        return checkpoints.latest(self.path) is not None or run_folder.has_summary(self.path)

    def abort(self) -> None:
        """Undoes ``start`` after a failure before the first checkpoint: the marker, the
        config, the data record, the preprocessing spec, the TensorBoard events and any partial
        checkpoint of the failed start go (a save that failed on a full disk leaves
        ``ckpt-N_temp/``), so the same command starts clean once the cause is fixed; a folder
        this start created goes too if nothing else is in it."""
        for name in run_folder.START_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.remove(run_folder.path(self.path, name))
        shutil.rmtree(run_folder.path(self.path, run_folder.TENSORBOARD), ignore_errors=True)
        # No checkpoint is recorded (has_progress is False), so nothing in the folder is one.
        shutil.rmtree(run_folder.path(self.path, CHECKPOINTS), ignore_errors=True)
        self.lock.release()
        self._remove_if_created()

    def close(self) -> None:
        self.lock.release()

    def _remove_if_created(self) -> None:
        if not self._created:
            return
        with contextlib.suppress(OSError):
            os.rmdir(self.path)  # only when empty: a folder the user also wrote into stays

    def write_summary(self, summary: dict[str, Any]) -> None:
        run_folder.write_summary(self.path, summary)
