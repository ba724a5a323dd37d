"""The ``droc-score`` command, ``python -m deep_representation_one_class.score``:
Score image files with a trained run and write a CSV.

The command line lives in ``serving/score.py``; this module keeps the command's name.
"""

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

ensure_fast_allocator()  # first: may re-execute the command with tcmalloc

from deep_representation_one_class import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow is first imported

from deep_representation_one_class.serving.score import main, run_cli  # noqa: E402

__all__ = ["main", "run_cli"]

if __name__ == "__main__":
    run_cli()
