"""Command line: the only module that defines absl flags.

``python train_and_eval_loop.py --method=contrastive`` (or the ``droc-train`` console script)
parses the flags, builds and validates one ``Config``, and calls ``train_lib.run``. Every flag
of the reference keeps its name and meaning (spec §2); see ``--helpfull`` for the rest.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from deep_representation_one_class import cli
from deep_representation_one_class import config as config_lib

_D = config_lib.Config()
_METHOD_DEF = "default: depends on --method (see README)"

flags.DEFINE_string(
    "model_dir",
    None,
    "Run folder (checkpoints, tb/, summary.json). Default: "
    "runs/<method>[_da-<type>]/<dataset>/c<category>/s<seed>.",
)
flags.DEFINE_string("ckpt_prefix", "", "Optional sub-folder of --model_dir (reference flag).")
flags.DEFINE_string(
    "file_path", None, "Optional run sub-folder under model_dir/ckpt_prefix (reference flag)."
)
flags.DEFINE_string(
    "root",
    None,
    "Data root: folder with the dataset's files (CIFAR pickles, "
    "Fashion-MNIST .gz, image folders, ...). Default: per dataset, see README.",
)
flags.DEFINE_string(
    "method",
    _D.method,
    "Representation learner: contrastive or rotation "
    "(reference alias: UnsupEmbed); baselines: rotnet, denoising, imagenet. Case-insensitive.",
)
flags.DEFINE_string(
    "dataset",
    _D.dataset,
    "One-class benchmark: fmnistood, cifar10ood, "
    "cifar20ood, cifar100ood, dogvscatood, celeba, folder, fake.",
)
flags.DEFINE_string(
    "category",
    _D.category,
    "Inlier class: an index (CIFAR, f-MNIST, DvC), an "
    "attribute name (CelebA) or a folder name (folder).",
)
flags.DEFINE_bool(
    "is_validation",
    False,
    "Evaluate on a 10% inlier hold-out plus as many sampled outliers instead of the test split.",
)
flags.DEFINE_string(
    "aug_list",
    None,
    f"Training views, comma-separated augmentation strings (grammar in README). {_METHOD_DEF}.",
)
flags.DEFINE_string(
    "aug_list_for_test",
    None,
    f"Test-time views (e.g. x,+rotate90,...); empty = the un-augmented image. {_METHOD_DEF}.",
)
flags.DEFINE_list(
    "input_shape",
    None,
    "H,W,C the images are resized to. Default: the "
    "dataset's (32,32,3 for CIFAR/f-MNIST, 64,64,3 for DvC/CelebA, 256,256,3 "
    "for MVTec).",
)
flags.DEFINE_string(
    "distaug_type",
    "1",
    "Distribution augmentation of the training inliers: "
    "rot (x4), hflip (x2), vflip (x2), or 1..8 (first k of orig, hflip, rot90, "
    "rot90+hflip, ...). 1 = none.",
)
flags.DEFINE_bool(
    "blur_as_reference",
    False,
    "Reproduce the reference's blur bug (blur never applied). Off: blur really blurs.",
)
flags.DEFINE_string(
    "net_type",
    _D.net_type,
    "Backbone: resnet10/18/34/50/101/152 (reference spelling ResNet18 accepted).",
)
flags.DEFINE_float("net_width", _D.net_width, "Width multiplier of the ResNet stages (paper: 1).")
flags.DEFINE_list(
    "head_dims", None, f"MLP head sizes, e.g. 512,512,128. {_METHOD_DEF}; 'none' = no head."
)
flags.DEFINE_integer("latent_dim", None, f"Size of the logits layer (0 = none). {_METHOD_DEF}.")
flags.DEFINE_bool("sync_bn", False, "Synchronise BatchNorm statistics across replicas.")
flags.DEFINE_float("temperature", _D.temperature, "Contrastive softmax temperature (> 0).")
flags.DEFINE_bool(
    "symmetric_loss",
    False,
    "Contrastive: SimCLR's symmetric NT-Xent instead of "
    "the reference's one-directional cross-view InfoNCE.",
)
flags.DEFINE_enum("optim_type", _D.optim_type, config_lib.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Base learning rate (paper: 0.01).")
flags.DEFINE_float("momentum", _D.momentum, "SGD momentum in [0, 1).")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum for SGD.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "Coefficient of the L2 loss term.")
flags.DEFINE_bool(
    "regularize_bn",
    _D.regularize_bn,
    "Include BatchNorm gamma/beta in the L2 "
    "term (the reference's flag worked backwards; see README).",
)
flags.DEFINE_string("sched_type", _D.sched_type, "LR schedule: cos, const, linear, step, halfcos.")
flags.DEFINE_enum(
    "sched_freq",
    _D.sched_freq,
    config_lib.SCHED_FREQS,
    "Update the LR per epoch (piecewise constant) or per step.",
)
flags.DEFINE_integer("sched_step_size", 1, "step schedule: decay every N epochs (or steps).")
flags.DEFINE_float("sched_gamma", 0.995, "step schedule: decay factor.")
flags.DEFINE_float("sched_min_rate", 0.0, "cos/linear: final LR as a fraction of the base.")
flags.DEFINE_integer("sched_level", 7, "halfcos level (<= 8).")
flags.DEFINE_integer(
    "num_epoch",
    None,
    "Training epochs (paper: 2048); 0 = evaluate the initial (or latest checkpointed) weights "
    f"only. Default: {_D.num_epoch} divided by the distribution-augmentation factor (the same "
    "number of steps).",
)
flags.DEFINE_integer("num_batch", 0, "Steps per epoch; 0 = training images // batch_size.")
flags.DEFINE_integer(
    "batch_size",
    None,
    f"Global batch (images, or pairs for contrastive), split across replicas. {_METHOD_DEF}.",
)
flags.DEFINE_integer(
    "seed",
    _D.seed,
    "Seed of the data order, augmentations and init "
    "(always applied; the reference skipped seeding for 0).",
)
flags.DEFINE_bool(
    "force_init",
    False,
    "Delete an existing run folder (only one carrying the run marker) and start over.",
)
flags.DEFINE_integer("ckpt_epoch", _D.ckpt_epoch, "Checkpoint every N epochs (0 = only at end).")
flags.DEFINE_integer("ckpt_steps", 0, "Also checkpoint every N steps (0 = off).")
flags.DEFINE_integer(
    "eval_every",
    0,
    "Also evaluate every N epochs (AUROC curves in TensorBoard); 0 = only at the end.",
)
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Batch for feature extraction.")
flags.DEFINE_list(
    "classifiers",
    list(_D.classifiers),
    "One-class classifiers: auc (1-NN "
    "cosine), kde, gde, kocsvm (RBF OC-SVM), locsvm (linear OC-SVM).",
)
flags.DEFINE_integer("max_cls", 20000, "Cap on the classifier-train inliers (reference: 20k).")
flags.DEFINE_string(
    "cache_dir",
    None,
    "Where decoded datasets are cached (default ~/.cache/deep_representation_one_class).",
)
flags.DEFINE_bool(
    "skip_corrupt", False, "Skip unreadable image files (with a warning) instead of failing."
)
flags.DEFINE_enum(
    "precision",
    _D.precision,
    config_lib.PRECISIONS,
    "Compute precision; mixed modes keep losses, normalisation and similarities in float32.",
)
flags.DEFINE_list(
    "float32_stages",
    list(_D.float32_stages),
    "ResNet stages (conv2..conv5) that stay float32 under a mixed --precision; empty for none. "
    "The default keeps the last stage, whose output is the evaluated feature, in float32.",
)
flags.DEFINE_enum(
    "strategy",
    _D.strategy,
    ["default", "mirrored", "multi_worker"],
    "tf.distribute strategy (multi_worker reads TF_CONFIG).",
)
flags.DEFINE_bool(
    "deterministic",
    False,
    "Enable TF op determinism (bit-exact reruns and resumes on CPU; slower).",
)
flags.DEFINE_integer(
    "steps_per_call",
    _D.steps_per_call,
    "Train steps per tf.function call (fewer Python round trips; useful on GPUs).",
)
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer(
    "patch_size", 32, "Patch tasks (mvtec): side of the training/scoring patches (32 or 64)."
)
flags.DEFINE_integer("patch_stride", 8, "Patch tasks: stride of the dense test patches.")
flags.DEFINE_string(
    "patch_agg",
    "max",
    "Patch tasks: image score from patch scores: max, mean or topK (mean of the K largest).",
)
flags.DEFINE_integer(
    "patch_bank", 20000, "Patch tasks: training patches the one-class classifier is fit on."
)
flags.DEFINE_float(
    "smooth_sigma", 4.0, "Patch tasks: Gaussian sigma (pixels) smoothing the anomaly map."
)
flags.DEFINE_string(
    "imagenet_weights",
    None,
    "--method=imagenet: local Keras ResNet50 no-top weights file "
    "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5); nothing is downloaded.",
)
flags.DEFINE_bool("verbose", False, "Show full tracebacks on errors.")

FLAGS = flags.FLAGS


def _int_list(values, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(v)) for v in values)
    except ValueError:
        raise config_lib.ConfigError(
            f"--{flag} must be comma-separated integers, got {','.join(values)}"
        ) from None


def _default_epochs(distaug_type: str, base: int = _D.num_epoch) -> int:
    """The quick default keeps the *step* budget fixed: distribution augmentation multiplies the
    training set (and so the steps per epoch), so it gets proportionally fewer epochs."""
    from deep_representation_one_class import datasets

    try:
        factor = datasets.distaug_factor(datasets.validate_distaug(distaug_type))
    except ValueError:
        factor = 1  # reported properly by validate()
    return 0 if base == 0 else max(1, -(-base // factor))


def _input_shape(f) -> tuple[int, int, int]:
    if f.input_shape is not None:
        shape = _int_list(f.input_shape, "input_shape")
        if len(shape) != 3:
            raise config_lib.ConfigError(
                f"--input_shape must be H,W,C, got {','.join(f.input_shape)}"
            )
        return shape  # type: ignore[return-value]
    from deep_representation_one_class import datasets

    try:
        return tuple(datasets.DATASETS.get(f.dataset).default_input_shape)  # type: ignore
    except KeyError as e:
        raise config_lib.ConfigError(str(e.args[0])) from None


def default_model_dir(method: str, dataset: str, category: str, seed: int, distaug: str) -> str:
    name = method if distaug in ("", "1") else f"{method}_da-{distaug}"
    safe_cat = str(category).replace("/", "_").replace(" ", "_")
    return os.path.join("runs", name, dataset, f"c{safe_cat}", f"s{seed}")


def config_from_flags(f=FLAGS) -> config_lib.Config:
    """Builds and validates the Config from parsed flags (method defaults filled in)."""
    from deep_representation_one_class import methods

    try:
        method = methods.METHODS.canonical(f.method)
    except KeyError as e:
        raise config_lib.ConfigError(str(e.args[0])) from None
    defaults = config_lib.METHOD_DEFAULTS.get(method, config_lib.METHOD_DEFAULTS["contrastive"])
    head = defaults["head_dims"]
    if f.head_dims is not None:
        head = (
            ()
            if [v.lower() for v in f.head_dims] in (["none"], [""], [])
            else _int_list(f.head_dims, "head_dims")
        )
    cfg = config_lib.Config(
        method=method,
        dataset=f.dataset,
        category=f.category,
        root=f.root,
        is_validation=f.is_validation,
        input_shape=_input_shape(f),
        max_cls=f.max_cls,
        cache_dir=f.cache_dir,
        skip_corrupt=f.skip_corrupt,
        aug_list=f.aug_list if f.aug_list is not None else defaults["aug_list"],
        aug_list_for_test=(
            f.aug_list_for_test
            if f.aug_list_for_test is not None
            else defaults["aug_list_for_test"]
        )
        or None,
        distaug_type=f.distaug_type,
        blur_as_reference=f.blur_as_reference,
        net_type=f.net_type,
        net_width=f.net_width,
        head_dims=head,
        latent_dim=f.latent_dim if f.latent_dim is not None else defaults["latent_dim"],
        sync_bn=f.sync_bn,
        temperature=f.temperature,
        symmetric_loss=f.symmetric_loss,
        optim_type=f.optim_type,
        learning_rate=f.learning_rate,
        momentum=f.momentum,
        nesterov=f.nesterov,
        weight_decay=f.weight_decay,
        regularize_bn=f.regularize_bn,
        sched_type=f.sched_type,
        sched_freq=f.sched_freq,
        sched_step_size=f.sched_step_size,
        sched_gamma=f.sched_gamma,
        sched_min_rate=f.sched_min_rate,
        sched_level=f.sched_level,
        num_epoch=(
            f.num_epoch
            if f.num_epoch is not None
            else _default_epochs(f.distaug_type, defaults.get("num_epoch", _D.num_epoch))
        ),
        num_batch=f.num_batch,
        batch_size=f.batch_size if f.batch_size is not None else defaults["batch_size"],
        seed=f.seed,
        ckpt_epoch=f.ckpt_epoch,
        ckpt_steps=f.ckpt_steps,
        eval_every=f.eval_every,
        eval_batch_size=f.eval_batch_size,
        classifiers=tuple(f.classifiers),
        precision=f.precision,
        float32_stages=tuple(f.float32_stages),
        strategy=f.strategy,
        deterministic=f.deterministic,
        steps_per_call=f.steps_per_call,
        jit_compile=f.jit_compile,
        force_init=f.force_init,
        imagenet_weights=f.imagenet_weights,
        patch_size=f.patch_size,
        patch_stride=f.patch_stride,
        patch_agg=f.patch_agg,
        patch_bank=f.patch_bank,
        smooth_sigma=f.smooth_sigma,
    )
    cfg = _apply_dataset_defaults(cfg, f)
    cfg = config_lib.validate(cfg)
    model_dir = f.model_dir or default_model_dir(
        cfg.method, cfg.dataset, cfg.category, cfg.seed, cfg.distaug_type
    )
    model_dir = os.path.join(model_dir, f.ckpt_prefix or "", f.file_path or "")
    return cfg.replace(model_dir=os.path.normpath(model_dir))


def _apply_dataset_defaults(cfg: config_lib.Config, f) -> config_lib.Config:
    """Dataset-specific quick defaults (e.g. MVTec's patch training) for flags not given."""
    from deep_representation_one_class import datasets

    try:
        name = datasets.DATASETS.canonical(cfg.dataset)
    except KeyError:
        return cfg  # validate() reports it
    overrides = {
        k: v for k, v in config_lib.DATASET_DEFAULTS.get(name, {}).items() if not f[k].present
    }
    return cfg.replace(**overrides)


def main(argv) -> int:
    if len(argv) > 1:
        raise config_lib.ConfigError(
            f"unexpected arguments {argv[1:]}; flags look like --name=value"
        )
    from deep_representation_one_class import train_lib

    cfg = config_from_flags()
    logging.info("Run folder: %s", cfg.model_dir)
    result = train_lib.run(cfg)
    if result.status == "interrupted":
        return 1
    if not result.metrics and result.status in ("worker_done", "already_complete"):
        print(f"\nworker done (step {result.global_step}); the chief writes {result.model_dir}")
        return 0
    print(
        f"\n{cfg.method} on {cfg.dataset} category {cfg.category} "
        f"({result.status.replace('_', ' ')}, step {result.global_step}); run folder "
        f"{result.model_dir}"
    )
    print(train_lib.format_table(result.metrics))
    return 0


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line; a bad flag ends in one 'error:' line and exit code 2.

    (absl's own parser prints "FATAL Flags parsing error" and exits with 1.)
    """
    try:
        return FLAGS(argv)
    except flags.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg} (see --helpfull)", file=sys.stderr)
        sys.exit(cli.EXIT_USAGE)


def _guarded_main(argv) -> None:
    sys.exit(cli.guard(lambda: main(argv), verbose=FLAGS.verbose))


def run_cli() -> None:
    """Console-script entry point."""
    cli.quiet_tensorflow()
    cli.require_tensorflow()
    logging.set_verbosity(logging.INFO)
    app.run(_guarded_main, flags_parser=parse_flags)
