"""Shared command-line plumbing: quiet TensorFlow start-up and one-line errors.

Bad input must end in one actionable line on stderr and a non-zero exit, not a traceback;
``--verbose`` brings the traceback back for debugging.
"""

from __future__ import annotations

import importlib.util
import logging as pylogging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable

from deep_representation_one_class.errors import UserError

EXIT_USAGE = 2
EXIT_FAILURE = 1


_CHATTY_TF_MODULES = ("functional_saver.py", "checkpoint_management.py")


def _drop_tf_chatter(record: pylogging.LogRecord) -> bool:
    # TensorFlow logs every checkpoint shard through absl at INFO; keep our own INFO lines.
    return not record.pathname.endswith(_CHATTY_TF_MODULES)


# Lines TensorFlow's C++ runtime prints to stderr while it loads, whatever TF_CPP_MIN_LOG_LEVEL
# says (absl logs them before its logging is initialised).
_START_UP_CHATTER = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized",
    "To enable the following instructions",
    "cpu_feature_guard.cc",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
)


def quiet_tensorflow() -> None:
    """Imports TensorFlow without its C++ start-up chatter; our own messages stay.

    Must run before anything else imports TensorFlow. The import runs with file descriptor 2
    pointed at a temporary file; afterwards every captured line except the known start-up
    notices is written back to stderr, so real warnings and errors of the import still show.
    """
    from absl import logging as absl_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pylogging.getLogger("tensorflow").setLevel(pylogging.ERROR)
    absl_logging.get_absl_logger().addFilter(_drop_tf_chatter)
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (loads TensorFlow and its runtime)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not any(c in line for c in _START_UP_CHATTER):
                    print(line, file=sys.stderr)


def require_tensorflow() -> None:
    """Exits with an install hint when no TensorFlow build is installed."""
    if importlib.util.find_spec("tensorflow") is None:
        print(
            'error: TensorFlow is not installed; run pip install -e ".[cpu]" (CPU) or '
            'pip install -e ".[gpu]" (CUDA)',
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILURE)


def prog_name(default: str) -> str:
    """The command's name for usage lines: ``droc VERB`` when the ``droc`` dispatcher runs it
    (it sets ``sys.argv[0]``), else ``default`` (the ``python -m`` or ``droc-VERB`` spelling)."""
    given = sys.argv[0] if sys.argv else ""
    return given if given.startswith("droc ") else default


def entry_point(main: Callable[[], int]) -> None:
    """Console-script wrapper shared by the argparse CLIs: quiet start-up, then exit code."""
    quiet_tensorflow()
    require_tensorflow()
    sys.exit(main())


def guard(fn: Callable[[], int | None], verbose: bool = False) -> int:
    """Runs ``fn``; turns exceptions into one line on stderr and an exit code."""
    try:
        return int(fn() or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:
        if verbose:
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, UserError):
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, (OSError, MemoryError)):
            print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
            return EXIT_FAILURE
        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        print(f"error: {type(e).__name__}: {msg}{hint}", file=sys.stderr)
        return EXIT_FAILURE


# Suffixes of per-kind metric keys (patch runs: ``pool.gde.pixel_auroc``, synthetic kinds
# ``synthetic.pool.gde.noise``); the plain key ``<row>.<classifier>`` is the table's cell.
_KIND_SUFFIXES = (
    "image_auroc",
    "pixel_auroc",
    "pro",
    "image_aupr",
    "image_f1_max",
    "pixel_aupr",
    "pixel_f1_max",
    "paste",
    "scar",
    "noise",
    "blur",
    "stain",
    "hole",
)


def _row_label(row: str) -> str:
    """Readable row names for the defect runs' extra rows (baselines, synthetic check)."""
    synthetic = row.startswith("synthetic.")
    base = row.removeprefix("synthetic.")
    if base == "baseline_pixels":
        base = "raw pixels [baseline]"
    elif base.startswith("baseline_random."):
        base = f"untrained {base.removeprefix('baseline_random.')} [baseline]"
    elif base.startswith("baseline_scratch."):
        base = f"from-scratch {base.removeprefix('baseline_scratch.')} [baseline]"
    return f"{base} [synthetic]" if synthetic else base


def _table(metrics: dict[str, float], title: str) -> list[str]:
    cells: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        row, _, clf = key.rpartition(".")
        if row:
            cells.setdefault(row, {})[clf] = value
    order = sorted(cells, key=lambda r: (r.startswith("synthetic."), "baseline" in r, r))
    clfs = sorted({c for row in cells.values() for c in row})
    width = max([8, *(len(_row_label(r)) + 1 for r in order)])
    header = title.ljust(width) + "".join(c.rjust(9) for c in clfs)
    rows = [header, "-" * len(header)]
    for r in order:
        line = "".join(f"{cells[r][c]:9.2f}" if c in cells[r] else " " * 9 for c in clfs)
        rows.append(_row_label(r).ljust(width) + line)
    return rows


def format_table(metrics: dict[str, float]) -> str:
    """Renders metrics as feature x classifier AUROC tables (``auc`` is 1-NN).

    Patch runs add a pixel-AUROC table; rows marked [baseline] are the raw-pixel, untrained
    network and (pretrained runs) from-scratch baselines and rows marked [synthetic] the AUROC
    on synthetic anomalies of held-out normal images (docs/defects.md, "Synthetic-anomaly
    validation").
    """
    plain = {
        k: v
        for k, v in metrics.items()
        # ``pool.gde.image_auroc.<defect type>``: the per-type AUROCs, in summary.json only.
        if k.rpartition(".")[2] not in _KIND_SUFFIXES and ".image_auroc." not in k
    }
    rows = _table(plain, "AUROC")
    pixel = {
        k.removesuffix(".pixel_auroc"): v for k, v in metrics.items() if k.endswith(".pixel_auroc")
    }
    if pixel:
        rows += ["", *_table(pixel, "pixel AUROC")]
    if any(k.rpartition(".")[2] == "auc" for k in metrics):
        rows.append("(auc = 1-NN cosine distance, the reference's name for it)")
    return "\n".join(rows)
