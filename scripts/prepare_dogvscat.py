"""Prepares Kaggle Dogs vs. Cats for ``--dataset=dogvscatood``: ``train.zip`` -> one .npz file.

Decodes the 25,000 training JPEGs of ``train.zip`` (or of its extracted ``train/`` folder),
resizes the shorter side to 64 px with an area filter, centre-crops 64x64 and writes
``<data_dir>/dogs-vs-cats/train_64x64.npz`` (``image`` [N,64,64,3] uint8, ``label`` cat=0,
dog=1) atomically. Then train with ``--root=<data_dir>``. Example:

    python scripts/prepare_dogvscat.py --source ~/Downloads/train.zip --data_dir data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_representation_one_class.datasets import DataError, dogvscat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", required=True,
        help="the Kaggle train.zip, its extracted train/ folder, or a folder containing either",
    )  # fmt: skip
    parser.add_argument(
        "--data_dir", required=True,
        help="output root; the file goes to <data_dir>/dogs-vs-cats/train_64x64.npz",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.data_dir).expanduser() / "dogs-vs-cats" / dogvscat.NPZ_NAME
    try:
        path = dogvscat.prepare_npz(args.source, out)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
