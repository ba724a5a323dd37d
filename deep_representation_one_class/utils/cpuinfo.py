"""The CPU's instruction-set flags from ``/proc/cpuinfo``, read in one place (standard library
only, so scripts and the TF-free modules can name the CPU a timing ran on)."""

from __future__ import annotations

__all__ = ["cpu_flags"]


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
