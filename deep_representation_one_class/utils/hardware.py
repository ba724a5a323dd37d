"""What the machine computes fast, for defaults that use a time budget well.

``fast_bfloat16()`` is True where bfloat16 matmuls and convolutions run natively: a GPU of
compute capability 8.0 or newer (Ampere on), or a CPU with AVX512_BF16 or AMX-BF16 (recent Intel
Xeon and AMD Zen 4/5). Elsewhere bfloat16 is emulated and slower than float32, so
``--precision=auto`` (the quick defaults) picks float32 there.

oneDNN's ``ONEDNN_MAX_CPU_ISA`` (older name ``DNNL_MAX_CPU_ISA``) caps the instructions its
kernels use, e.g. ``AVX2`` to run as on a CPU without AVX-512; the CPU flags still list
avx512_bf16 then, but no bfloat16 kernel can use it, so a cap below ``AVX512_CORE_BF16`` counts
as "no native bfloat16".
"""

from __future__ import annotations

import functools
import os

import tensorflow as tf

from deep_representation_one_class.utils import allocator
from deep_representation_one_class.utils import cpuinfo as cpuinfo_lib

_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN ISA caps without native bfloat16 (case-insensitive); other values (AVX512_CORE_BF16,
# the AMX and AVX10 levels, ALL, DEFAULT) leave the bfloat16 kernels available.
_ISA_CAPS_WITHOUT_BF16 = (
    "sse41",
    "avx",
    "avx2",
    "avx2_vnni",
    "avx2_vnni_2",
    "avx512_core",
    "avx512_core_vnni",
)


def onednn_isa_cap(env=None) -> str | None:
    """The oneDNN ISA cap of this process (``ONEDNN_MAX_CPU_ISA``), lower case, or None."""
    env = os.environ if env is None else env
    cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().lower()
    return cap or None


def _cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo", env=None) -> bool:
    if onednn_isa_cap(env) in _ISA_CAPS_WITHOUT_BF16:
        return False
    return any(flag in cpuinfo_lib.cpu_flags(cpuinfo) for flag in _CPU_FLAGS)


def _gpu_has_bf16() -> bool:
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= (8, 0):
            return True
    return False


@functools.cache
def fast_bfloat16() -> bool:
    """Whether this machine computes bfloat16 natively (cached for the process)."""
    return _gpu_has_bf16() or _cpu_has_bf16()


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` where bfloat16 is native, else ``float32``."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if fast_bfloat16() else "float32"


def runtime_record() -> dict:
    """How this process computes, for a run's ``config.json`` and ``summary.json``: the memory
    allocator (``utils/allocator.py``), oneDNN's ISA cap, native bfloat16 and the thread pools
    (0 = TensorFlow's default, one thread per core)."""
    alloc = allocator.current()
    return {
        "allocator": alloc["allocator"],
        "allocator_library": alloc["library"],
        "malloc_tunables": alloc["tunables"],
        "onednn_max_cpu_isa": onednn_isa_cap(),
        "native_bfloat16": fast_bfloat16(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
