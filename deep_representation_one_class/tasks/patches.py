"""The patch-level task (MVTec AD layout): train on random patches, score densely, localise.

The task owns the patch options, the patch views and the model input (P x P); the dense
evaluation protocol is in ``patch_eval.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.registry import Option
from deep_representation_one_class.tasks import patch_grid as patches_lib
from deep_representation_one_class.tasks import patch_synthetic
from deep_representation_one_class.tasks.base import TASKS, Evaluation, Task, Views
from deep_representation_one_class.tasks.baselines import BASELINES_OPTION
from deep_representation_one_class.tasks.image import image_views
from deep_representation_one_class.tasks.patch_eval import (
    PatchEvalError,
    evaluate_patches,
    parse_agg,
)
from deep_representation_one_class.utils import io

logger = logging.getLogger(__name__)


@TASKS.register("patches")
class PatchTask(Task):
    """Train on random patches; score every test image densely; detect and localise."""

    name = "patches"
    servable = False
    periodic_eval = False
    options = (
        Option("patch_size", 32, "Patch tasks: side of the training/scoring patches (>= 8)."),
        Option("patch_stride", 8, "Patch tasks: stride of the dense test patches (>= 1)."),
        Option(
            "patch_agg",
            "max",
            "Patch tasks: image score from patch scores: max, mean or topK (mean of the K "
            "largest).",
        ),
        Option("patch_bank", 20000, "Patch tasks: training patches the classifiers are fit on."),
        Option("smooth_sigma", 4.0, "Patch tasks: Gaussian sigma (pixels) smoothing the map."),
        Option(
            "patch_coreset",
            1.0,
            "Patch tasks: keep this fraction of the patch bank by greedy coreset subsampling "
            "(PatchCore; 1 = the whole bank).",
        ),
        Option(
            "synthetic_holdout",
            16,
            "Patch tasks: normal training images held out (seeded; at most 1/5 of them) for the "
            "synthetic-anomaly validation score; 0 = none.",
        ),
        BASELINES_OPTION,
    )

    @classmethod
    def check_config(cls, config) -> None:
        if not (config.patch_size >= 8 and config.patch_stride >= 1 and config.patch_bank > 0):
            raise ValueError(
                "--patch_size must be >= 8, --patch_stride >= 1 and --patch_bank > 0, got "
                f"{config.patch_size}, {config.patch_stride}, {config.patch_bank}"
            )
        if config.patch_size > min(config.input_shape[:2]):
            raise ValueError(
                f"--patch_size={config.patch_size} is larger than the images "
                f"(--input_shape={','.join(map(str, config.input_shape))})"
            )
        if not 0 < config.patch_coreset <= 1:
            raise ValueError(f"--patch_coreset must be in (0, 1], got {config.patch_coreset}")
        if config.synthetic_holdout < 0:
            raise ValueError(f"--synthetic_holdout must be >= 0, got {config.synthetic_holdout}")
        if config.smooth_sigma < 0:
            raise ValueError(f"--smooth_sigma must be >= 0, got {config.smooth_sigma}")
        if config.eval_every:
            raise ValueError("--eval_every is not supported for patch tasks; use 0")
        try:
            parse_agg(config.patch_agg)
        except PatchEvalError as e:
            raise ValueError(str(e)) from None

    def prepare(self, data):
        """Holds out ``synthetic_holdout`` seeded normal training images (at most 1/5) from
        training and from the classifiers' bank, for the synthetic-anomaly validation."""
        kept, out = patch_synthetic.hold_out(
            len(data.train_x), self.config.synthetic_holdout, self.config.seed
        )
        if not len(out):
            return data
        same = data.cls_x is data.train_x or len(data.cls_x) == len(data.train_x)
        if not same:
            # A capped classifier set (over --max_cls images) is a copy drawn before the
            # hold-out; it may contain held-out images, which then flatter the synthetic score.
            logger.warning(
                "Classifier set capped at --max_cls: it may contain some of the %d held-out "
                "images of the synthetic check.",
                len(out),
            )
        sizes = data.train_sizes
        train_x = data.train_x[kept]
        logger.info(
            "Synthetic-anomaly validation: %d of %d normal training images held out.",
            len(out),
            len(data.train_x),
        )
        return dataclasses.replace(
            data,
            train_x=train_x,
            cls_x=train_x if same else data.cls_x,
            train_sizes=None if sizes is None else sizes[kept],
            holdout_x=data.train_x[out],
            holdout_sizes=None if sizes is None else sizes[out],
        )

    def model_input_shape(self) -> tuple[int, int, int]:
        # The stem is chosen by the patch size, not the image size.
        size = int(self.config.patch_size)
        return (size, size, int(self.config.input_shape[2]))

    def views(self) -> Views:
        image = image_views(self.config)
        train_views = grammar.parse(self.config.aug_list)
        return image._replace(train=patches_lib.patch_view_fn(train_views, self.config))

    def evaluate(self, model, data, *, with_logits, run_dir=None, writer=None, step=0):
        del with_logits  # rotation classifiers are not scored per patch
        metrics, arrays, timings = evaluate_patches(
            model, data, self.config, run_dir, writer, step, self.model_input_shape()
        )
        files = []
        if run_dir is not None:
            io.write_npz(os.path.join(run_dir, "embeddings.npz"), **arrays)
            files.append("embeddings.npz")
        return Evaluation(metrics, timings, {}, files)
