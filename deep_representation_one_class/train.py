"""The ``droc train`` command, ``python -m deep_representation_one_class.train``:
Train a representation on inliers, then fit and evaluate one-class classifiers.

The command line lives in ``main.py`` (also run by ``python train_and_eval_loop.py``); this
module keeps the command's name.
"""

from deep_representation_one_class.main import main, run_cli

__all__ = ["main", "run_cli"]

if __name__ == "__main__":
    run_cli()
