"""Prepares CelebA for ``--dataset=celeba``: aligned JPEGs + attribute lists -> numpy arrays.

Reads the original release (``img_align_celeba/`` or ``img_align_celeba.zip``,
``list_attr_celeba.txt``, ``list_eval_partition.txt``) or a TFDS data_dir with a prepared
``celeb_a/``, crops rows 40:-20 and columns 10:-10, resizes to 64x64 (bicubic) and writes
``<out_dir>/{train,test}/image_64x64.npy``, ``attr.npy`` and ``<out_dir>/attr_names.json``
(the attribute column order), each file atomically. Then train with ``--root`` pointing at the
folder that contains ``celeba_npy/``. Example:

    python scripts/prepare_celeba.py --source ~/celeba --out_dir data/celeba_npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_representation_one_class.datasets import DataError, celeba


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", required=True,
        help="folder with img_align_celeba/ (or .zip) and the two list_*.txt files, "
        "or a TFDS data_dir with celeb_a/",
    )  # fmt: skip
    parser.add_argument(
        "--out_dir", required=True, help="output folder, conventionally <data_dir>/celeba_npy"
    )
    args = parser.parse_args(argv)
    try:
        out = celeba.prepare_npy(args.source, args.out_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
