"""RotNet baseline (Table 7 "RotNet"): rotation prediction without the MLP projection head.

The 4-way rotation classifier sits directly on the pooled trunk features (``--head_dims=none``,
``--latent_dim=4``), as in the RotNet/GEOM line of work the paper compares against; the paper's
own "Rotation prediction" adds the 8x512 MLP head. Both are scored by the rotation classifier
itself (``dscore.auc``, the "Rotation classifier" row) and by KDE/OC-SVM on ``pools``.

The paper gives no separate recipe for RotNet (spec §10 item 3); we assume the rotation
prediction recipe (augmentation, optimizer, epochs, batch 64) minus the head, which isolates
the head's effect. A separate registry key keeps ``"method": "rotnet"`` in ``summary.json``, so
the aggregation labels these runs as RotNet.
"""

from __future__ import annotations

from deep_representation_one_class.augment.grammar import PAPER_AUG, ROTATIONS
from deep_representation_one_class.methods.base import QUICK_STEPS
from deep_representation_one_class.methods.rotation import Rotation

PLUGIN = dict(
    kind="method",
    name="rotnet",
    label="RotNet",
    description="baseline: rotation prediction without the MLP head",
    defaults={
        "aug_list": PAPER_AUG + ROTATIONS,
        "aug_list_for_test": "x" + ROTATIONS,
        "head_dims": (),
        "latent_dim": 4,
        "batch_size": 32,
        "train_steps": QUICK_STEPS,
    },
    extra_eval=("logit", "dscore"),
    impl="RotNet",
)


class RotNet(Rotation):
    """Rotation prediction whose logits layer is applied to ``pools`` (no MLP head)."""

    @classmethod
    def check_config(cls, config, num_views):
        if config.head_dims:
            dims = ",".join(str(d) for d in config.head_dims)
            raise ValueError(
                f"method rotnet has no MLP head, got --head_dims={dims}; pass --head_dims=none "
                f"or use --method=rotation"
            )
        super().check_config(config, num_views)
