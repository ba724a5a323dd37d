"""Image augmentation: stateless ops registered in ``AUG_OPS`` and the DROC string grammar.

Importing this package registers every op (geometric in ``ops``, colour and blur in
``photometric``). ``parse`` turns an ``--aug_list`` string into
``ViewSpec`` data and ``build_view_fn`` turns those into ``fn(image, seed) -> views``.
"""

from __future__ import annotations

from deep_representation_one_class.augment.grammar import (
    OpSpec,
    ViewSpec,
    build_view_fn,
    format_views,
    parse,
    valid_tokens,
    view_names,
)
from deep_representation_one_class.augment.ops import (
    AUG_OPS,
    AugmentError,
    Op,
    OpFactory,
    sample_crop_side,
)

# Registers the photometric ops (jitter, gray, blur) in AUG_OPS.
from deep_representation_one_class.augment.photometric import (  # isort: skip
    blur_radius,
    gaussian_blur,
    gaussian_kernel1d,
)

# Registers cutpaste and scar (CutPaste, Li et al. 2021).
from deep_representation_one_class.augment.cutpaste import (  # isort: skip
    cutpaste_image,
    scar_image,
)

__all__ = [
    "AUG_OPS",
    "AugmentError",
    "Op",
    "OpFactory",
    "OpSpec",
    "ViewSpec",
    "blur_radius",
    "build_view_fn",
    "cutpaste_image",
    "format_views",
    "gaussian_blur",
    "gaussian_kernel1d",
    "parse",
    "sample_crop_side",
    "scar_image",
    "valid_tokens",
    "view_names",
]
