"""The CPU's instruction-set flags from ``/proc/cpuinfo``, read in one place (standard library
only, so scripts and the TF-free modules can name the CPU a timing ran on)."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_flags", "machine_line"]


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """Every flag of the first ``flags`` line (empty where the file is absent: not Linux)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def machine_line() -> str:
    """``2 CPUs (avx2, avx512f, avx512_bf16), x86_64; load average 1.3``: what result files say
    of the machine a timing ran on (the vector units decide the kernels; the load, the wall
    time)."""
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPUs ({', '.join(isa) or 'no AVX2'}), {platform.machine()}; "
        f"load average {load:.1f}"
    )
