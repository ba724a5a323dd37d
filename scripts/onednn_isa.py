"""Which oneDNN kernels run with and without ``ONEDNN_MAX_CPU_ISA=AVX2``, and what
``--precision=auto`` picks in each case.

    python scripts/onednn_isa.py [--out=results/onednn_isa.md]

Runs a float32 convolution, a float32 matmul and a bfloat16 matmul in a child process with
``ONEDNN_VERBOSE=1``, once as the CPU is and once capped to AVX2, and prints the ISA oneDNN
reports and the implementation of every executed primitive (e.g. ``brg_conv_fwd:avx512_core``
vs ``brg_conv_fwd:avx2``), plus the precision ``auto`` resolves to under each setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import tensorflow as tf
from deep_representation_one_class.utils import hardware
x = tf.random.normal([8, 32, 32, 16]); w = tf.random.normal([3, 3, 16, 16])
tf.nn.conv2d(x, w, 1, "SAME").numpy()
a = tf.random.normal([256, 256]); tf.matmul(a, a).numpy()
print("AUTO_PRECISION", hardware.resolve_precision("auto"), flush=True)
b = tf.cast(a, tf.bfloat16); tf.matmul(b, b).numpy()
print("BF16_MATMUL ok", flush=True)
"""


def probe(cap: str | None) -> tuple[str, list[str], str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env.update(ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    bf16 = "ran" if proc.returncode == 0 else f"process died (exit status {proc.returncode})"
    lines = (proc.stdout + proc.stderr).splitlines()
    isa = next((ln.split("isa:", 1)[1] for ln in lines if ",info,cpu,isa:" in ln), "?")
    kernels = []
    for ln in lines:
        parts = ln.split(",")
        if (
            ln.startswith("onednn_verbose")
            and len(parts) > 6
            and parts[2] == "primitive"
            and (parts[3] == "exec")
        ):
            kernel = f"{parts[5]} {parts[6]}".strip()
            if kernel not in kernels:
                kernels.append(kernel)
    auto = next((ln.split()[1] for ln in lines if ln.startswith("AUTO_PRECISION")), "?")
    return isa, kernels, auto, bf16


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="", help="also write the Markdown here")
    args = p.parse_args()
    with open("/proc/cpuinfo") as f:
        flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    shown = " ".join(sorted(x for x in flags if x.startswith(("avx512", "amx", "avx2"))))
    rows = ["| ONEDNN_MAX_CPU_ISA | oneDNN reports | kernels executed | --precision=auto "
            "| bfloat16 matmul |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for cap in (None, "AVX2"):
        isa, kernels, auto, bf16 = probe(cap)
        rows.append(f"| {cap or '(unset)'} | {isa} | {'; '.join(kernels)} | {auto} | {bf16} |")
    text = "\n".join(
        [f"CPU flags (AVX-512/AMX/AVX2): {shown}", "", *rows, "",
         "Produced by `python scripts/onednn_isa.py`: a float32 convolution, a float32 matmul "
         "and a bfloat16 matmul, in that order, in a child process with ONEDNN_VERBOSE=1. "
         "Exit status -11 is a segmentation fault: under the AVX2 cap on a CPU whose flags "
         "list avx512_bf16, TensorFlow still routes bfloat16 ops to oneDNN, which has no "
         "kernel for them at that ISA, so bfloat16 must not be used under the emulation "
         "(--precision=auto picks float32 there)."]
    )  # fmt: skip
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
