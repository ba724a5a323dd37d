"""The patch-level task (MVTec AD layout): train on random patches, score densely, localise.

The task owns the patch options, the patch views and the model input (P x P); the dense
evaluation protocol is in ``patch_eval.py``.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.registry import Option
from deep_representation_one_class.tasks import patch_grid as patches_lib
from deep_representation_one_class.tasks import patch_synthetic
from deep_representation_one_class.tasks import scratch as scratch_lib
from deep_representation_one_class.tasks.base import Evaluation, Task, Views
from deep_representation_one_class.tasks.baselines import BASELINES_OPTION
from deep_representation_one_class.tasks.image import image_views
from deep_representation_one_class.tasks.patch_eval import (
    PatchEvalError,
    evaluate_patches,
    parse_agg,
)
from deep_representation_one_class.utils import run_folder

logger = logging.getLogger(__name__)


PLUGIN = dict(
    kind="task",
    name="patches",
    description="train on random patches; score every test image densely; localise",
    servable=False,
    periodic_eval=False,
    options=[
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
        patch_synthetic.SYNTHETIC_OPTION,
        BASELINES_OPTION,
        scratch_lib.SCRATCH_STEPS_OPTION,
    ],
    impl="PatchTask",
)


class PatchTask(Task):
    """Train on random patches; score every test image densely; detect and localise."""

    # Contrastive learning on random patches, the dataset's from-scratch defaults otherwise
    # (for mvtec: chosen by the synthetic-anomaly validation, results/defect_selection.md).
    scratch_recipe = MappingProxyType({"method": "contrastive"})

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
        scratch_lib.check_steps(config)

    def prepare(self, data):
        """Holds out ``synthetic_holdout`` seeded normal training images for the synthetic
        check (``patch_synthetic.hold_out_data``)."""
        return patch_synthetic.hold_out_data(data, self.config.synthetic_holdout, self.config.seed)

    def model_input_shape(self) -> tuple[int, int, int]:
        # The stem is chosen by the patch size, not the image size.
        size = int(self.config.patch_size)
        return (size, size, int(self.config.input_shape[2]))

    def make_views(self) -> Views:
        image = image_views(self.config)
        train_views = grammar.parse(self.config.aug_list)
        return image._replace(train=patches_lib.patch_view_fn(train_views, self.config))

    def evaluate(
        self, model, data, *, with_logits, run_dir=None, writer=None, step=0, scratch_trainer=None
    ):
        del with_logits  # rotation classifiers are not scored per patch
        records: dict = {}
        metrics, arrays, timings = evaluate_patches(
            model,
            data,
            self.config,
            run_dir,
            writer,
            step,
            self.model_input_shape(),
            records,
            scratch_trainer,
        )
        # The image scores of every classifier, under the score keys (``pool.gde``).
        scores = {key: arrays[k] for k in arrays if (key := run_folder.parse_image_score_key(k))}
        files = []
        if run_dir is not None:
            files.append(run_folder.write_embeddings(run_dir, arrays))
            files.append(run_folder.write_scores(run_dir, scores))
        return Evaluation(metrics, timings, scores, files, records)
