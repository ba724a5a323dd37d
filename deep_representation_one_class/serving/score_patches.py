"""``score`` for patch-level runs: image scores, decisions and anomaly-map PNGs of new parts.

    python -m deep_representation_one_class.score --model_dir=RUN --images=DIR --out=s.csv \\
        [--maps=OUT_DIR] [--threshold=q95 | NUMBER | f1 --val_images=VAL] [--normalized] \\
        [--tile=N]

Images are read one chunk at a time (``CHUNK_IMAGES``), scored as the run scored its test
images (``PatchDetector``) and written as they go: the CSV rows (``path``, per scorer
``<scorer>_score`` [``<scorer>_normalized``] ``<scorer>_anomalous``, then the thresholds in
force and the rule that chose them), and with ``--maps`` one PNG per image: the image, its
anomaly map and the overlay with the region at or above the pixel threshold outlined.

Thresholds: the image threshold and the pixel threshold (outline) are, by default, the ``q95``
of the run's held-out normal images (``thresholds.json``; any quantile name or a number works);
``--threshold=f1 --val_images=VAL`` picks instead the F1-optimal thresholds on a few labelled
images in the MVTec layout (``VAL/test/good``, ``VAL/test/<defect>``,
``VAL/ground_truth/<defect>/<stem>_mask.png``). ``--normalized`` adds scores on [0, 1] with the
image threshold at 0.5.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deep_representation_one_class.datasets import mvtec as mvtec_data
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.reports import maps as maps_lib
from deep_representation_one_class.serving.image_input import DetectorError
from deep_representation_one_class.serving.patch_detector import (
    CHUNK_IMAGES,
    PatchDetector,
    iter_images,
    normalize,
)
from deep_representation_one_class.serving.tiling import score_tiled
from deep_representation_one_class.training.run_dir import is_run_output
from deep_representation_one_class.utils import io

__all__ = ["f1_threshold", "f1_thresholds", "render_map_png", "run_patch_score"]

_HEADER = 14


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score >= threshold`` over the given samples.

    Every distinct score is a candidate; ties are flagged together. Raises DetectorError when
    the samples lack positives or negatives.
    """
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.all() or not y.any():
        raise DetectorError(
            "F1 thresholds need both defective and normal samples among the --val_images"
        )
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of equal scores
    tp, fp, cand = tp[last], fp[last], s[last]
    f1 = 2 * tp / (tp + fp + y.sum())
    best = int(np.argmax(f1))
    return float(cand[best]), float(f1[best])


def _val_set(folder: str):
    """Labelled validation images: (paths, labels, masks or None per image)."""
    paths, labels, masks = [], [], []
    if os.path.isdir(os.path.join(folder, "test")):  # a category folder: not its masks
        folder = os.path.join(folder, "test")
    for path, arr in iter_images(folder):
        defect = Path(path).parent.name != mvtec_data.GOOD
        mp = mvtec_data.mask_path(path) if defect else None
        mask = None
        if mp is not None and mp.is_file():
            with Image.open(mp) as m:
                mask = (np.asarray(m.convert("L")) > 127).astype(np.uint8)
            if mask.shape != arr.shape[:2]:
                raise DetectorError(f"mask {mp} is {mask.shape}, its image {arr.shape[:2]}")
        elif not defect:
            mask = np.zeros(arr.shape[:2], np.uint8)
        paths.append(path)
        labels.append(int(defect))
        masks.append(mask)
    return paths, np.array(labels), masks


