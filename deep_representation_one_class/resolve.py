"""From what a user set to a run's validated ``Config``: the registered plug-ins' part of it.

``config.py`` is the settings schema and imports none of the plug-ins; this module is where the
schema meets them. The plug-ins' names, options and defaults come from the catalog
(``catalog.py``, read without importing them); a run's own method and task are imported (through
their registries) to resolve what depends on the settings (``defaults_for``, ``derived``, their
checks).

Defaults are resolved here, in this order (lowest precedence first), by ``build``:

1. ``Config``'s field defaults (``config.py``);
2. the method's registered ``defaults`` (``Method.defaults_for``: its quick CPU budget);
3. the dataset's input shape, then its registered ``defaults`` (e.g. MVTec's patch training);
4. the method's ``fixed`` settings (evaluation-only methods train 0 steps whatever the dataset);
5. the epoch switch: ``num_epoch`` or ``num_batch`` given without ``train_steps`` means
   epoch-based training (``train_steps=0``), as in the paper scripts;
6. what the user gave;
7. the options of the run's method and task take their declared defaults where not given;
8. ``validate``: canonical names (``UnsupEmbed`` -> ``rotation``) and ``--precision=auto``
   resolved to what this machine computes fast, so ``config.json`` records what the run
   computed in. Precision is resolved here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from deep_representation_one_class import catalog, datasets, methods, tasks
from deep_representation_one_class.augment import grammar
from deep_representation_one_class.config import Config, check_fields
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.evaluation import scorers
from deep_representation_one_class.models import NETWORKS
from deep_representation_one_class.models.backbones import BACKBONES
from deep_representation_one_class.registry import Option
from deep_representation_one_class.utils import hardware, schedules

__all__ = ["build", "load", "option_owners", "resolve_precision", "validate"]


def _declared_options(registration: Any) -> tuple[Option, ...]:
    return tuple(getattr(registration, "options", ()) or ())


def option_owners() -> dict[str, tuple[Option, list[str]]]:
    """Every declared option: name -> (its declaration, the plug-ins that own it); from the
    catalog, so no plug-in is imported."""
    return catalog.option_owners()


def load(d: Mapping[str, Any]) -> Config:
    """A run's ``config.json`` as a ``Config``; a key no field or registration declares is an
    error (not validated: an old run's values load as they were written)."""
    return Config.from_dict(d, options=option_owners())


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` where this machine computes bfloat16 natively, else
    ``float32``; any other value is returned as given (``check_fields`` checks it)."""
    return hardware.resolve_precision(precision)


def _canonical(registry, value: str) -> str:
    try:
        return registry.canonical(value)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


def build(**given: Any) -> Config:
    """The validated config of a run from the settings a user gave (the module docstring lists
    the order in which defaults are resolved).

    Args:
      **given: field or option names (flag names) -> values, e.g. ``method="rotation"``.

    Returns:
      A validated ``Config`` (canonical names, resolved precision, options of its method and
      task filled in).

    Raises:
      ConfigError: an unknown name, an option of another method or task, or a bad value.
    """
    defaults = Config()
    dataset = _canonical(datasets.DATASETS, given.get("dataset", defaults.dataset))
    spec = datasets.DATASETS.get(dataset)
    # A dataset may name its own default method (users' folders: the pretrained path).
    method = _canonical(methods.METHODS, given.get("method", spec.method or defaults.method))
    method_cls = methods.METHODS.get(method)
    task_cls = tasks.TASKS.get(spec.task)
    values: dict[str, Any] = {}
    values.update(method_cls.defaults_for(given))
    if "input_shape" not in given:
        values["input_shape"] = tuple(spec.default_input_shape)
    values.update(spec.defaults)
    values.update(spec.method_defaults.get(method, {}))
    values.update(method_cls.fixed)
    if ("num_epoch" in given or "num_batch" in given) and "train_steps" not in given:
        values["train_steps"] = 0
    values.update(given)
    values.setdefault("backbone", defaults.backbone)
    # Settings that follow from others (e.g. the input side of a pretrained backbone).
    values.update({k: v for k, v in method_cls.derived(values).items() if k not in given})
    values["method"], values["dataset"] = method, dataset

    fields = {f.name for f in dataclasses.fields(Config)} - {"options"}
    own = {o.name: o for o in (*_declared_options(method_cls), *_declared_options(task_cls))}
    options = {name: opt.default for name, opt in own.items()}
    owners = option_owners()
    kw: dict[str, Any] = {}
    for key, value in values.items():
        if key in fields:
            kw[key] = value
        elif key in own:
            options[key] = value
        elif key in owners:
            if key in given:
                raise ConfigError(
                    f"--{key} is an option of {' and '.join(owners[key][1])}; it does nothing "
                    f"for --method={method} on --dataset={dataset}"
                )
        else:
            raise ConfigError(f"unknown setting '{key}'")
    try:
        cfg = Config(**kw, options=options)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    return validate(cfg)


def _check_trainable_backbone(cfg: Config, method: str) -> None:
    """A training method starts from a pretrained --backbone only if it has a trainable trunk."""
    spec = BACKBONES.get(cfg.backbone)
    if not spec.pretrained or methods.METHODS.get(method).fixed.get("train_steps") == 0:
        return
    if spec.trainable is None:
        raise ValueError(
            f"--backbone={spec.name} is for the frozen-feature methods (imagenet, patchcore); "
            f"--method={method} trains resnet18 or fine-tunes efficientnet_lite0"
        )
    spec.check(cfg)


def validate(cfg: Config) -> Config:
    """Checks every field and option; returns ``cfg`` with canonical names and its precision
    resolved (``auto`` -> what this machine computes fast).

    Nothing here reads data or writes files, so a run can check everything before its first
    side effect (a deleted or created file).

    Raises:
      ConfigError: with a one-line message naming the flag, the bad value and what is valid.
    """
    method = _canonical(methods.METHODS, cfg.method)
    dataset = _canonical(datasets.DATASETS, cfg.dataset)
    net = _canonical(NETWORKS, cfg.net_type)
    backbone = _canonical(BACKBONES, cfg.backbone)
    try:
        sched = schedules.canonical_schedule(cfg.sched_type)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for c in cfg.classifiers:
        _canonical(scorers.SCORERS, c)
    unknown = sorted(set(cfg.options) - set(option_owners()))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    precision = resolve_precision(cfg.precision)
    check_fields(cfg.replace(precision=precision))
    try:
        views = grammar.parse(cfg.aug_list)
        if cfg.aug_list_for_test:
            grammar.parse(cfg.aug_list_for_test)
        distaug = datasets.validate_distaug(cfg.distaug_type)
        category = datasets.validate_category(dataset, cfg.category)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    task_cls = tasks.TASKS.get(datasets.DATASETS.get(dataset).task)
    canonical = cfg.replace(
        method=method,
        dataset=dataset,
        precision=precision,
        net_type=net,
        backbone=backbone,
        sched_type=sched,
        distaug_type=distaug,
        category=category,
    )
    try:
        methods.METHODS.get(method).check_config(cfg, len(views))
        _check_trainable_backbone(cfg, method)
        task_cls.check_config(cfg)
        # Op parameters that depend on the image size (crop999999 at 32 px) are checked when
        # the run builds its task and views, once (``training.build.task_for``), before it
        # writes or deletes anything.
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    return canonical
