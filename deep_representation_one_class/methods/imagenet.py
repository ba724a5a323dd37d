"""ImageNet-features baseline (Table 7 "ResNet-50 (ImageNet)"): fixed pretrained features.

``--backbone`` picks the network (``models/backbones.py``): ``efficientnet_lite0`` (the
default; ImageNet weights from a pip package, offline; ``pools`` [B, 1280]) or
``resnet50_imagenet`` (the default when ``--imagenet_weights`` is given; ``pools`` [B, 2048]).
Images are resized to ``--pretrained_size`` (0 = the backbone's side, 224; 128 for data
smaller than 64 px, e.g. CIFAR's 32 px, where 224 costs 3x the CPU time; config.json records
the side used).

ResNet-50: ``pools`` are the global-average-pooled outputs of ``keras.applications.ResNet50``.
Weights (``resolve_weights``), in order: a local file (``--imagenet_weights=PATH``, e.g. Keras's
``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` or any ``.weights.h5`` of the no-top
ResNet50); Keras's own cache (``$KERAS_HOME``/``~/.keras``/models, checked against its hash by
Keras); Keras's checksummed download into that cache when the download host answers within 3
seconds. Otherwise the run fails at once with a one-line message (before any data is read).
Nothing is trained: the method requires ``--num_epoch=0`` and the backbone is frozen, so a run
only extracts features and fits the one-class classifiers. ``embeds`` and ``logits`` equal
``pools``. ``--net_type``, ``--net_width``, ``--head_dims`` and ``--precision`` are ignored.

Input handling: images of any size in [0, 1] are resized (bilinear) to 224x224, the ImageNet
resolution the weights were trained at, scaled to [0, 255] and passed through
``keras.applications.resnet50.preprocess_input`` (RGB->BGR, ImageNet channel means subtracted).
A 1-channel input is tiled to 3 channels.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from deep_representation_one_class.datasets.cifar import is_online
from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.methods.base import Method
from deep_representation_one_class.models import efficientnet_lite as effnet
from deep_representation_one_class.models.backbones import BACKBONES, ResizedRGB, input_size
from deep_representation_one_class.registry import Option

# Side the images are resized to before the backbone. A module constant rather than a flag:
# the weights fix it; tests lower it to keep a CPU forward pass of ResNet-50 cheap.
IMAGE_SIZE = 224
WEIGHTS_HINT = "a local Keras ResNet50 no-top weights file (.h5 or .weights.h5)"
# Where keras.applications downloads its weights from (probed before a download is tried).
WEIGHTS_HOST = ("storage.googleapis.com", 443)
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS = "imagenet"  # ``weights=`` value that makes Keras download (checksummed) and cache

WEIGHTS_OPTION = Option(
    "imagenet_weights",
    None,
    "Local Keras ResNet50 no-top weights file (.h5/.weights.h5). Without it: Keras's cache, "
    "else Keras's checksummed download when online (imagenet, patchcore).",
    kind=str,
)
SIZE_OPTION = Option(
    "pretrained_size",
    0,
    "imagenet, patchcore: side (px) images (patchcore: patch windows) are resized to before the "
    "frozen backbone; 0 = the backbone's (224; 128 for images under 64 px; 64 for windows).",
)

LAYERS_OPTION = Option(
    "pretrained_layers",
    ("head",),
    "imagenet with efficientnet_lite*: layers whose global averages, each L2-normalised, are "
    "concatenated into the features; any of s8, s16, b14, b15, head (s8/s16: strides 8 and 16; "
    "b14, b15: the last blocks; head: the 1280-channel head).",
)
FLIP_OPTION = Option(
    "flip_average",
    False,
    "imagenet with efficientnet_lite*: average each image's features with its left-right "
    "mirror image's (2x the extraction time; only for data where a mirrored image is normal).",
)


def pretrained_defaults(given, fallback: str = "efficientnet_lite0") -> dict:
    """``--backbone`` when the user gave none: ResNet-50 with --imagenet_weights, else the
    offline ``fallback``."""
    if "backbone" in given:
        return {}
    return {"backbone": "resnet50_imagenet" if given.get("imagenet_weights") else fallback}


def check_backbone(config, method: str) -> None:
    """A frozen-feature method needs a pretrained backbone whose weights are available."""
    spec = BACKBONES.get(config.backbone)
    spec.check(config)
    if spec.frozen is None:
        raise ValueError(f"--backbone={spec.name} has no frozen features for --method={method}")


def cached_weights() -> str | None:
    """Keras's cached no-top ResNet50 weights file, if a previous download left one."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "models", WEIGHTS_FILE)
    return path if os.path.isfile(path) else None


def resolve_weights(path: str | None, method: str) -> str:
    """The ``weights=`` argument for ``keras.applications.ResNet50``: a file or ``"imagenet"``.

    Raises:
      ValueError: ``path`` is not a file, or there is no path, no cached file and no network
        (decided within about 3 seconds).
    """
    if path:
        if not os.path.isfile(path):
            raise ValueError(
                f"--imagenet_weights={path} is not a file; pass the path of {WEIGHTS_HINT}"
            )
        return path
    cached = cached_weights()
    if cached is not None:
        return cached
    if is_online(WEIGHTS_HOST, timeout=3.0):
        return KERAS
    raise ValueError(
        f"method {method} needs --imagenet_weights=PATH ({WEIGHTS_HINT}): there is no cached "
        f"{WEIGHTS_FILE} and {WEIGHTS_HOST[0]} is unreachable, so Keras cannot download it"
    )


