"""The ``droc-report`` command, ``python -m deep_representation_one_class.report``:
Write report.html (AUROC table, figures, thresholds, test images, config) for a finished run
or a sweep folder.

The command line lives in ``reports/report.py``; this module keeps the command's name.
"""

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

ensure_fast_allocator()  # first: may re-execute the command with tcmalloc

from deep_representation_one_class import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow is first imported

from deep_representation_one_class.reports.report import main, run_cli  # noqa: E402

__all__ = ["main", "run_cli"]

if __name__ == "__main__":
    run_cli()
