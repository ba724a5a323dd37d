"""Shim: ``python scripts/aggregate.py RUNS_DIR --out results/name`` (see the aggregate module)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout
from deep_representation_one_class.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