def f1_thresholds(det: PatchDetector, val_images: str, classifier: str, tile: int = 0) -> dict:
    """F1-optimal image and pixel thresholds of ``classifier`` on labelled ``val_images``.

    Returns:
      ``{"image": t, "image_f1": f, "pixel": t or None, "pixel_f1": f or None, "n": n}``;
      the pixel threshold needs masks of the defective images (MVTec layout).
    """
    paths, labels, masks = _val_set(val_images)
    images = [a for _, a in iter_images(paths)]
    scores, maps = _score(det, images, classifier, tile)
    image_t, image_f1 = f1_threshold(labels, scores[classifier])
    out = {"image": image_t, "image_f1": image_f1, "pixel": None, "pixel_f1": None}
    out["n"] = len(paths)
    have = [i for i, m in enumerate(masks) if m is not None]
    if any(labels[i] for i in have):
        pix_y = np.concatenate([masks[i].reshape(-1) for i in have])
        pix_s = np.concatenate([maps[i].reshape(-1) for i in have])
        out["pixel"], out["pixel_f1"] = f1_threshold(pix_y, pix_s)
    return out


def _score(det: PatchDetector, images, classifier: str, tile: int, with_maps: bool = True):
    if tile:
        return score_tiled(det, images, tile, classifier, with_maps)
    return det.score_and_maps(images, classifier, with_maps)


