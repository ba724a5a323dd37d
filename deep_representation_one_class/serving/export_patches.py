"""SavedModel export of a patch-level run: a prepared image batch in, image scores and maps out.

The signature (``serving_default``, also ``m.serve``)::

    images:  float32 [B, H, W, C] in [0, 1]   the run's canvas (config input_shape), i.e. an
                                              image after the run's preparation
                                              (``preprocessing.json``: resize policy, factor,
                                              padding; ``droc_export.json`` repeats it)
    ->  {"<scorer>_score": float32 [B],       the run's --patch_agg of the window scores
         "anomaly_map":    float32 [B, H, W]} the first scorer's smoothed map of the canvas

Everything runs in TensorFlow: the dense grid of windows (the run's ``patch_size`` and
``patch_stride``, the same positions as ``patch_grid.grid_positions``) is gathered with fixed
indices, embedded by the encoder and scored against the saved bank (KDE and 1-NN as float32
cosine blocks, GDE by its ``tf_score``), then aggregated; the map averages the covering
windows' scores and applies the run's Gaussian smoothing (separable, edges repeated like
``scipy.ndimage.gaussian_filter(mode="nearest")``). The image score counts every window of the
canvas: it equals the in-process score when the image fills the canvas (``squash``, or
``fit``/``same_scale`` images of the canvas's aspect and largest size); for padded canvases cut
the map to the content and aggregate there. The batch size is free, the image size fixed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class import config as config_lib
from deep_representation_one_class.serving import saved_model_io
from deep_representation_one_class.serving.patch_detector import PatchDetector
from deep_representation_one_class.tasks import patch_dense
from deep_representation_one_class.tasks import patch_grid as patches_lib

__all__ = ["build_patch_module", "export_patch_saved_model", "gaussian_kernel"]

EXPORT_INFO = saved_model_io.EXPORT_INFO


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D kernel of ``scipy.ndimage.gaussian_filter`` (radius ``int(truncate σ + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _smooth(maps: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """Separable Gaussian filter of [B, H, W] maps with edge-repeat padding."""
    r = len(kernel) // 2
    k = tf.constant(kernel)
    x = maps
    for axis in (1, 2):
        first = tf.gather(x, [0], axis=axis)
        last = tf.gather(x, [tf.shape(x)[axis] - 1], axis=axis)
        reps = [1, 1, 1]
        reps[axis] = r
        x = tf.concat([tf.tile(first, reps), x, tf.tile(last, reps)], axis=axis)
        # Correlation along ``axis`` as a 2-D convolution with a 1-pixel-wide kernel.
        shape = [len(kernel), 1, 1, 1] if axis == 1 else [1, len(kernel), 1, 1]
        x = tf.nn.conv2d(x[..., None], tf.reshape(k, shape), strides=1, padding="VALID")[..., 0]
    return x


def build_patch_module(det: PatchDetector) -> tf.Module:
    """A ``tf.Module`` whose ``serve`` maps prepared canvases to scores and the main map."""
    cfg = det.config
    h, w, c = det.input_shape
    size, stride = int(cfg.patch_size), int(cfg.patch_stride)
    ys, xs = patches_lib.grid_positions(h, w, size, stride)
    gh, gw = len(ys), len(xs)
    # Flat pixel index of every window pixel, window-major: [gh * gw * P * P].
    dy, dx = np.mgrid[0:size, 0:size]
    rows = ys[:, None, None, None] + dy[None, None]
    cols = xs[None, :, None, None] + dx[None, None]
    index = (rows * w + cols).reshape(-1).astype(np.int32)
    kind, k = patch_dense.parse_agg(cfg.patch_agg)
    ay = patches_lib._coverage(ys, size, h).astype(np.float32)
    ax = patches_lib._coverage(xs, size, w).astype(np.float32)
    counts = np.outer(ay.sum(axis=0), ax.sum(axis=0)).astype(np.float32)
    kernel = gaussian_kernel(cfg.smooth_sigma) if cfg.smooth_sigma > 0 else None
    output = "pools" if det.feature == "pool" else "embeds"

    module = tf.Module(name="droc_patch_detector")
    module.model = det.model
    module.index = tf.constant(index)
    module.variables_by_scorer = {}
    scorers = {}
    for name in det.classifiers:
        reg = det.dense.cset.scorers[f"{det.feature}.{name}"]
        if name in ("kde", "auc"):
            state = reg.state()
            bank = tf.Variable(np.asarray(state["bank"], np.float32), trainable=False)
            gamma = float(state["gamma"]) if name == "kde" else 0.0
            module.variables_by_scorer[name] = {"bank": bank}
            scorers[name] = ("similarity", bank, gamma)
        else:
            state = reg.state()
            variables = {
                key: tf.Variable(np.asarray(state[key], np.float64), trainable=False)
                for key in reg.tf_state
            }
            module.variables_by_scorer[name] = variables
            scorers[name] = ("registry", type(reg).tf_score, variables)

    def score_windows(name, feats):
        entry = scorers[name]
        if entry[0] == "similarity":
            _, bank, gamma = entry
            sims = tf.matmul(tf.math.l2_normalize(feats, axis=1, epsilon=1e-24), bank, False, True)
            if name == "kde":
                return -tf.reduce_logsumexp((2.0 * gamma) * sims, axis=1) / gamma
            return 1.0 - tf.reduce_max(sims, axis=1)
        _, fn, variables = entry
        return tf.cast(fn(variables, tf.cast(feats, tf.float64)), tf.float32)

    def aggregate(s):  # [B, K] -> [B]
        if kind == "max":
            return tf.reduce_max(s, axis=1)
        if kind == "mean":
            return tf.reduce_mean(s, axis=1)
        return tf.reduce_mean(tf.math.top_k(s, k=min(k, gh * gw)).values, axis=1)

    main = det.classifiers[0]

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, name="images")])
    def serve(images):
        b = tf.shape(images)[0]
        flat = tf.reshape(images, [b, h * w, c])
        windows = tf.reshape(tf.gather(flat, module.index, axis=1), [b * gh * gw, size, size, c])
        feats = tf.cast(module.model(windows, training=False)[output], tf.float32)
        out = {}
        for name in det.classifiers:
            s = tf.reshape(score_windows(name, feats), [b, gh * gw])
            out[f"{name}_score"] = aggregate(s)
            if name == main:
                grid = tf.reshape(s, [b, gh, gw])
                sums = tf.einsum("gh,bgk,kw->bhw", ay, grid, ax)
                amap = sums / counts
                out["anomaly_map"] = _smooth(amap, kernel) if kernel is not None else amap
        return out

    module.serve = serve
    return module


def export_patch_saved_model(
    run_dir: str,
    out_dir: str,
    classifiers: Sequence[str] | None = None,
    feature: str = "pool",
    overwrite: bool = False,
    check_out=None,
) -> str:
    """Writes a patch-level run as a SavedModel (temporary folder, then one rename).

    ``check_out(run_dir, out_dir, overwrite)`` refuses an unusable ``out_dir`` (``export``'s
    rules: never the run's own files, an earlier export only with ``overwrite``).

    Raises:
      ExportError, DetectorError: an unusable ``out_dir`` or run folder.
    """
    if check_out is not None:
        check_out(run_dir, out_dir, overwrite)
    out_dir = os.path.abspath(out_dir)
    det = PatchDetector.load(run_dir, classifiers, feature)
    module = build_patch_module(det)
    info = {
        "run_dir": os.path.abspath(run_dir),
        "level": "patches",
        "classifiers": det.classifiers,
        "map_classifier": det.classifiers[0],
        "feature": det.feature,
        "input_shape": list(det.input_shape),
        "input": (
            "images: float32 [B, H, W, C] in [0, 1] at input_shape, each image prepared "
            "by 'preprocessing' (content at the top-left, the rest padded)"
        ),
        "outputs": {
            "<scorer>_score": "float32 [B], higher = more anomalous (all windows)",
            "anomaly_map": "float32 [B, H, W] canvas map; cut [:h, :w] for the content",
        },
        "preprocessing": det.spec.to_dict(),
        # The network's compute precision, the one the run's evaluation used.
        "compute_precision": config_lib.eval_compute_precision(det.config),
        "patch": {
            k: getattr(det.config, k)
            for k in ("patch_size", "patch_stride", "patch_agg", "smooth_sigma")
        },
        "thresholds": det.thresholds,
    }
    saved_model_io.save_aside(module, out_dir, EXPORT_INFO, info)
    return out_dir
