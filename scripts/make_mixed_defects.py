"""Writes a generated MVTec-layout category of mixed-size grayscale surface images with defects.

Images of 110x620, 300x200 and 256x256 pixels (one physical scale: a fine striped texture with
a 12-px period and pixel noise) in ``<out>/<category>/train/good`` (normal), ``test/good`` and
three defect folders with masks in ``ground_truth/<defect>/<stem>_mask.png``:

* ``crack``: a thin (2-3 px) dark line of 40-90 px at a random angle,
* ``blowhole``: a dark disc of radius 6-12 px,
* ``uneven``: a brighter soft patch (+0.12) of radius 20-35 px.

``--contrast`` (default 1) scales how far a defect's pixels move towards its value (1: the
values above; 0.25: a crack only 0.09 darker than the surface, within 2 stripe amplitudes).

Usage: python scripts/make_mixed_defects.py --out data/mixed_defects [--category tiles]
[--train 120] [--test 30] [--seed 0] [--contrast 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((110, 620), (300, 200), (256, 256))


def surface(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.05 * np.sin(2 * np.pi * (yy + 0.5 * xx) / 12.0 + rng.uniform(0, 2 * np.pi))
    return 0.55 + stripes + rng.normal(0.0, 0.02, size=(h, w))


def defect(rng, img, kind, contrast=1.0):
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "crack":
        length, theta = rng.uniform(40, 90), rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        along = (yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        across = (yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta)
        mask = (np.abs(along) <= length / 2) & (np.abs(across) <= rng.uniform(1.0, 1.5))
        img = np.where(mask, img + contrast * (0.2 - img), img)
    elif kind == "blowhole":
        r = rng.uniform(6, 12)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = np.where(mask, img + contrast * (0.15 - img), img)
    else:
        r = min(rng.uniform(20, 35), h / 2 - 1, w / 2 - 1)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (r * r)
        mask = d2 <= 1.0
        img = img + contrast * 0.12 * np.clip(1.5 - d2, 0, 1) * mask
    return img, mask


def save(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--category", default="tiles")
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    base = Path(args.out) / args.category
    for i in range(args.train):
        save(base / "train" / "good" / f"{i:03d}.png", surface(rng, *SIZES[i % 3]))
    for i in range(args.test):
        save(base / "test" / "good" / f"{i:03d}.png", surface(rng, *SIZES[i % 3]))
    for kind in ("crack", "blowhole", "uneven"):
        for i in range(args.test // 3):
            img, mask = defect(rng, surface(rng, *SIZES[i % 3]), kind, args.contrast)
            save(base / "test" / kind / f"{i:03d}.png", img)
            save(base / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.float64))
    print(f"wrote {base}")


if __name__ == "__main__":
    main()