class ImageNetPreprocess(ResizedRGB):
    """[B, H, W, C] float in [0, 1] -> [B, S, S, 3] float32, as the ImageNet ResNet-50 expects
    (RGB->BGR, ImageNet channel means subtracted from [0, 255] values)."""

    def scale(self, x):
        return keras.applications.resnet50.preprocess_input(x * 255.0)


def build_imagenet_model(
    weights_path: str | None, channels: int = 3, size: int | None = None
) -> keras.Model:
    """Frozen ResNet-50 features as a model with the project's output dict.

    Args:
      weights_path: local weights file, ``"imagenet"`` (Keras's cache or download), or None for
        a random initialisation (tests only).
      channels: channels of the input images (1 or 3).
      size: resize target (default ``IMAGE_SIZE``).

    Returns:
      A model mapping [B, H, W, channels] float32 in [0, 1] to
      ``{"pools", "embeds", "logits"}``, each [B, 2048] float32.

    Raises:
      ConfigError: the weights file cannot be read or does not fit ResNet-50.
    """
    size = IMAGE_SIZE if size is None else int(size)
    try:
        backbone = keras.applications.ResNet50(
            include_top=False,
            weights=weights_path,
            input_shape=(size, size, 3),
            pooling="avg",
        )
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"cannot load --imagenet_weights={weights_path} ({first}); expected {WEIGHTS_HINT}"
        ) from None
    backbone.trainable = False
    inputs = keras.Input(shape=(None, None, channels), name="images")
    pools = backbone(ImageNetPreprocess(size, name="imagenet_preprocess")(inputs), training=False)
    return keras.Model(inputs, frozen_outputs(pools), name="resnet50_imagenet")


def frozen_outputs(features):
    """The model outputs of an evaluation-only method: its features as pools, embeds and logits
    (float32), the names the extraction and evaluation read."""
    return {
        name: layers.Activation("linear", dtype="float32", name=f"{name}_out")(features)
        for name in ("pools", "embeds", "logits")
    }


PLUGIN = dict(
    kind="method",
    name="imagenet",
    label="ImageNet features",
    description="baseline: fixed ImageNet features (evaluation only)",
    defaults={
        "aug_list": "x",
        "aug_list_for_test": "",
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 64,
        "train_steps": 0,
        "num_epoch": 0,  # fixed features: evaluation only
    },
    fixed={"train_steps": 0, "num_epoch": 0},
    options=[WEIGHTS_OPTION, SIZE_OPTION, LAYERS_OPTION, FLIP_OPTION],
    impl="ImageNet",
)


def backbone_label(config) -> str:
    """The table name of a frozen-feature run's backbone; runs from before --backbone (and any
    backbone without pretrained weights) are the paper's ResNet-50 row."""
    name = str(config.get("backbone") or "").strip().lower()
    known = name in BACKBONES and BACKBONES.get(name).pretrained
    return BACKBONES.get(name if known else "resnet50_imagenet").label


class ImageNet(Method):
    """Evaluation-only: fixed ImageNet features (``--backbone``), no training objective."""

    @classmethod
    def table_label(cls, config):
        return backbone_label(config)

    @classmethod
    def defaults_for(cls, given):
        # Image-level features default to EfficientNet-Lite2: higher validation AUROC than
        # Lite0 at 128 and 224 px on every CIFAR-10 split mean
        # (results/selection/pretrained_probe_backbones{,_224}.md).
        return {**cls.defaults, **pretrained_defaults(given, "efficientnet_lite2")}

    @classmethod
    def derived(cls, values):
        if values.get("pretrained_size"):
            return {}
        return {"pretrained_size": input_size(values["backbone"], values["input_shape"][0])}

    @classmethod
    def check_config(cls, config, num_views):
        check_backbone(config, cls.name)
        if config.pretrained_size < 32:
            raise ValueError(f"--pretrained_size must be >= 32, got {config.pretrained_size}")
        layers_ = tuple(config.pretrained_layers)
        unknown = [n for n in layers_ if n not in effnet.POOL_TAPS]
        if not layers_ or unknown or len(set(layers_)) != len(layers_):
            raise ValueError(
                f"--pretrained_layers={','.join(layers_)}: give distinct names among "
                f"{', '.join(effnet.POOL_TAPS)}"
            )
        if not BACKBONES.get(config.backbone).layered and (
            layers_ != ("head",) or config.flip_average
        ):
            raise ValueError(
                "--pretrained_layers and --flip_average apply to the EfficientNet-Lite "
                f"backbones only (efficientnet_lite0, ...), not {config.backbone}"
            )
        if config.num_epoch != 0 or config.train_steps != 0:
            raise ValueError(
                f"method {cls.name} only evaluates fixed features; use --num_epoch=0, "
                f"got {config.num_epoch}"
            )

    def build_model(self, make_default):
        del make_default  # the configured ResNet is replaced, not extended
        spec = BACKBONES.get(self.config.backbone)
        channels = int(self.config.input_shape[2])
        model = spec.frozen(self.config, channels, int(self.config.pretrained_size), "image")
        if spec.name == "resnet50_imagenet":
            return model  # already has the output dict
        return keras.Model(model.input, frozen_outputs(model.output), name=model.name)

    def per_example(self, model, views, training=True):
        raise ConfigError("method imagenet has nothing to train; use --num_epoch=0")
