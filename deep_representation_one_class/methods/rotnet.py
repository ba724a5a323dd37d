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

from types import MappingProxyType

from deep_representation_one_class.methods.base import METHODS
from deep_representation_one_class.methods.rotation import Rotation


@METHODS.register("rotnet")
class RotNet(Rotation):
    """Rotation prediction whose logits layer is applied to ``pools`` (no MLP head)."""

    name = "rotnet"
    label = "RotNet"
    defaults = MappingProxyType({**Rotation.defaults, "head_dims": ()})

    @classmethod
    def check_config(cls, config, num_views):
        if config.head_dims:
            dims = ",".join(str(d) for d in config.head_dims)
            raise ValueError(
                f"method rotnet has no MLP head, got --head_dims={dims}; pass --head_dims=none "
                f"or use --method=rotation"
            )
        super().check_config(config, num_views)
