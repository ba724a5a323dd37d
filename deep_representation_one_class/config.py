"""The one typed, immutable run configuration, its validation and its JSON form.

``Config`` is built once (from flags in ``main.py`` or directly in Python), validated, written
to ``<run>/config.json`` and never mutated. Values that depend on the data (steps per epoch)
are computed by functions in ``train_lib`` and never written back.

Method-dependent defaults: the augmentation lists, head and batch size default to ``None`` on
the command line and are filled from ``METHOD_DEFAULTS`` so that the bare
``python train_and_eval_loop.py --method=rotation`` is a sensible quick CPU run. The paper's
settings are in ``scripts/run_*.sh``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

# The reference scripts' augmentation (spec §2): crop, flip, colour jitter, grey, blur.
PAPER_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
ROTATIONS = ",+rotate90,+rotate180,+rotate270"

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "contrastive": {
        "aug_list": PAPER_AUG + ",+",
        "aug_list_for_test": None,
        "head_dims": (512, 512, 128),
        "latent_dim": 0,
        "batch_size": 64,
    },
    "rotation": {
        "aug_list": PAPER_AUG + ROTATIONS,
        "aug_list_for_test": "x" + ROTATIONS,
        "head_dims": (512, 512),
        "latent_dim": 4,
        "batch_size": 32,
        # 4 views per image: 4 epochs see as many images as contrastive's 8 (2 views).
        "num_epoch": 4,
    },
    # Baselines of Table 7 (methods/rotnet.py, denoising.py, imagenet.py). "num_epoch", when
    # present, replaces the quick default number of epochs.
    "rotnet": {
        "aug_list": PAPER_AUG + ROTATIONS,
        "aug_list_for_test": "x" + ROTATIONS,
        "head_dims": (),
        "latent_dim": 4,
        "batch_size": 32,
    },
    "denoising": {
        "aug_list": "x",
        "aug_list_for_test": None,
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 64,
    },
    "imagenet": {
        "aug_list": "x",
        "aug_list_for_test": None,
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 64,
        "num_epoch": 0,  # fixed features: evaluation only
    },
}

# Quick defaults per dataset, applied to flags the user did not give (main.py). MVTec AD
# trains on 32x32 patches of 256x256 images: 15 x 100 steps of 32 patches at lr 0.01 (lr 0.1
# gave image AUROC 75-78 on bottle), scored by the density scorers that scale to patch banks.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mvtec": {
        "batch_size": 32,
        "num_epoch": 15,
        "num_batch": 100,
        "learning_rate": 0.01,
        "patch_bank": 10000,
        "classifiers": ("gde", "kde", "auc"),
    },
}

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
RESNET_STAGES = ("conv2", "conv3", "conv4", "conv5")
OPTIMIZERS = ("sgd", "adam")
PATCH_AGGS = ("max", "mean")
SCHED_FREQS = ("epoch", "step")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which flag and what is valid."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run. Field names are the command-line flag names."""

    # What to learn on.
    method: str = "contrastive"
    dataset: str = "fmnistood"
    category: str = "0"
    root: str | None = None
    is_validation: bool = False
    input_shape: tuple[int, int, int] = (32, 32, 3)
    max_cls: int = 20000
    cache_dir: str | None = None
    skip_corrupt: bool = False
    # Augmentation.
    aug_list: str = METHOD_DEFAULTS["contrastive"]["aug_list"]
    aug_list_for_test: str | None = None
    distaug_type: str = "1"
    blur_as_reference: bool = False
    # Model.
    net_type: str = "resnet18"
    net_width: float = 0.25
    head_dims: tuple[int, ...] = (512, 512, 128)
    latent_dim: int = 0
    sync_bn: bool = False
    # Objective and optimisation.
    temperature: float = 0.2
    symmetric_loss: bool = False
    optim_type: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    regularize_bn: bool = True
    sched_type: str = "cos"
    sched_freq: str = "epoch"
    sched_step_size: int = 1
    sched_gamma: float = 0.995
    sched_min_rate: float = 0.0
    sched_level: int = 7
    num_epoch: int = 8
    num_batch: int = 0
    batch_size: int = 64
    # Run mechanics.
    seed: int = 0
    model_dir: str = ""
    ckpt_epoch: int = 1
    ckpt_steps: int = 0
    eval_every: int = 0
    eval_batch_size: int = 256
    classifiers: tuple[str, ...] = ("auc", "kde", "gde", "kocsvm", "locsvm")
    precision: str = "float32"
    # Under a mixed precision, these ResNet stages still compute in float32. The last stage
    # produces the features every classifier reads; training it in bfloat16 cost 1.1-1.6 AUROC
    # points on the Fashion-MNIST main job (results/precision_parity.md).
    float32_stages: tuple[str, ...] = ("conv5",)
    strategy: str = "mirrored"
    deterministic: bool = False
    steps_per_call: int = 1
    jit_compile: bool = False
    force_init: bool = False
    # Baselines: local weights file of the ImageNet ResNet-50 (method imagenet).
    imagenet_weights: str | None = None
    # Patch-level tasks (MVTec AD): training patches, dense scoring and localisation.
    patch_size: int = 32
    patch_stride: int = 8
    patch_agg: str = "max"
    patch_bank: int = 20000
    smooth_sigma: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuilds a config from ``to_dict`` output (unknown keys are an error)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        kw = dict(d)
        for k in ("input_shape", "head_dims", "classifiers", "float32_stages"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def replace(self, **kw: Any) -> Config:
        return dataclasses.replace(self, **kw)


def num_views(aug_list: str) -> int:
    from deep_representation_one_class.augment import grammar

    return len(grammar.parse(aug_list))


def validate(cfg: Config) -> Config:
    """Checks every field; returns ``cfg`` with canonical names (method, dataset, schedule).

    Raises:
      ConfigError: with a one-line message naming the flag, the bad value and what is valid.
    """
    from deep_representation_one_class import datasets, methods
    from deep_representation_one_class.augment import grammar
    from deep_representation_one_class.distribute import STRATEGIES
    from deep_representation_one_class.evaluation import scorers
    from deep_representation_one_class.models import NETWORKS
    from deep_representation_one_class.utils import schedules

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    try:
        method = methods.METHODS.canonical(cfg.method)
        dataset = datasets.DATASETS.canonical(cfg.dataset)
        net = NETWORKS.canonical(cfg.net_type)
        sched = schedules.canonical_schedule(cfg.sched_type)
        for c in cfg.classifiers:
            scorers.SCORERS.canonical(c)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    need(
        len(cfg.input_shape) == 3 and all(int(v) > 0 for v in cfg.input_shape),
        f"--input_shape must be three positive integers H,W,C, got {cfg.input_shape}",
    )
    need(
        cfg.input_shape[2] in (1, 3),
        f"--input_shape channels must be 1 or 3, got {cfg.input_shape[2]}",
    )
    need(
        cfg.input_shape[0] >= 8 and cfg.input_shape[1] >= 8,
        f"--input_shape must be at least 8x8, got {cfg.input_shape}",
    )
    need(cfg.batch_size > 0, f"--batch_size must be > 0, got {cfg.batch_size}")
    need(cfg.num_epoch >= 0, f"--num_epoch must be >= 0 (0 = evaluate only), got {cfg.num_epoch}")
    need(cfg.num_batch >= 0, f"--num_batch must be >= 0 (0 = from data), got {cfg.num_batch}")
    need(cfg.net_width > 0, f"--net_width must be > 0, got {cfg.net_width}")
    need(all(d > 0 for d in cfg.head_dims), f"--head_dims must be positive, got {cfg.head_dims}")
    need(cfg.latent_dim >= 0, f"--latent_dim must be >= 0, got {cfg.latent_dim}")
    need(cfg.learning_rate > 0, f"--learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.weight_decay >= 0, f"--weight_decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.temperature > 0, f"--temperature must be > 0, got {cfg.temperature}")
    need(0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}")
    need(
        cfg.optim_type in OPTIMIZERS,
        f"unknown --optim_type '{cfg.optim_type}'; valid: {', '.join(OPTIMIZERS)}",
    )
    need(
        cfg.sched_freq in SCHED_FREQS,
        f"unknown --sched_freq '{cfg.sched_freq}'; valid: {', '.join(SCHED_FREQS)}",
    )
    need(
        cfg.precision in PRECISIONS,
        f"unknown --precision '{cfg.precision}'; valid: {', '.join(PRECISIONS)}",
    )
    need(
        set(cfg.float32_stages) <= set(RESNET_STAGES),
        f"unknown --float32_stages {list(cfg.float32_stages)}; valid: any of "
        f"{', '.join(RESNET_STAGES)}, or empty for none",
    )
    need(
        cfg.strategy in STRATEGIES,
        f"unknown --strategy '{cfg.strategy}'; valid: {', '.join(STRATEGIES)}",
    )
    need(cfg.steps_per_call >= 1, f"--steps_per_call must be >= 1, got {cfg.steps_per_call}")
    need(cfg.eval_batch_size > 0, f"--eval_batch_size must be > 0, got {cfg.eval_batch_size}")
    need(cfg.ckpt_epoch >= 0 and cfg.ckpt_steps >= 0, "--ckpt_epoch/--ckpt_steps must be >= 0")
    need(cfg.max_cls > 0, f"--max_cls must be > 0, got {cfg.max_cls}")
    need(
        cfg.patch_size >= 8 and cfg.patch_stride >= 1 and cfg.patch_bank > 0,
        "--patch_size must be >= 8, --patch_stride >= 1 and --patch_bank > 0",
    )
    need(
        cfg.patch_agg in PATCH_AGGS or re.fullmatch(r"top[1-9][0-9]*", cfg.patch_agg) is not None,
        f"unknown --patch_agg '{cfg.patch_agg}'; valid: {', '.join(PATCH_AGGS)}, topK",
    )
    try:
        views = grammar.parse(cfg.aug_list)
        if cfg.aug_list_for_test:
            grammar.parse(cfg.aug_list_for_test)
        distaug = datasets.validate_distaug(cfg.distaug_type)
        category = datasets.validate_category(dataset, cfg.category)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    try:
        methods.METHODS.get(method).check_config(cfg, len(views))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg.replace(
        method=method,
        dataset=dataset,
        net_type=net,
        sched_type=sched,
        distaug_type=distaug,
        category=category,
    )
