"""The ``droc-aggregate`` command, ``python -m deep_representation_one_class.aggregate``:
Tables of a sweep's runs next to the paper's numbers.

The command line lives in ``reports/aggregate.py``; this module keeps the command's name.
"""

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

ensure_fast_allocator()  # first: may re-execute the command with tcmalloc

from deep_representation_one_class import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow is first imported

from deep_representation_one_class.reports.aggregate import main, run_cli  # noqa: E402

__all__ = ["main", "run_cli"]

if __name__ == "__main__":
    run_cli()
