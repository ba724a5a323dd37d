"""The method interface: a self-supervised objective that owns only its maths.

A method maps one replica's batch of augmented views to per-example losses and accuracies.
The runner (``train_lib``) owns the optimizer, the distribution, IO and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import keras
import tensorflow as tf

from deep_representation_one_class.registry import Registry

if TYPE_CHECKING:
    from deep_representation_one_class.config import Config

METHODS: Registry = Registry("method")


class Method:
    """Base class. Subclasses set ``name`` and implement ``per_example``."""

    name: ClassVar[str] = ""
    #: evaluation feature sets this method reports besides ``pool``/``embed``
    extra_eval: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def check_config(cls, config: Config, num_views: int) -> None:
        """Raises ValueError (one line) when the config cannot work with this method."""

    def build_model(self, make_default: Callable[[], keras.Model]) -> keras.Model:
        """Returns the model to train and evaluate; called once, inside the strategy scope.

        ``make_default()`` builds the configured backbone + head. A method may extend it (the
        denoising decoder becomes extra outputs of the same model, so the runner's optimizer,
        weight decay and checkpoints cover it) or replace it (fixed ImageNet features). Every
        model must still output ``pools``, ``embeds`` and ``logits``.
        """
        return make_default()

    def examples_per_step(self, global_batch: int, num_views: int) -> int:
        """How many per-example losses one global step averages over."""
        return global_batch

    def per_example(
        self, model: keras.Model, views: tuple[tf.Tensor, ...], training: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (per-example loss [n], per-example accuracy [n]) for this replica."""
        raise NotImplementedError
