"""The method interface: a self-supervised objective that owns only its maths and its settings.

A method maps one replica's batch of augmented views to per-example losses and accuracies.
The runner (``training``) owns the optimizer, the distribution, IO and evaluation. Adding a
method is adding one file: its ``PLUGIN`` description (read by ``catalog.py`` without importing
the file) carries everything static about it, and the class's attributes are set from it:

* ``defaults``: the quick CPU defaults of common settings (views, head, batch, training
  budget) that suit this method; a dataset's defaults and the user's flags override them.
* ``options``: settings that only this method reads (``Option``); each becomes a flag and an
  entry of ``Config.options`` (read as ``config.<name>``).
* ``label``: how result tables name the representation (the paper's Table 7 row group).
* ``fixed``, ``extra_eval``: see the class attributes.

What depends on a run's settings stays in classmethods (``defaults_for``, ``derived``,
``table_label``, ``check_config``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import keras
import tensorflow as tf

from deep_representation_one_class import catalog
from deep_representation_one_class.registry import Option, Registry

if TYPE_CHECKING:
    from deep_representation_one_class.config import Config

METHODS: Registry = Registry("method", kind="method")

# The quick CPU budget of the bare commands, in training steps (whatever the dataset's size; see
# docs/usage.md, "Runs and their settings"). The paper scripts train by epochs instead.
QUICK_STEPS = 750


class Method:
    """Base class. Subclasses set ``name`` and implement ``per_example``."""

    name: ClassVar[str] = ""
    #: the paper's row label in result tables (see ``table_label`` for config-dependent ones)
    label: ClassVar[str] = ""
    #: quick defaults of common ``Config`` fields for this method
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: settings a dataset's defaults must not override (only the user can), e.g. the zero
    #: training budget of evaluation-only methods on MVTec, whose defaults train 1,500 steps
    fixed: ClassVar[Mapping[str, Any]] = {}
    #: settings only this method reads
    options: ClassVar[tuple[Option, ...]] = ()
    #: evaluation feature sets this method reports besides ``pool``/``embed``
    extra_eval: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any):
        # The class carries its file's description (the literal the catalog reads).
        super().__init_subclass__(**kwargs)
        entry = catalog.entry_for_class(cls, "method")
        if entry is not None:
            cls.name, cls.label = entry.name, entry.table_label
            cls.defaults = MappingProxyType(dict(entry.defaults))
            cls.fixed = MappingProxyType(dict(entry.fixed))
            cls.options, cls.extra_eval = entry.options, entry.extra_eval

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def table_label(cls, config: Mapping[str, Any]) -> str:
        """The representation's name in result tables, from a run's (flat) config dict."""
        del config
        return cls.label or cls.name

    @classmethod
    def defaults_for(cls, given: Mapping[str, Any]) -> Mapping[str, Any]:
        """The quick defaults given the user's settings (``given``: flag name -> value).

        Most methods return ``defaults``; a method whose option changes its views (CutPaste's
        variant picks its ``aug_list`` and ``latent_dim``) derives them here.
        """
        del given
        return cls.defaults

    @classmethod
    def derived(cls, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """Settings that follow from the others once every default is in (``values``: flag
        name -> value, the user's included), e.g. the input side a pretrained backbone is fed
        at; recorded in config.json like any setting."""
        del values
        return {}

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
