"""What the machine computes fast, for defaults that use a time budget well.

``fast_bfloat16()`` is True where bfloat16 matmuls and convolutions run natively: a GPU of
compute capability 8.0 or newer (Ampere on), or a CPU with AVX512_BF16 or AMX-BF16 (recent Intel
Xeon and AMD Zen 4/5). Elsewhere bfloat16 is emulated and slower than float32, so
``--precision=auto`` (the quick defaults) picks float32 there.
"""

from __future__ import annotations

import functools

import tensorflow as tf

_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and any(flag in line.split() for flag in _CPU_FLAGS):
                    return True
    except OSError:
        pass
    return False


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
