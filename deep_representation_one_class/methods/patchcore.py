"""PatchCore-style pretrained patch features for the patch task (Roth et al., CVPR 2022).

``--backbone=efficientnet_lite0`` (the default, offline): each window, resized to
``--pretrained_size`` (0 = 64 px), runs through the frozen ImageNet EfficientNet-Lite0; the
outputs of block 4 (stride 8, 40 channels) and block 10 (stride 16, 112 channels) are locally
averaged, aligned, concatenated and averaged over the window: ``pools`` [B, 152].

``--backbone=resnet50_imagenet`` (the default when ``--imagenet_weights`` is given): a frozen
ImageNet ResNet-50 (weights as for ``--method=imagenet``: a local file, Keras's cache,
or Keras's checksummed download when online; else a one-line error within seconds) embeds each
P x P window of the patch task: the window is resized to ``--pretrained_size`` (default 64,
a 2x upsampling of 32-px windows, so that the mid-level maps keep some resolution), the outputs
of the second and third ResNet stages (``conv3_block4_out``, stride 8, 512 channels;
``conv4_block6_out``, stride 16, 1024 channels) are each smoothed by a 3 x 3 average (PatchCore's
locally aware aggregation), the third is upsampled to the second's grid, both are concatenated
and averaged over the window: ``pools`` = ``embeds`` [B, 1536]. The patch task then fits its
scorers on a memory bank of such windows; with the defaults here the bank is subsampled by a
greedy coreset to 10% (``--patch_coreset=0.1``) and scored by nearest neighbour (``auc``),
PatchCore's scorer (cosine rather than Euclidean distance, the scorer this package shares).

Simplification: PatchCore keeps one feature per feature-map cell of the whole image; here a
"patch" is the task's window, so the image-level grid, maps and metrics are the patch task's.
Nothing is trained (``train_steps`` is fixed at 0).
"""

from __future__ import annotations

import keras

from deep_representation_one_class.errors import ConfigError
from deep_representation_one_class.methods import imagenet
from deep_representation_one_class.methods.base import Method
from deep_representation_one_class.methods.imagenet import (
    IMAGE_SIZE,
    SIZE_OPTION,
    WEIGHTS_HINT,
    WEIGHTS_OPTION,
    ImageNetPreprocess,
    check_backbone,
    frozen_outputs,
    pretrained_defaults,
)
from deep_representation_one_class.models.backbones import BACKBONES, Backbone, LocalAggregate

LAYERS = ("conv3_block4_out", "conv4_block6_out")
WINDOW_SIZE = 64  # default --pretrained_size: 32-px windows upsampled 2x


def build_patchcore_model(weights, channels: int = 3, size: int = 64) -> keras.Model:
    """Frozen ResNet-50 stage-2/3 window features as a model with the project's output dict.

    Args:
      weights: a weights file, ``"imagenet"`` (Keras cache/download) or None (random; tests).
      channels: input channels (1 or 3).
      size: side the windows are resized to before the backbone (>= 32).

    Returns:
      A model mapping [B, H, W, channels] float32 in [0, 1] to ``{"pools", "embeds",
      "logits"}``, each [B, 1536] float32.

    Raises:
      ConfigError: the weights cannot be read or do not fit ResNet-50.
    """
    try:
        backbone = keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=(size, size, 3)
        )
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"cannot load --imagenet_weights={weights} ({first}); expected {WEIGHTS_HINT}"
        ) from None
    trunk = keras.Model(
        backbone.input, [backbone.get_layer(name).output for name in LAYERS], name="resnet50_mid"
    )
    trunk.trainable = False
    inputs = keras.Input(shape=(None, None, channels), name="images")
    maps = trunk(ImageNetPreprocess(size, name="imagenet_preprocess")(inputs), training=False)
    feats = LocalAggregate(name="local_aggregate")(maps)
    return keras.Model(inputs, frozen_outputs(feats), name="patchcore_resnet50")


PLUGIN = dict(
    kind="method",
    name="patchcore",
    label="PatchCore-style",
    description="baseline: frozen pretrained window features, coreset bank, 1-NN (patch tasks)",
    defaults={
        "aug_list": "x",
        "aug_list_for_test": "",
        "head_dims": (),
        "latent_dim": 0,
        "batch_size": 64,
        "eval_batch_size": 128,
        "train_steps": 0,
        "num_epoch": 0,
    },
    # On --dataset=mvtec these win over the dataset's training defaults.
    fixed={"train_steps": 0, "num_epoch": 0, "patch_coreset": 0.1, "classifiers": ("auc",)},
    options=[WEIGHTS_OPTION, SIZE_OPTION],
    impl="PatchCore",
)


class PatchCore(Method):
    """Evaluation-only: frozen pretrained mid-level window features, coreset bank, 1-NN."""

    @classmethod
    def table_label(cls, config):
        return f"{cls.label} ({imagenet.backbone_label(config)})"

    @classmethod
    def defaults_for(cls, given):
        return {**cls.defaults, **pretrained_defaults(given)}

    @classmethod
    def derived(cls, values):
        return {} if values.get("pretrained_size") else {"pretrained_size": WINDOW_SIZE}

    @classmethod
    def check_config(cls, config, num_views):
        if config.pretrained_size < 32:
            raise ValueError(f"--pretrained_size must be >= 32, got {config.pretrained_size}")
        check_backbone(config, cls.name)
        if config.num_epoch != 0 or config.train_steps != 0:
            raise ValueError(
                f"method patchcore only evaluates fixed features; use --train_steps=0, "
                f"got {config.train_steps}"
            )

    def build_model(self, make_default):
        del make_default
        spec = BACKBONES.get(self.config.backbone)
        channels = int(self.config.input_shape[2])
        model = spec.frozen(self.config, channels, int(self.config.pretrained_size), "patch")
        if spec.name == "resnet50_imagenet":
            return model
        return keras.Model(model.input, frozen_outputs(model.output), name="patchcore_" + spec.name)

    def per_example(self, model, views, training=True):
        raise ConfigError("method patchcore has nothing to train; use --train_steps=0")


def _r50_check(config) -> None:
    imagenet.resolve_weights(config.imagenet_weights, config.method)


def _r50_frozen(config, channels: int, size: int, level: str) -> keras.Model:
    weights = imagenet.resolve_weights(config.imagenet_weights, config.method)
    if level == "image":
        return imagenet.build_imagenet_model(weights, channels=channels, size=size)
    return build_patchcore_model(weights, channels=channels, size=size)


def _r50_source(config) -> dict:
    weights = config.imagenet_weights or imagenet.cached_weights()
    return {
        "package": "keras.applications.ResNet50",
        "version": keras.__version__,
        "file": weights or imagenet.WEIGHTS_FILE + " (Keras download)",
        "sha256": "checked by Keras (file_hash)" if not config.imagenet_weights else "not checked",
    }


BACKBONES.add(
    "resnet50_imagenet",
    Backbone(
        name="resnet50_imagenet",
        label="ResNet-50 (ImageNet)",
        pretrained=True,
        image_size=IMAGE_SIZE,
        check=_r50_check,
        frozen=_r50_frozen,
        source=_r50_source,
    ),
)
