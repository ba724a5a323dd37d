"""CutPaste (Li, Sohn, Yoon, Pfister, CVPR 2021): classify normal views vs views with a pasted
patch, the same authors' follow-up of the paper in the same two-stage framework.

Stage 1 learns a representation by (V)-way classification with the ``logits`` head: view 0 is
the (lightly jittered) image or patch, the other views are independently augmented copies with
a ``cutpaste`` rectangle or a ``scar`` pasted in (``augment/cutpaste.py``); the label is the
view index, as for rotation prediction. Stage 2 is unchanged: GDE/KDE/1-NN on the learnt
``pools``/``embeds`` features, at image level (Grad-CAM maps via ``explain``) or patch level
(dense patch scores and maps, ``--dataset=mvtec``).

Variants (``--cutpaste_variant``): ``binary`` (normal vs CutPaste), ``scar`` (normal vs scar)
and ``3way`` (normal, CutPaste, scar; the paper's best, MVTec mean image AUROC 95.2). The
variant picks the default ``--aug_list`` and ``--latent_dim`` (2 or 3 classes), so
``--method=cutpaste`` needs no other flag. View 0's augmentation follows the paper's code: a
colour jitter of 0.1 (no crop: at patch level the random window is the crop, and at image level
the whole object must stay in view).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import tensorflow as tf

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.methods import losses
from deep_representation_one_class.methods.base import QUICK_STEPS, Method
from deep_representation_one_class.registry import Option

# View 0 of every variant: the paper's light colour jitter.
NORMAL_VIEW = "jitter_b0.1_c0.1_s0.1_h0.1"
# The pasted views of each variant, in label order (label 0 is the normal view).
VARIANTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"binary": ("cutpaste",), "scar": ("scar",), "3way": ("cutpaste", "scar")}
)
DEFAULT_VARIANT = "3way"

PLUGIN = dict(
    kind="method",
    name="cutpaste",
    label="CutPaste",
    description="CutPaste: normal vs pasted-patch views (for defects)",
    defaults={
        # The default variant's views and classes (``defaults_for`` derives them for the
        # --cutpaste_variant given).
        "aug_list": NORMAL_VIEW + ",+cutpaste,+scar",
        "aug_list_for_test": "",
        # The paper's projection-head-free classifier on pooled features plus a small MLP
        # (its code uses one 512 layer before the class logits).
        "head_dims": (512,),
        "latent_dim": 3,
        "batch_size": 32,
        "train_steps": QUICK_STEPS,
    },
    options=[
        Option(
            "cutpaste_variant",
            DEFAULT_VARIANT,
            "CutPaste: binary (normal vs cutpaste), scar (normal vs scar) or 3way (normal, "
            "cutpaste, scar); sets the default --aug_list and --latent_dim.",
        ),
    ],
    impl="CutPaste",
)


def variant_aug_list(variant: str) -> str:
    """The default ``--aug_list`` of a variant, e.g. ``jitter...,+cutpaste,+scar``."""
    return NORMAL_VIEW + "".join(f",+{op}" for op in VARIANTS[variant])


class CutPaste(Method):
    """Which-view classification of normal vs CutPaste / scar views (``latent_dim`` classes)."""

    @classmethod
    def defaults_for(cls, given: Mapping[str, Any]) -> Mapping[str, Any]:
        variant = str(given.get("cutpaste_variant", DEFAULT_VARIANT)).lower()
        if variant not in VARIANTS:
            return cls.defaults  # check_config names the valid variants
        return {
            **cls.defaults,
            "aug_list": variant_aug_list(variant),
            "latent_dim": len(VARIANTS[variant]) + 1,
        }

    @classmethod
    def check_config(cls, config, num_views):
        variant = str(config.cutpaste_variant).lower()
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown --cutpaste_variant '{config.cutpaste_variant}'; valid: "
                f"{', '.join(VARIANTS)}"
            )
        views = grammar.parse(config.aug_list)
        last = [v.ops[-1].name for v in views]
        want = list(VARIANTS[variant])
        if last[0] in ("cutpaste", "scar") or last[1:] != want:
            raise ValueError(
                f"--cutpaste_variant={variant} needs --aug_list views <normal>"
                + "".join(f",<...+{op}>" for op in want)
                + f" (e.g. the default '{variant_aug_list(variant)}'), got '{config.aug_list}'"
            )
        if config.latent_dim != num_views:
            raise ValueError(
                f"method cutpaste needs --latent_dim equal to the number of classes "
                f"({num_views} for --cutpaste_variant={variant}), got {config.latent_dim}"
            )

    def examples_per_step(self, global_batch, num_views):
        return global_batch * num_views

    def per_example(self, model, views, training=True):
        b = tf.shape(views[0])[0]
        x = tf.concat(list(views), axis=0)
        labels = tf.repeat(tf.range(len(views), dtype=tf.int32), b)
        logits = model(x, training=training)["logits"]
        return losses.transformation_xent(logits, labels)
