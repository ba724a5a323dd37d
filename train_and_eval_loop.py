"""Train a representation on inliers, then fit and evaluate one-class classifiers.

    python train_and_eval_loop.py --method=contrastive        # quick CPU run on Fashion-MNIST
    python train_and_eval_loop.py --help                      # every flag of a run

The same command as ``droc train`` (a thin alias of ``deep_representation_one_class.main``).
"""

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

ensure_fast_allocator()  # before TensorFlow loads: re-executes once with tcmalloc if installed

from deep_representation_one_class.main import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli()
