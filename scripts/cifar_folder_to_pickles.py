"""Turns a CIFAR-10 image-folder copy into ``cifar-10-batches-py`` pickles.

The folder holds ``{train,test}/<class name>/*.<ext>`` with the ten CIFAR-10 class names (for
example a JPEG re-encoding of CIFAR-10). Its images are read through the library's folder route
(``--dataset=folder``, files in sorted order) and written in the original pickle format, so that
``--dataset=cifar10ood --root=<out>`` runs the paper's one-class protocol on them and
``aggregate`` files the results under CIFAR-10 next to the paper. Say which copy a number used:
results on a lossy copy are not 1:1 comparable with published CIFAR-10 numbers.

Usage: python scripts/cifar_folder_to_pickles.py --root ../shared/data/cifar10-jpeg
           --out data/cifar10-jpeg-pickles [--cache data/cache]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deep_representation_one_class import datasets
from deep_representation_one_class.datasets import cifar
from deep_representation_one_class.errors import UserError


def convert(root: str, out: str, cache: str | None) -> str:
    """Writes ``<out>/cifar-10-batches-py`` and returns that folder."""
    train_x, train_y, test = [], [], None
    for label, name in enumerate(cifar.CIFAR10_CLASSES):
        one = datasets.load_one_class(
            "folder", root=root, category=name, input_shape=(32, 32, 3), cache_dir=cache
        )
        if tuple(one.class_names) != cifar.CIFAR10_CLASSES:
            raise UserError(
                f"{root}/test holds the classes {list(one.class_names)}; "
                f"expected the ten CIFAR-10 class folders {list(cifar.CIFAR10_CLASSES)}"
            )
        train_x.append(one.train_x)
        train_y.append(np.full(len(one.train_x), label))
        test = (one.test_x, one.test_class)
    batches = os.path.join(out, "cifar-10-batches-py")
    cifar.write_pickles(batches, (np.concatenate(train_x), np.concatenate(train_y)), test)
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the image folder ({train,test}/<class>/)")
    parser.add_argument("--out", required=True, help="where cifar-10-batches-py/ is written")
    parser.add_argument("--cache", default=None, help="the folder route's decode cache")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        print(f"error: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    try:
        batches = convert(args.root, args.out, args.cache)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {batches}; use --dataset=cifar10ood --root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
