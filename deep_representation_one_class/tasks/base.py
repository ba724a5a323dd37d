"""The task interface: what differs between image-level and patch-level one-class problems.

A task owns, for the datasets that name it (their description's ``task``): the model's input
shape, the training and test views, the evaluation at the end of a run and the files it writes,
and its own options (``--patch_size`` ...). The runner never branches on a dataset's name; it
asks the run's task. A task is one file whose ``PLUGIN`` description (``catalog.py``) carries
its name, options and serving flags; the class's attributes are set from it.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from deep_representation_one_class import catalog
from deep_representation_one_class.registry import Option, Registry

if TYPE_CHECKING:
    from deep_representation_one_class.config import Config
    from deep_representation_one_class.datasets import OneClassData

TASKS: Registry = Registry("task", kind="task")

# fn(image [H, W, C] uint8 or float, seed int [2]) -> tuple of [S, S, C] float32 views.
ViewFn = Callable[[Any, Any], tuple]


class Views(typing.NamedTuple):
    """The view functions of a run and how many views each makes (unpacks as a tuple)."""

    train: ViewFn
    test: ViewFn
    num_train: int
    num_test: int


@dataclasses.dataclass
class Evaluation:
    """What a task's evaluation returns.

    Attributes:
      metrics: metric key (``pool.kde``, ``pool.gde.pixel_auroc`` ...) -> value x100.
      timings: seconds (and rates) of the evaluation's parts.
      scores: metric key -> ``[T]`` per-test-image anomaly scores.
      files: the files written into the run folder.
      records: further ``summary.json`` sections (``baseline_scratch``: the from-scratch
        baseline's recipe, steps and seconds).
    """

    metrics: dict[str, float]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)
    records: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task:
    """Base class; subclasses register in ``TASKS`` and implement the methods below."""

    name: ClassVar[str] = ""
    #: settings only this task reads (flags and ``Config.options``)
    options: ClassVar[tuple[Option, ...]] = ()
    #: whether ``Detector``/``score``/``export`` can serve its runs
    servable: ClassVar[bool] = True
    #: whether ``--eval_every`` (evaluations during training) is supported
    periodic_eval: ClassVar[bool] = True
    #: the from-scratch self-supervised recipe a pretrained run is compared with
    #: (``scratch.py``): ``method`` and the settings that differ from what the dataset resolves
    #: it to; ``own_size``: train at the dataset's default input size when that is smaller
    scratch_recipe: ClassVar[Mapping[str, Any]] = MappingProxyType({"method": "contrastive"})

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        entry = catalog.entry_for_class(cls, "task")
        if entry is not None:
            cls.name, cls.options = entry.name, entry.options
            cls.servable, cls.periodic_eval = entry.servable, entry.periodic_eval

    def __init__(self, config: Config):
        self.config = config
        self._views: Views | None = None

    def with_config(self, config: Config) -> Task:
        """This task for ``config``, a copy of the run's config that differs only in what the
        views do not depend on (the category the data resolved to): the views built for the
        run are kept, not built again."""
        twin = copy.copy(self)
        twin.config = config
        return twin

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Raises ValueError (one line) when the config cannot work with this task."""

    def prepare(self, data: OneClassData) -> OneClassData:
        """The task's view of the loaded data (e.g. normal images held out for validation)."""
        return data

    def model_input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of what the network sees (it is fully convolutional; H picks the stem)."""
        raise NotImplementedError

    def views(self) -> Views:
        """The run's train and test views, built on first use and kept (a run builds them
        once; ``make_views`` builds them)."""
        if getattr(self, "_views", None) is None:
            self._views = self.make_views()
        return self._views

    def make_views(self) -> Views:
        raise NotImplementedError

    def evaluate(
        self,
        model: Any,
        data: OneClassData,
        *,
        with_logits: bool,
        run_dir: str | None = None,
        writer: Any = None,
        step: int = 0,
        scratch_trainer: Any = None,
    ) -> Evaluation:
        """Evaluates ``model`` on ``data``; with ``run_dir``, writes the run's result files.

        ``scratch_trainer`` (``training.scratch.train``; None: no from-scratch baseline) trains
        the from-scratch recipe of a pretrained run with ``--baselines`` (``scratch.py``).
        """
        raise NotImplementedError
