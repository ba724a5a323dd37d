"""The settings schema of a run: the typed, immutable ``Config``, its fields and their checks.

``Config`` holds every common setting of a run, with its help text (the command-line flags are
generated from these fields, see ``main.py``), plus ``options``: the settings that belong to
the run's method or task (``--temperature`` for contrastive, ``--patch_size`` for patch tasks),
declared next to their registrations. ``config.temperature`` reads an option like a field.

This module is a leaf: it imports nothing of the methods, datasets, tasks or TensorFlow, so any
module (and a tool that only reads a run's ``config.json``) can use the schema without loading
the registrations. It reads the catalog (``catalog.py``, which parses the plug-ins' descriptions
without importing them) for the default ``classifiers``; the flags that name a plug-in
(``catalog`` in a field's metadata) get the catalog's names appended to their help. What depends
on the registered plug-ins (their defaults, their options, canonical names, their checks,
``--precision=auto``) lives in ``resolve.py``: ``resolve.build(**given)`` is the one way to make
a run's config from what a user set.

``check_fields`` checks every field on its own (ranges, choices, shapes); ``resolve.validate``
runs it and then the plug-ins' checks.

Longer than the package's ~450-line module budget on purpose: every field carries its flag's
help text and every field check sits in ``check_fields``, so a setting is declared, documented
and checked in this one place (the flags are generated from it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

from deep_representation_one_class import catalog
from deep_representation_one_class.errors import ConfigError

__all__ = [
    "EVAL_PRECISIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "RESIZE_POLICIES",
    "RESNET_STAGES",
    "RUNTIME_KEY",
    "SCHED_FREQS",
    "STRATEGIES",
    "Config",
    "ConfigError",
    "check_fields",
    "eval_compute_precision",
    "field_default",
    "field_help",
    "flag_fields",
]

# What a run computes in (config.json always records one of these) ...
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# ... and what --precision accepts: "auto" is resolved to one of PRECISIONS by resolve.build.
PRECISION_CHOICES = (*PRECISIONS, "auto")
# What the forward passes whose numbers a user sees (evaluation features, report, score,
# explain, exports) compute in: float32 from the float32 master weights, or the training
# precision ("train").
EVAL_PRECISIONS = ("float32", "train")
# What a config.json written before --eval_precision existed means: those runs extracted their
# evaluated features in the training precision, and are served that way.
LEGACY_EVAL_PRECISION = "train"
# How images of other sizes or aspects reach --input_shape (datasets/images.py implements them).
RESIZE_POLICIES = ("squash", "fit", "same_scale")
RESNET_STAGES = ("conv2", "conv3", "conv4", "conv5")
OPTIMIZERS = ("sgd", "adam")
SCHED_FREQS = ("epoch", "step")
STRATEGIES = ("default", "mirrored", "multi_worker")
# Key of config.json holding how the process ran (utils.hardware.runtime_record); not a setting.
RUNTIME_KEY = "runtime"
# halfcos: lr = cos(pi t / T * level / 16) stays >= 0 up to level 8; above it the clipped cosine
# drops to 0 mid-run and the learning rate jumps between 0 and its base value.
MAX_SCHED_LEVEL = 8


def _field(default: Any, help: str, **meta: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **meta})


_BY_METHOD = " Default: depends on --method (docs/usage.md)."


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run. Field names are the command-line flag names."""

    # What to learn on.
    method: str = _field(
        "contrastive",
        "Representation learner (case-insensitive; aliases in brackets). Default: contrastive, "
        "or the dataset's own (folder: imagenet, mvtec: patchcore).",
        catalog="method",
    )
    dataset: str = _field(
        "fmnistood",
        "One-class benchmark, your images (folder), or the MVTec AD layout (mvtec).",
        catalog="dataset",
    )
    category: str = _field(
        "0",
        "Inlier class: an index or class name (CIFAR, f-MNIST, DvC), an attribute (CelebA) or "
        "a folder name (folder, mvtec).",
    )
    root: str | None = _field(
        None,
        "Data root: the folder with the dataset's files. Default: per dataset (docs/datasets.md).",
    )
    is_validation: bool = _field(
        False,
        "Evaluate on a 10% inlier hold-out plus as many outliers sampled from the other training "
        "classes instead of the test split (for choosing recipes).",
    )
    input_shape: tuple[int, int, int] = _field(
        (32, 32, 3),
        "H,W,C the images are resized to (square). Default: the dataset's (python -m "
        "deep_representation_one_class.catalog lists them).",
    )
    resize_policy: str = _field(
        "squash",
        "How images of other sizes/aspects reach --input_shape (folder, mvtec): squash (resize, "
        "aspect lost), fit (per image, aspect kept, padded) or same_scale (one factor for all "
        "images, aspect and relative scale kept, padded; the mvtec default). docs/defects.md, "
        "'Images of any size'.",
        choices=RESIZE_POLICIES,
    )
    max_cls: int = _field(20000, "Cap on the classifier-train inliers (reference: 20,000).")
    cache_dir: str | None = _field(
        None,
        "Where decoded datasets are cached (default $DROC_CACHE_DIR or "
        "~/.cache/deep_representation_one_class; empty = no cache).",
    )
    skip_corrupt: bool = _field(
        False, "Skip unreadable image files (with a warning) instead of failing."
    )
    # Augmentation.
    aug_list: str = _field(
        "",
        "Training views: comma-separated augmentation strings (grammar: docs/usage.md)."
        + _BY_METHOD,
    )
    aug_list_for_test: str = _field(
        "",
        "Test-time views (e.g. x,+rotate90,...); empty = the un-augmented image." + _BY_METHOD,
    )
    distaug_type: str = _field(
        "1",
        "Distribution augmentation of the training inliers: rot (x4), hflip (x2), vflip (x2), "
        "or 1..8 (first k of orig, hflip, rot90, rot90+hflip, ...). 1 = none.",
    )
    blur_as_reference: bool = _field(
        False, "Reproduce the reference's blur bug (blur never applied). Off: blur really blurs."
    )
    augment_as_reference: bool = _field(
        False,
        "Reproduce every augmentation behaviour of the reference: blur never applied, colour "
        "jitter unclipped with one component order per view for the whole run. Off: the fixed "
        "behaviours (docs/differences.md).",
    )
    # Model.
    backbone: str = _field(
        "resnet18",
        "Feature network: resnet18 (the --net_type ResNet, trained from scratch), "
        "efficientnet_lite0 (ImageNet weights from a pip package, offline; frozen for "
        "imagenet/patchcore, fine-tuned by the training methods), efficientnet_lite2 (larger, "
        "offline, frozen methods only), efficientnet_lite0+lite2 (both, concatenated; imagenet "
        "only) or resnet50_imagenet (Keras's download; frozen methods only). Default: "
        "efficientnet_lite2 for imagenet, efficientnet_lite0 for patchcore "
        "(docs/pretrained.md).",
    )
    net_type: str = _field(
        "resnet18", "Backbone: resnet10/18/34/50/101/152 (reference spelling ResNet18 accepted)."
    )
    net_width: float = _field(0.25, "Width multiplier of the ResNet stages (paper: 1).")
    head_dims: tuple[int, ...] = _field(
        (), "MLP head sizes, e.g. 512,512,128; 'none' = no head." + _BY_METHOD
    )
    latent_dim: int = _field(0, "Size of the logits layer (0 = none)." + _BY_METHOD)
    sync_bn: bool = _field(False, "Synchronise BatchNorm statistics across replicas.")
    # Optimisation.
    optim_type: str = _field("sgd", "Optimizer: sgd or adam.", choices=OPTIMIZERS)
    learning_rate: float = _field(0.1, "Base learning rate (paper: 0.01).")
    momentum: float = _field(0.9, "SGD momentum in [0, 1).")
    nesterov: bool = _field(False, "Nesterov momentum for SGD.")
    weight_decay: float = _field(3e-4, "Coefficient of the L2 loss term (>= 0).")
    regularize_bn: bool = _field(
        True,
        "Include BatchNorm gamma/beta in the L2 term (the reference's flag worked backwards; "
        "see docs/differences.md).",
    )
    sched_type: str = _field("cos", "LR schedule: cos, const, linear, step, halfcos.")
    sched_freq: str = _field(
        "epoch", "Update the LR per epoch (piecewise constant) or per step.", choices=SCHED_FREQS
    )
    sched_step_size: int = _field(1, "step schedule: decay every N epochs (or steps), N >= 1.")
    sched_gamma: float = _field(0.995, "step schedule: decay factor in (0, 1].")
    sched_min_rate: float = _field(0.0, "cos/linear: final LR as a fraction of the base, [0, 1].")
    sched_level: int = _field(7, f"halfcos level, 1..{MAX_SCHED_LEVEL}.")
    train_steps: int = _field(
        0,
        "Training budget in steps, whatever the dataset's size (the quick defaults use 750); "
        "0 = --num_epoch epochs. Giving --num_epoch or --num_batch alone switches to epochs.",
    )
    num_epoch: int = _field(
        8,
        "Training epochs when --train_steps=0 (paper: 2048); 0 with --train_steps=0 = evaluate "
        "the initial (or latest checkpointed) weights only.",
    )
    num_batch: int = _field(0, "Steps per epoch; 0 = training images // batch_size.")
    batch_size: int = _field(
        64, "Global batch (images, or pairs for contrastive), split across replicas." + _BY_METHOD
    )
    # Run mechanics.
    seed: int = _field(
        0, "Seed of the data order, augmentations and init (always applied, 0 included)."
    )
    model_dir: str = _field(
        "",
        "Run folder (checkpoints, tb/, summary.json). Default: "
        "runs/<method>[_da-<type>]/<dataset>/c<category>/s<seed>.",
        flag=False,
    )
    ckpt_epoch: int = _field(1, "Checkpoint every N epochs (0 = only at the end).")
    ckpt_steps: int = _field(0, "Also checkpoint every N steps (0 = off).")
    eval_every: int = _field(
        0, "Also evaluate every N epochs (AUROC curves in TensorBoard); 0 = only at the end."
    )
    eval_batch_size: int = _field(256, "Images per forward pass of feature extraction.")
    report: bool = _field(
        True,
        "Write report.html (+ report_files/: figures, test images, tables) at the end of the "
        "run; python -m deep_representation_one_class.report writes it later.",
    )
    classifiers: tuple[str, ...] = dataclasses.field(
        default_factory=lambda: catalog.default_scorers("train"),
        metadata={
            "help": "One-class classifiers (auc = 1-NN cosine distance, the reference's name). "
            "Default: every scorer the catalog marks as a training default.",
            "catalog": "scorer",
        },
    )
    cls_holdout: float = _field(
        0.1,
        "Share of the classifier-train inliers held out of every classifier's fit; their scores "
        "set the decision thresholds. 0 = fit on all (the reference's protocol, no thresholds).",
    )
    precision: str = _field(
        "float32",
        "Compute precision: float32, mixed_bfloat16, mixed_float16, or auto (mixed_bfloat16 "
        "where the hardware computes bfloat16 natively, float32 elsewhere; the quick defaults). "
        "Mixed modes keep losses, normalisation and similarities in float32.",
        choices=PRECISION_CHOICES,
    )
    eval_precision: str = _field(
        "float32",
        "Precision of every forward pass whose numbers you see: evaluation features (AUROCs, "
        "thresholds), report, score, explain and exports. float32 (from the float32 weights "
        "a mixed --precision keeps, so results do not depend on the CPU's bfloat16 support) or "
        "train (the --precision of training: faster evaluation, served the same way).",
        choices=EVAL_PRECISIONS,
    )
    # The last stage produces the features every classifier reads; training it in bfloat16 cost
    # 1.1-1.6 AUROC points on the Fashion-MNIST main job (results/precision_parity.md).
    float32_stages: tuple[str, ...] = _field(
        ("conv5",),
        "ResNet stages (conv2..conv5) that stay float32 under a mixed --precision; empty for "
        "none. The default keeps the last stage, whose output is the evaluated feature, float32.",
    )
    strategy: str = _field(
        "mirrored", "tf.distribute strategy (multi_worker reads TF_CONFIG).", choices=STRATEGIES
    )
    deterministic: bool = _field(
        False, "Enable TF op determinism (bit-exact reruns and resumes on CPU; slower)."
    )
    steps_per_call: int = _field(
        1, "Train steps per tf.function call (fewer Python round trips; useful on GPUs)."
    )
    jit_compile: bool = _field(False, "Compile the train step with XLA.")
    force_init: bool = _field(
        False,
        "Start over: delete the files a previous run wrote in --model_dir (only in a folder "
        "carrying the run marker; nothing else is deleted).",
    )
    # The run's method and task options (see the module docstring).
    options: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"flag": False}, compare=True
    )

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is not a field: method and task options read like fields.
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(
            f"Config has no field or option '{name}' (options of this run: "
            f"{', '.join(sorted(options or ())) or 'none'})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict: every field, then every option, lists for tuples."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        d.update(self.options)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], options: Collection[str] | None = None) -> Config:
        """Rebuilds a config from ``to_dict`` output (a run's ``config.json``).

        Keys that are not fields are options. With ``options`` (the option names the registered
        plug-ins declare, ``resolve.load`` passes them) any other key is an error. Older files
        lack newer fields, which take their defaults, except ``eval_precision``: those runs
        evaluated in their training precision (``train``) and are served that way. Their
        ``aug_list_for_test: null`` means "the un-augmented image", now written "".
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        # config.json's record of the process that ran (allocator, threads) is not a setting.
        d = {k: v for k, v in d.items() if k != RUNTIME_KEY}
        owners = set(d) - names if options is None else set(options)
        unknown = sorted(k for k in d if k not in names and k not in owners)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("input_shape", "head_dims", "classifiers", "float32_stages"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        if "eval_precision" not in kw:
            kw["eval_precision"] = LEGACY_EVAL_PRECISION
        if kw.get("aug_list_for_test") is None:
            kw["aug_list_for_test"] = ""
        # Runs written before --backbone existed: their frozen features were ResNet-50's.
        if "backbone" not in kw and kw.get("method") in ("imagenet", "patchcore"):
            kw["backbone"] = "resnet50_imagenet"
        options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in owners}
        try:
            return cls(**kw, options=options)
        except TypeError as e:
            raise ConfigError(f"malformed config: {e}") from None

    def replace(self, **kw: Any) -> Config:
        """A copy with fields (or options) replaced; not validated (``resolve.validate`` checks
        that every option is declared by a registered plug-in)."""
        fields = {f.name for f in dataclasses.fields(self)}
        opts = {k: v for k, v in kw.items() if k not in fields}
        if opts:
            kw = {k: v for k, v in kw.items() if k in fields}
            kw["options"] = {**self.options, **opts}
        return dataclasses.replace(self, **kw)


def eval_compute_precision(cfg: Config) -> str:
    """The precision (one of ``PRECISIONS``) of the run's evaluation and serving forward passes:
    float32 unless ``--eval_precision=train``, then the (resolved) training precision."""
    return "float32" if cfg.eval_precision == "float32" else cfg.precision


def flag_fields() -> list[dataclasses.Field]:
    """The ``Config`` fields that are command-line flags (all but ``model_dir``/``options``)."""
    return [f for f in dataclasses.fields(Config) if f.metadata.get("flag", True)]


def field_default(field: dataclasses.Field) -> Any:
    """A field's default value (its factory's value for the catalog-derived ones)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def field_help(field: dataclasses.Field) -> str:
    """A field's flag help; a field naming a plug-in lists the catalog's names."""
    kind = field.metadata.get("catalog")
    text = field.metadata["help"]
    return f"{text} Valid: {catalog.summary(kind)}." if kind else text


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def check_fields(cfg: Config) -> None:
    """Checks every field on its own: ranges, choices and shapes (not the plug-ins' names or
    options: ``resolve.validate`` runs this and then those checks).

    ``cfg.precision`` must be resolved already (``auto`` is resolved by ``resolve.validate``).

    Raises:
      ConfigError: with a one-line message naming the flag, the bad value and what is valid.
    """
    _need(
        len(cfg.input_shape) == 3 and all(int(v) > 0 for v in cfg.input_shape),
        f"--input_shape must be three positive integers H,W,C, got {cfg.input_shape}",
    )
    h, w, c = (int(v) for v in cfg.input_shape)
    _need(c in (1, 3), f"--input_shape channels must be 1 or 3, got {c}")
    _need(h >= 8 and w >= 8, f"--input_shape must be at least 8x8, got {cfg.input_shape}")
    # The views (square crops, 90-degree rotations) and the models assume square images; a
    # non-square shape was silently squashed to H x H before.
    _need(
        h == w,
        f"--input_shape must be square (H == W), got {h}x{w}; images of any aspect are resized "
        "to it",
    )
    _need(
        cfg.resize_policy in RESIZE_POLICIES,
        f"unknown --resize_policy '{cfg.resize_policy}'; valid: {', '.join(RESIZE_POLICIES)}",
    )
    _need(cfg.batch_size > 0, f"--batch_size must be > 0, got {cfg.batch_size}")
    _need(cfg.train_steps >= 0, f"--train_steps must be >= 0, got {cfg.train_steps}")
    _need(cfg.num_epoch >= 0, f"--num_epoch must be >= 0 (0 = evaluate only), got {cfg.num_epoch}")
    _need(cfg.num_batch >= 0, f"--num_batch must be >= 0 (0 = from data), got {cfg.num_batch}")
    _need(cfg.net_width > 0, f"--net_width must be > 0, got {cfg.net_width}")
    _need(all(d > 0 for d in cfg.head_dims), f"--head_dims must be positive, got {cfg.head_dims}")
    _need(cfg.latent_dim >= 0, f"--latent_dim must be >= 0, got {cfg.latent_dim}")
    _need(cfg.learning_rate > 0, f"--learning_rate must be > 0, got {cfg.learning_rate}")
    _need(cfg.weight_decay >= 0, f"--weight_decay must be >= 0, got {cfg.weight_decay}")
    _need(0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}")
    _need(
        cfg.optim_type in OPTIMIZERS,
        f"unknown --optim_type '{cfg.optim_type}'; valid: {', '.join(OPTIMIZERS)}",
    )
    _need(
        cfg.sched_freq in SCHED_FREQS,
        f"unknown --sched_freq '{cfg.sched_freq}'; valid: {', '.join(SCHED_FREQS)}",
    )
    _need(
        cfg.sched_step_size >= 1,
        f"--sched_step_size must be >= 1 (epochs or steps between decays), got "
        f"{cfg.sched_step_size}",
    )
    _need(0 < cfg.sched_gamma <= 1, f"--sched_gamma must be in (0, 1], got {cfg.sched_gamma}")
    _need(
        0 <= cfg.sched_min_rate <= 1,
        f"--sched_min_rate must be in [0, 1], got {cfg.sched_min_rate}",
    )
    _need(
        1 <= cfg.sched_level <= MAX_SCHED_LEVEL,
        f"--sched_level must be in 1..{MAX_SCHED_LEVEL} (above it the halfcos learning rate "
        f"jumps between 0 and its base), got {cfg.sched_level}",
    )
    _need(
        cfg.precision in PRECISIONS,
        f"unknown --precision '{cfg.precision}'; valid: {', '.join(PRECISION_CHOICES)}",
    )
    _need(
        cfg.eval_precision in EVAL_PRECISIONS,
        f"unknown --eval_precision '{cfg.eval_precision}'; valid: {', '.join(EVAL_PRECISIONS)}",
    )
    _need(
        set(cfg.float32_stages) <= set(RESNET_STAGES),
        f"unknown --float32_stages {list(cfg.float32_stages)}; valid: any of "
        f"{', '.join(RESNET_STAGES)}, or empty for none",
    )
    _need(
        cfg.strategy in STRATEGIES,
        f"unknown --strategy '{cfg.strategy}'; valid: {', '.join(STRATEGIES)}",
    )
    _need(cfg.steps_per_call >= 1, f"--steps_per_call must be >= 1, got {cfg.steps_per_call}")
    _need(cfg.eval_batch_size > 0, f"--eval_batch_size must be > 0, got {cfg.eval_batch_size}")
    _need(cfg.ckpt_epoch >= 0 and cfg.ckpt_steps >= 0, "--ckpt_epoch/--ckpt_steps must be >= 0")
    _need(cfg.eval_every >= 0, f"--eval_every must be >= 0, got {cfg.eval_every}")
    _need(cfg.max_cls > 0, f"--max_cls must be > 0, got {cfg.max_cls}")
    _need(0 <= cfg.cls_holdout < 0.5, f"--cls_holdout must be in [0, 0.5), got {cfg.cls_holdout}")
