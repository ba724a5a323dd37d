"""Factories that turn a ``Config`` into the pieces of a run: task, views, model, optimizer, data.

The tools that use a trained run (``serving``, ``evaluate``, the benchmark) import these, never
the runner, so that they build exactly what training built.
"""

from __future__ import annotations

import dataclasses

import keras

from deep_representation_one_class import datasets, methods, tasks
from deep_representation_one_class.config import Config, eval_compute_precision
from deep_representation_one_class.datasets import pipeline
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.models import build_model
from deep_representation_one_class.models.backbones import BACKBONES
from deep_representation_one_class.utils.schedules import ReferenceSchedule


def task_for(cfg: Config) -> tasks.Task:
    """The task of the run's dataset (``image`` or ``patches``) with its views built.

    A run builds its task once, here, and hands it to everything that needs it (the data,
    the model, the training loop, the evaluation); the views are built with it, so that op
    parameters which only fail at the image size (``crop999999`` at 32 px) are refused before
    the run writes anything.

    Raises:
      ConfigError: the views cannot be built at this input size.
    """
    task = tasks.TASKS.get(datasets.DATASETS.get(cfg.dataset).task)(cfg)
    try:
        task.views()  # built once; the task keeps them (no TensorFlow op runs, ~1 ms)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    return task


def make_views(cfg: Config, task: tasks.Task | None = None) -> tasks.Views:
    """(train view fn, test view fn, number of train views, number of test views)."""
    return (task or task_for(cfg)).views()


def method_for(cfg: Config) -> methods.Method:
    return methods.METHODS.get(cfg.method)(cfg)


def make_backbone(cfg: Config, task: tasks.Task | None = None, **model_kwargs) -> keras.Model:
    """The configured ResNet + head at the task's model input (``model_kwargs`` go to
    ``models.build_model``, e.g. the benchmark's reference layers; ``task``: the run's, else
    built from ``cfg``)."""
    dtype = None if cfg.precision == "float32" else cfg.precision
    # A pretrained --backbone replaces the ResNet trunk (fine-tuning); the head stays.
    pretrained = BACKBONES.get(cfg.backbone)
    net_type = pretrained.name if pretrained.trainable is not None else cfg.net_type
    return build_model(
        net_type,
        cfg.net_width,
        (task or task_for(cfg)).model_input_shape(),
        cfg.head_dims,
        cfg.latent_dim,
        sync_bn=cfg.sync_bn,
        dtype=dtype,
        float32_stages=cfg.float32_stages,
        **model_kwargs,
    )


def make_model(
    cfg: Config,
    method: methods.Method | None = None,
    task: tasks.Task | None = None,
    **model_kwargs,
) -> keras.Model:
    """The run's model as its method builds it (the denoising decoder added, the ImageNet
    backbone swapped in); call it inside the strategy scope when training."""
    method = method or method_for(cfg)
    return method.build_model(lambda: make_backbone(cfg, task, **model_kwargs))


def eval_config(cfg: Config) -> Config:
    """``cfg`` with the precision its evaluation and serving compute in (``--eval_precision``):
    the model ``make_model`` builds from it is the one whose numbers users see. The checkpointed
    weights are float32 under every policy, so this model restores any checkpoint of the run."""
    return cfg.replace(precision=eval_compute_precision(cfg))


class EvalModel:
    """The network the evaluation runs: the training model itself when both compute in one
    precision, else a copy built in the evaluation precision that ``sync`` fills with the
    training model's current (float32 master) weights."""

    def __init__(self, cfg: Config, model: keras.Model):
        self.model = model
        self.cfg = eval_config(cfg)
        self._copy: keras.Model | None = None
        self.separate = self.cfg.precision != cfg.precision

    def sync(self) -> keras.Model:
        """The evaluation network, holding the training model's weights as of now."""
        if not self.separate:
            return self.model
        if self._copy is None:
            self._copy = make_model(self.cfg)
        src, dst = self.model.weights, self._copy.weights
        # Layers Keras names itself get another number in the copy: compare the variables'
        # own names and shapes, in order.
        if [(v.name, tuple(v.shape)) for v in src] != [(v.name, tuple(v.shape)) for v in dst]:
            # Same code, same config but the precision: a mismatch is a bug, never silent.
            raise RuntimeError("the evaluation network's variables differ from the trained one's")
        for s, d in zip(src, dst):
            d.assign(s.numpy())
        return self._copy


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """How long a run trains.

    Attributes:
      steps_per_epoch: steps of one epoch (``--num_batch``, else training images // batch);
        the period of per-epoch schedules and of the epoch-end logging and checkpoints.
      total_steps: ``--train_steps``, else ``--num_epoch`` x ``steps_per_epoch``.
      num_epochs: epochs the loop runs (the last one may be partial with ``--train_steps``).
    """

    steps_per_epoch: int
    total_steps: int
    num_epochs: int


def step_plan(cfg: Config, num_train: int) -> StepPlan:
    """The step plan for ``num_train`` training images (after distribution augmentation)."""
    spe = (
        cfg.num_batch if cfg.num_batch > 0 else pipeline.steps_per_epoch(num_train, cfg.batch_size)
    )
    spe = max(1, spe)
    total = cfg.train_steps if cfg.train_steps > 0 else cfg.num_epoch * spe
    return StepPlan(spe, total, -(-total // spe))


def make_optimizer(cfg: Config, plan: StepPlan):
    """(optimizer, schedule): SGD or AMSGrad Adam on the reference's LR schedule."""
    period = plan.steps_per_epoch if cfg.sched_freq == "epoch" else 1
    schedule = ReferenceSchedule(
        cfg.learning_rate,
        cfg.sched_type,
        plan.total_steps,
        period=period,
        min_rate=cfg.sched_min_rate,
        step_size=cfg.sched_step_size,
        gamma=cfg.sched_gamma,
        level=cfg.sched_level,
    )
    if cfg.optim_type == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        opt = keras.optimizers.Adam(schedule, amsgrad=True)
    if cfg.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt, schedule


def decayed_variables(model: keras.Model, regularize_bn: bool) -> list:
    """Variables in the L2 term. ``regularize_bn=False`` drops BatchNorm gamma/beta.

    Fix of reference bug 2: there ``regularize_bn=True`` *excluded* BN variables. Here the flag
    means what it says; the default (True) decays everything, which is what the reference
    actually did with its default.
    """
    if regularize_bn:
        return list(model.trainable_variables)
    bn_ids = set()
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            bn_ids.update(id(v) for v in layer.trainable_variables)
    return [v for v in model.trainable_variables if id(v) not in bn_ids]


def load_data(cfg: Config, task: tasks.Task | None = None) -> datasets.OneClassData:
    """The run's one-class task data (uint8 arrays at ``cfg.input_shape``), as its task uses it
    (the patch task holds out a few normal training images for its synthetic check);
    ``task``: the run's, else built from ``cfg``."""
    data = datasets.load_one_class(
        cfg.dataset,
        root=cfg.root,
        category=cfg.category,
        input_shape=tuple(cfg.input_shape),
        is_validation=cfg.is_validation,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        skip_corrupt=cfg.skip_corrupt,
        max_cls=cfg.max_cls,
        resize_policy=cfg.resize_policy,
    )
    return (task or task_for(cfg)).prepare(data)
