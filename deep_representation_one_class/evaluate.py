"""The ``droc-evaluate`` command, ``python -m deep_representation_one_class.evaluate``:
Re-fit and re-score a run's classifiers, or re-extract its features.

The command line lives in ``training/rescore.py``; this module keeps the command's name.
"""

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

ensure_fast_allocator()  # first: may re-execute the command with tcmalloc

from deep_representation_one_class import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow is first imported

from deep_representation_one_class.training.rescore import main, run_cli  # noqa: E402

__all__ = ["main", "run_cli"]

if __name__ == "__main__":
    run_cli()
