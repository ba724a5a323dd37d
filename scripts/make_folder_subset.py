"""Makes a smaller image folder from a {train,test}/<class>/ folder, by symbolic links.

The first N files (sorted names) of every training class folder are linked into
<out>/train/<class>/; every test file is linked, or the first M per class with
--test_per_class (symlinked folders are not followed by the folder route, linked files are).
Used to show what the default training budget gives a small folder dataset next to a large one
(scripts/select_recipes.sh --plan=budget_small) and to time a folder run of a few hundred photos
(docs/pretrained.md). Nothing is copied, and an existing <out> is refused.

Usage: python scripts/make_folder_subset.py --root ../shared/data/cifar10-jpeg
           --out data/cifar10-jpeg-500 --per_class 500
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per_class", type=int, default=500)
    p.add_argument("--test_per_class", type=int, default=0, help="0 = every test image")
    args = p.parse_args()
    train = os.path.join(args.root, "train")
    if not os.path.isdir(train) or not os.path.isdir(os.path.join(args.root, "test")):
        print(f"error: --root {args.root} needs train/ and test/ folders", file=sys.stderr)
        return 2
    if args.per_class < 1 or args.test_per_class < 0:
        print("error: --per_class must be >= 1 and --test_per_class >= 0", file=sys.stderr)
        return 2
    if os.path.exists(args.out):
        print(f"error: --out {args.out} exists; remove it or choose another", file=sys.stderr)
        return 2
    root = os.path.abspath(args.root)
    for split, limit in (("train", args.per_class), ("test", args.test_per_class or None)):
        for name in sorted(os.listdir(os.path.join(root, split))):
            src = os.path.join(root, split, name)
            if not os.path.isdir(src):
                continue
            dst = os.path.join(args.out, split, name)
            os.makedirs(dst)
            for file in sorted(os.listdir(src))[:limit]:
                os.symlink(os.path.join(src, file), os.path.join(dst, file))
    test = f"up to {args.test_per_class}" if args.test_per_class else "every"
    print(f"wrote {args.out}: up to {args.per_class} training and {test} test images per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
