"""Tiled scoring of large images (``score --tile=N``): overlapping tiles, stitched maps.

A 2-5 MP photo brought whole onto a 256-pixel canvas loses thin defects to the downscaling.
With ``--tile=N`` every image is cut into N x N tiles (of the image's own pixels) that overlap
by a quarter (stride ``3N/4``; the last row and column touch the border). Every tile is
prepared with one factor, canvas side / N (``same_scale`` within a tile: all tiles of all
images share the scale), and scored densely like a whole image (``PatchDetector``); tiles at
the border that are smaller than N are padded as the run pads its canvases and only their
content counts. The tile maps are cut to their content, resized to the tile's own size and
averaged where tiles overlap; the image score is the run's ``--patch_agg`` over the windows of
all tiles.

Memory per image: the stitched map and its overlap counts (8 bytes per image pixel, e.g.
40 MB for 5 MP) plus one chunk of ``CHUNK_IMAGES`` tile canvases and their window scores, so
it does not grow with the number of tiles; time grows with the number of tiles,
``ceil((H - N) / (3N/4) + 1) x ceil((W - N) / (3N/4) + 1)`` dense passes of one canvas each.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deep_representation_one_class.serving.image_input import DetectorError, prepare_batch
from deep_representation_one_class.serving.patch_detector import (
    CHUNK_IMAGES,
    PatchDetector,
    _split,
    resize_map,
)
from deep_representation_one_class.tasks import patch_dense, patch_grid

__all__ = ["score_tiled", "tile_positions", "tiles_per_image"]


def tile_positions(length: int, tile: int) -> list[int]:
    """Starts of overlapping tiles along one axis (stride 3/4 of the tile, last at the end)."""
    if length <= tile:
        return [0]
    stride = max(1, (3 * tile) // 4)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _tile_count(shape, tile: int) -> int:
    return len(tile_positions(shape[0], tile)) * len(tile_positions(shape[1], tile))


def score_tiled(
    det: PatchDetector, images, tile: int, classifier: str | None = None, with_maps: bool = True
):
    """Like ``PatchDetector.score_and_maps``, on overlapping N x N tiles of every image.

    Returns:
      (scorer -> [N] image scores, list of maps at each image's own resolution).
    """
    if tile < int(det.config.patch_size):
        raise DetectorError(
            f"--tile={tile} is smaller than the run's patch size {det.config.patch_size}"
        )
    main = det._check_name(classifier)
    h_c, w_c = det.input_shape[:2]
    spec = dataclasses.replace(
        det.spec, resize_policy="same_scale", scale=min(h_c, w_c) / float(tile)
    )
    size = int(det.config.patch_size)
    scores = {n: [] for n in det.classifiers}
    maps = []
    for image in _split(images):
        image = np.asarray(image)
        h, w = image.shape[:2]
        boxes = [
            (y, x, min(tile, h - y), min(tile, w - x))
            for y in tile_positions(h, tile)
            for x in tile_positions(w, tile)
        ]
        total = np.zeros((h, w), np.float32) if with_maps else None
        counts = np.zeros((h, w), np.float32) if with_maps else None
        window_scores = {n: [] for n in det.classifiers}
        for start in range(0, len(boxes), CHUNK_IMAGES):
            chunk = boxes[start : start + CHUNK_IMAGES]
            crops = [image[y : y + th, x : x + tw] for y, x, th, tw in chunk]
            canvases, sizes, own = _prepare(det, crops, spec)
            dense, ys, xs = det.dense.score(canvases)
            valid = patch_dense.valid_windows(sizes, len(canvases), ys, xs, size)
            for n in det.classifiers:
                s = dense[det.feature, n]
                v = np.ones(s.shape, bool) if valid is None else valid
                window_scores[n].append(s[v])
            if with_maps:
                tile_maps = patch_grid.anomaly_maps(
                    dense[det.feature, main], ys, xs, size, canvases.shape[1:3],
                    det.config.smooth_sigma,
                )  # fmt: skip
                for (y, x, th, tw), m, c, o in zip(chunk, tile_maps, sizes, own):
                    total[y : y + th, x : x + tw] += resize_map(m, c, o)
                    counts[y : y + th, x : x + tw] += 1.0
        for n in det.classifiers:
            flat = np.concatenate(window_scores[n])[None]
            scores[n].append(patch_dense.aggregate(flat, det.config.patch_agg)[0])
        if with_maps:
            maps.append(total / np.maximum(counts, 1.0))
    return {n: np.asarray(v, np.float64) for n, v in scores.items()}, maps


def _prepare(det: PatchDetector, crops, spec):
    canvases, sizes, own = prepare_batch(crops, spec)
    if canvases.dtype != np.uint8:
        canvases = np.clip(np.rint(canvases * 255.0), 0, 255).astype(np.uint8)
    return canvases, sizes, own


def tiles_per_image(shape, tile: int) -> int:
    """How many dense passes ``--tile`` costs for an image of ``shape`` (H, W)."""
    return _tile_count(shape, tile) if tile else 1
