"""Self-supervised methods; importing this package registers them in ``METHODS``."""

from deep_representation_one_class.methods import (  # noqa: F401
    contrastive,
    cutpaste,
    denoising,
    imagenet,
    mean_shifted,
    patchcore,
    rotation,
    rotnet,
)
from deep_representation_one_class.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]
