"""The benchmark's cases (model, batch, precision, implementation) and their run configs."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from deep_representation_one_class import resolve
from deep_representation_one_class.errors import UserError

# The reference's numbers as first measured on the 2-core development CPU (AMD EPYC,
# AVX512_BF16) under unknown load, reported as "vs_issue_numbers". The ratios that count are
# "vs_reference": against the ``reference_fp32`` case measured by the same command, on the same
# machine, at the same time.
REFERENCE = {
    "train_images_per_s": 43.0,  # contrastive ResNet-18 w1, head 512x8,128, 32 pairs: 1.48 s/step
    "extract_images_per_s": 150.0,  # batches of 32
}
# Paper length of one CIFAR-10 one-class run: 5000 inliers, 2048 epochs (spec, "Script settings").
CIFAR10_CLASS_IMAGES = 5000
PAPER_EPOCHS = 2048
PAPER_HEAD = (512,) * 8 + (128,)

# Keys of every JSON record (the output contract; tests check it).
SCHEMA_KEYS = (
    "case",
    "method",
    "model",
    "width",
    "head_dims",
    "batch",
    "views",
    "images_per_step",
    "precision",
    "float32_stages",
    "steps_per_call",
    "jit_compile",
    "strategy",
    "device",
    "threads",
    "train_images_per_s",
    "train_step_s",
    "train_step_s_windows",
    "train_cpu_s_per_step",
    "train_first_call_s",
    "e2e_images_per_s",
    "data_images_per_s",
    "extract_images_per_s",
    "extract_first_call_s",
    "extract_batch",
    "classifier_seconds",
    "classifier_total_s",
    "classifier_sizes",
    "eval_seconds_estimate",
    "gflop_per_image_forward",
    "gflop_per_image_train",
    "achieved_gflop_s",
    "peak_gflop_s",
    "pct_of_peak",
    "peak_gflop_per_cpu_s",
    "pct_of_peak_cpu_time",
    "impl",
    "vs_reference",
    "vs_issue_numbers",
    "paper_steps_per_class",
    "projected_hours_per_class",
    "loadavg_start",
    "loadavg_end",
    "machine",
    "timestamp",
    "isa",
    "allocator",
    "cpu_user_s",
    "cpu_system_s",
    "cpu_system_pct",
)


class BenchError(UserError, ValueError):
    """A benchmark option is invalid; the message names it and what is valid."""


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One benchmarked configuration (the fields map onto ``config.Config``)."""

    method: str = "contrastive"
    net_type: str = "resnet18"
    net_width: float = 1.0
    head_dims: tuple[int, ...] = PAPER_HEAD
    batch_size: int = 32
    precision: str = "float32"
    float32_stages: tuple[str, ...] = ("conv5",)  # stages kept float32 under mixed precision
    input_size: int = 32
    eval_batch_size: int = 256
    # "this": this package's model and classifiers; "reference": the reference's layers
    # (``benchmarks/reference_layers.py``), its extraction batch and its classifier code path.
    impl: str = "this"
    # Timing sizes (steps/images); small for quick runs, larger on fast devices.
    warmup_steps: int = 2
    windows: int = 5
    window_steps: int = 2
    e2e_windows: int = 3
    data_batches: int = 8
    extract_images: int = 2048
    pipeline_images: int = 2048  # source images of the end-to-end and data-only pipelines


_PAPER = BenchCase()
CASES: dict[str, BenchCase] = {
    # The reference's path for the paper configuration: its layers (Keras BatchNorm, explicit
    # padding), float32, extraction in batches of 32 (its eval batch for 32 pairs), and its
    # classifiers (full similarity matrix, KDE in test batches of 100, sklearn GMM with k-means
    # init, libsvm evaluating its own kernel). The speed-ups of the other cases are against it.
    "reference_fp32": dataclasses.replace(_PAPER, eval_batch_size=32, impl="reference"),
    # The paper's contrastive configuration (scripts): ResNet-18 w1, head 512x8,128, 32 pairs.
    "paper_fp32": _PAPER,
    "paper_bf16": dataclasses.replace(_PAPER, precision="mixed_bfloat16"),
    # The whole trunk in bfloat16 (--float32_stages=): faster, but it lost AUROC.
    "paper_bf16_all": dataclasses.replace(_PAPER, precision="mixed_bfloat16", float32_stages=()),
    "paper_fp16": dataclasses.replace(_PAPER, precision="mixed_float16"),  # GPUs
    # The rotation configuration of the paper: 64 images x 4 rotations, head 512x8, 4 logits.
    "paper_rotation_fp32": dataclasses.replace(
        _PAPER, method="rotation", head_dims=(512,) * 8, batch_size=64
    ),
    "paper_rotation_bf16": dataclasses.replace(
        _PAPER,
        method="rotation",
        head_dims=(512,) * 8,
        batch_size=64,
        precision="mixed_bfloat16",
    ),
    # The quick default run (``python train_and_eval_loop.py --method=contrastive``).
    "quick_fp32": dataclasses.replace(
        _PAPER, net_width=0.25, head_dims=(512, 512, 128), batch_size=64
    ),
    "quick_bf16": dataclasses.replace(
        _PAPER,
        net_width=0.25,
        head_dims=(512, 512, 128),
        batch_size=64,
        precision="mixed_bfloat16",
    ),
    # A seconds-long case for tests and smoke checks.
    "tiny": BenchCase(
        net_type="resnet10",
        net_width=0.0625,
        head_dims=(16, 8),
        batch_size=8,
        warmup_steps=1,
        windows=2,
        window_steps=1,
        e2e_windows=1,
        data_batches=2,
        extract_images=64,
        pipeline_images=128,
    ),
}
# The tiny case on the reference's path (for tests of that path).
CASES["tiny_reference"] = dataclasses.replace(CASES["tiny"], impl="reference")
DEFAULT_CASES = ("reference_fp32", "paper_fp32", "paper_bf16")


# ----------------------------------------------------------------------------- small helpers
def _device_kind() -> str:
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


# ----------------------------------------------------------------------------- config glue
def make_config(case: BenchCase, steps_per_call: int, jit_compile: bool, strategy: str):
    """The run ``Config`` of a case (method defaults for augmentations and logits)."""
    return resolve.build(
        method=case.method,
        dataset="fake",
        category="0",
        input_shape=(case.input_size, case.input_size, 3),
        net_type=case.net_type,
        net_width=case.net_width,
        head_dims=tuple(case.head_dims),
        batch_size=case.batch_size,
        precision=case.precision,
        float32_stages=tuple(case.float32_stages),
        eval_batch_size=case.eval_batch_size,
        steps_per_call=steps_per_call,
        jit_compile=jit_compile,
        strategy=strategy,
    )
