#!/usr/bin/env python
"""Check that serving a finished run reproduces its evaluation: score its own test files.

    python scripts/check_serving.py --model_dir=RUN [--out=results/serving_check.json]

Reads the run's test image files again from its data root (``folder``: ``root/test/<class>``;
MVTec layout: ``root/<category>/test/<class>``), scores them through ``Detector`` exactly as
``score`` does (the run's preprocessing spec), and compares with ``summary.json``: the image
AUROC of every served feature and classifier and, for patch-level runs with masks, the pixel
AUROC and PRO of the maps at each image's own resolution against the original mask files. The
JSON lists served and evaluated values and the largest difference; the exit status is 1 when a
difference exceeds ``--tolerance`` (AUROC points x100, default 1.0 = 0.01).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _test_files(cfg) -> tuple[list[str], np.ndarray]:
    root = Path(cfg.root).expanduser()
    if cfg.dataset == "mvtec":
        from deep_representation_one_class.datasets import mvtec

        test, normal = mvtec._resolve_category(root, cfg.category) / "test", mvtec.GOOD
    elif cfg.dataset == "folder":
        test, normal = root / "test", cfg.category
    else:
        raise SystemExit(f"error: {cfg.dataset} runs are not read from image files here")
    from deep_representation_one_class.datasets.folder import scan_images

    files = scan_images(test)[0]
    paths = [str(p) for p in files]
    labels = np.array([p.relative_to(test).parts[0] != normal for p in files], np.int64)
    return paths, labels


def _own_masks(paths: list[str]) -> list[np.ndarray]:
    from deep_representation_one_class.datasets import mvtec

    out = []
    for p in paths:
        mp = mvtec.mask_path(p)
        if mp is not None and mp.is_file():
            with Image.open(mp) as m:
                out.append((np.asarray(m.convert("L")) > 127).astype(np.uint8))
        else:
            with Image.open(p) as img:
                out.append(np.zeros((img.height, img.width), np.uint8))
    return out


def pixel_metrics(maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """Pixel AUROC and PRO (FPR <= 0.3) over maps of any sizes (padded; padding excluded)."""
    from deep_representation_one_class.evaluation import localization

    loc = localization.localization_metrics_any_size(masks, maps, max_fpr=0.3)
    return float(loc["pixel_auroc"]), float(loc["pro"])


def check(run_dir: str) -> dict:
    """Served vs. evaluated metrics of one run (see the module docstring)."""
    from deep_representation_one_class.evaluation import metrics
    from deep_representation_one_class.serving.detector import Detector, read_run_config

    cfg = read_run_config(run_dir)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())["metrics"]
    paths, labels = _test_files(cfg)
    masks = _own_masks(paths) if cfg.dataset == "mvtec" else None
    rows = []
    t0 = time.perf_counter()
    for feature in ("pool", "embed"):
        det = Detector.load(run_dir, feature=feature)
        patch = getattr(det, "level", "image") == "patches"
        names = det.classifiers
        scores: dict[str, list] = {n: [] for n in names}
        maps: dict[str, list] = {n: [] for n in names}
        for start in range(0, len(paths), 16):
            chunk = paths[start : start + 16]
            images = det.load_images(chunk)[0]
            if patch:
                s, m = det.score_and_all_maps(images, names if masks is not None else [])
                for n in names:
                    scores[n].append(s[n])
                    maps[n] += m.get(n, [])
            else:
                for n, s in det.score(images).items():
                    scores[n].append(s)
        for n in names:
            s = np.concatenate(scores[n])
            rows.append((f"{feature}.{n}", metrics.auroc(labels, s), summary.get(f"{feature}.{n}")))
            if patch and masks is not None and masks and any(m.any() for m in masks):
                pixel, pro = pixel_metrics(maps[n], masks)
                for kind, v in (("pixel_auroc", pixel), ("pro", pro)):
                    rows.append((f"{feature}.{n}.{kind}", v, summary.get(f"{feature}.{n}.{kind}")))
    diffs = [abs(a - b) for _, a, b in rows if b is not None]
    return {
        "run": Path(run_dir).name,
        "dataset": cfg.dataset,
        "category": cfg.category,
        "test_images": len(paths),
        "served_vs_run": {k: {"served": a, "run": b} for k, a, b in rows},
        "max_abs_diff": max(diffs) if diffs else None,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--tolerance", type=float, default=1.0)
    args = p.parse_args(argv)
    result = check(args.model_dir)
    for key, v in result["served_vs_run"].items():
        run = "n/a" if v["run"] is None else f"{v['run']:.3f}"
        print(f"{key:28s} served {v['served']:.3f}  run {run}")
    print(f"max |served - run| = {result['max_abs_diff']} over {result['test_images']} images")
    if args.out:
        from deep_representation_one_class.utils import io

        io.write_json(args.out, result)
    diff = result["max_abs_diff"]
    return 0 if diff is not None and diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