def render_map_png(
    image: np.ndarray, amap: np.ndarray, pixel_t: float, vmin: float, vmax: float, title: str
) -> np.ndarray:
    """image | anomaly map | overlay (region >= ``pixel_t`` outlined in green), own size."""
    img = maps_lib._rgb(image[..., :3] if image.shape[-1] >= 3 else image)
    h, w = img.shape[:2]
    heat = maps_lib.apply_colormap(amap, vmin, vmax)
    over = np.rint(0.5 * img + 0.5 * heat).astype(np.uint8)
    outline = maps_lib.mask_outline(amap >= pixel_t)
    # Thicken the outline to stay visible on large photos.
    if max(h, w) > 512:
        from scipy import ndimage

        outline = ndimage.binary_dilation(outline, iterations=max(1, max(h, w) // 512))
    over[outline] = (0, 255, 0)
    canvas = np.zeros((h + _HEADER, 3 * w + 4, 3), np.uint8)
    for k, tile in enumerate((img, heat, over)):
        canvas[_HEADER:, k * (w + 2) : k * (w + 2) + w] = tile
    pil = Image.fromarray(canvas)
    ImageDraw.Draw(pil).text((2, 1), title, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.asarray(pil)


def _png_name(path: str, used: set[str]) -> str:
    p = Path(path)
    name = f"{p.parent.name}_{p.stem}" if p.parent.name else p.stem
    base, k = name, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name + ".png"


def check_maps_dir(folder: str, run_dir: str, overwrite: bool) -> None:
    """Refuses a ``--maps`` folder inside the run's own files, a file, or one that already
    holds PNGs (unless ``overwrite``): map PNGs are never written over silently."""
    if is_run_output(run_dir, folder):
        raise DetectorError(f"--maps {folder} would write over the run's own files; pick another")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DetectorError(f"--maps {folder} is a file; give a folder")
    pngs = os.path.isdir(folder) and any(n.lower().endswith(".png") for n in os.listdir(folder))
    if pngs and not overwrite:
        raise DetectorError(
            f"--maps {folder} already holds PNG files; add --overwrite or pick an empty folder"
        )


def run_patch_score(args, det: PatchDetector) -> int:
    """The patch-level ``score`` command (``args`` from ``score.build_parser``)."""
    names = det.classifiers
    main = names[0]
    if args.maps:
        check_maps_dir(args.maps, det.run_dir, args.overwrite)
    rule = str(args.threshold).strip()
    image_t: dict[str, float] = {}
    pixel_t: float
    if rule.lower() == "f1":
        if not args.val_images:
            raise DetectorError("--threshold=f1 needs --val_images=DIR (labelled MVTec layout)")
        f1 = f1_thresholds(det, args.val_images, main, args.tile)
        image_t = {main: f1["image"]}
        for n in names[1:]:
            image_t[n] = f1_thresholds(det, args.val_images, n, args.tile)["image"]
        pixel_t = f1["pixel"] if f1["pixel"] is not None else det.pixel_threshold(main)
        described = f"F1-optimal on {f1['n']} --val_images (image F1 {f1['image_f1']:.3f}" + (
            f", pixel F1 {f1['pixel_f1']:.3f})" if f1["pixel"] is not None else "; pixel q95)"
        )
    else:
        if "=" in rule:
            raise DetectorError("patch-level runs take one --threshold for all scorers")
        spec = thresholds_lib.parse_spec(rule)
        image_t = {n: det.threshold(n, spec) for n in names}
        pixel_t = det.pixel_threshold(main, spec)
        described = (
            f"{spec} of {det.thresholds.get('num_holdout', '?')} held-out normal images"
            if isinstance(spec, str)
            else f"fixed {spec:g}"
        )
    refs = {n: det.reference(n) for n in names} if args.normalized else {}
    if args.maps:
        os.makedirs(args.maps, exist_ok=True)
    pix_ref = det.thresholds.get("pixel_quantiles", {}).get(f"{det.feature}.{main}")
    vmin = float(pix_ref["q50"]) if pix_ref else None
    header = ["path"]
    for n in names:
        header += [f"{n}_score"] + ([f"{n}_normalized"] if args.normalized else [])
        header += [f"{n}_anomalous", f"{n}_threshold"]
    header += ["pixel_threshold", "threshold_rule"] + (["map_png"] if args.maps else [])
    skipped: list[tuple[str, str]] = []
    flagged = dict.fromkeys(names, 0)
    count = 0
    used: set[str] = set()
    with (
        io.atomic_path(args.out, ".csv") as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f,
    ):
        writer = csv.writer(f)
        writer.writerow(header)
        chunk: list[tuple[str, np.ndarray]] = []
        stream = iter_images(args.images, args.skip_corrupt, skipped)
        while True:
            chunk = [x for _, x in zip(range(CHUNK_IMAGES), stream)]
            if not chunk:
                break
            images = [a for _, a in chunk]
            scores, maps = _score(det, images, main, args.tile, with_maps=bool(args.maps))
            for i, (path, image) in enumerate(chunk):
                row: list = [path]
                for n in names:
                    s = float(scores[n][i])
                    row.append(repr(s))
                    if args.normalized:
                        row.append(f"{float(normalize(s, image_t[n], refs[n])):.6f}")
                    row += [int(s >= image_t[n]), repr(image_t[n])]
                    flagged[n] += int(s >= image_t[n])
                row += [repr(pixel_t), described]
                if args.maps:
                    lo = vmin if vmin is not None else float(np.percentile(maps[i], 1))
                    hi = max(2 * pixel_t - lo, lo + 1e-9)
                    name = _png_name(path, used)
                    title = (
                        f"{main} score {scores[main][i]:.4g} "
                        f"({'ANOMALOUS' if scores[main][i] >= image_t[main] else 'normal'}); "
                        f"outline: map >= {pixel_t:.4g}"
                    )
                    png = render_map_png(image, maps[i], pixel_t, lo, hi, title)
                    maps_lib.save_png(os.path.join(args.maps, name), png)
                    row.append(os.path.join(args.maps, name))
                writer.writerow(row)
                count += 1
        for p, why in skipped:
            writer.writerow([p, *([""] * (len(header) - 2)), f"skipped: {why}"])
    if count == 0:
        raise DetectorError("none of the image files could be decoded")
    summary = ", ".join(f"{n} {flagged[n]} (>= {image_t[n]:.4g})" for n in names)
    left = f" ({len(skipped)} skipped)" if skipped else ""
    maps_note = f"; map PNGs in {args.maps}" if args.maps else ""
    print(
        f"scored {count} images -> {args.out}{left}; threshold: {described}; flagged "
        f"anomalous: {summary}; pixel threshold {pixel_t:.4g}{maps_note}"
    )
    return 0
