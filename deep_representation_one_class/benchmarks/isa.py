"""The CPU instruction sets a benchmark measures: the CPU as it is, and AVX2 only.

Most laptops and many cloud CPUs have AVX2 but no AVX-512. Where the benchmark's CPU has
AVX-512, ``--isa=avx2`` runs each case in a child process with oneDNN's
``ONEDNN_MAX_CPU_ISA=AVX2``, which makes every oneDNN kernel (convolutions, matmuls: the
compute of a step) use AVX2 code; ``ONEDNN_VERBOSE=1`` then shows ``isa:Intel AVX2`` and
``brg_conv_fwd:avx2`` kernels (``scripts/onednn_isa.py``). TensorFlow's own (Eigen) kernels of
the pip wheel are built for AVX and unaffected either way. oneDNN reads the cap once, when it
first runs, hence the child process. Memory bandwidth, caches and clock stay this machine's,
so the emulation answers "which kernels" and not "which machine"; every record says which
(``isa``: ``{"name", "emulated", "onednn_max_cpu_isa", "cpu_flags"}``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from typing import Any

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.utils import cpuinfo as cpuinfo_lib
from deep_representation_one_class.utils import hardware

__all__ = ["ISAS", "child_options", "cpu_flags", "describe", "needs_child", "run_in_child"]

ISAS = ("native", "avx2")
_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The vector-instruction flags of the CPU (avx*, amx*, fma, f16c), sorted."""
    return sorted(x for x in cpuinfo_lib.cpu_flags(cpuinfo) if x.startswith(_FLAG_PREFIXES))


def _best_native(flags: list[str]) -> str:
    if "amx_bf16" in flags:
        return "amx_bf16"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "avx" if "avx" in flags else "sse"


def describe() -> dict[str, Any]:
    """What this process computes with: the ISA name, whether it is an emulation (a cap below
    what the CPU has), the cap, and the CPU's flags."""
    flags = cpu_flags()
    cap = hardware.onednn_isa_cap()
    native = _best_native(flags)
    if cap is None or cap in ("all", "default"):
        return {"name": native, "emulated": False, "onednn_max_cpu_isa": cap, "cpu_flags": flags}
    name = "avx2" if cap.startswith("avx2") else cap
    return {
        "name": name,
        "emulated": native != name and "avx512f" in flags,
        "onednn_max_cpu_isa": cap,
        "cpu_flags": flags,
    }


def needs_child(kind: str) -> bool:
    """Whether ``kind`` must be measured in a child process with an ISA cap."""
    if kind == "native":
        return False
    return "avx512f" in cpu_flags() and hardware.onednn_isa_cap() != kind


def child_options(args) -> list[str]:
    """The options of a ``bench`` command (parsed) for a child that measures one case."""
    flags = [
        f"--steps_per_call={args.steps_per_call}",
        f"--strategy={args.strategy}",
        f"--intra_op_threads={args.intra_op_threads}",
        f"--inter_op_threads={args.inter_op_threads}",
        f"--windows={args.windows}",
        f"--window_steps={args.window_steps}",
        f"--eval_batch_size={args.eval_batch_size}",
        f"--classifiers={args.classifiers}",
        f"--cls_train={args.cls_train}",
        f"--cls_test={args.cls_test}",
        f"--features={args.features}",
        f"--peak_size={args.peak_size}",
    ]
    return flags + ["--jit_compile"] * args.jit_compile + ["--no_peak"] * args.no_peak


def run_in_child(kind: str, case: str, options: list[str]) -> list[dict[str, Any]]:
    """Measures ``case`` in ``python -m deep_representation_one_class.bench`` with
    ``ONEDNN_MAX_CPU_ISA=<kind>``; returns its records, with the child's CPU seconds."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": kind.upper()}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "case.jsonl")
        cmd = [
            sys.executable,
            "-m",
            "deep_representation_one_class.bench",
            f"--cases={case}",
            "--isa=native",
            f"--out={out}",
            *options,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"the {kind} child of case {case} failed: {tail}")
        with open(out) as f:
            records = [json.loads(line) for line in f if line.strip()]
    for r in records:
        # The whole child (TensorFlow start-up, matmul peaks, classifiers, the case).
        r["process_cpu_user_s"] = round(after.ru_utime - before.ru_utime, 2)
        r["process_cpu_system_s"] = round(after.ru_stime - before.ru_stime, 2)
    return records
