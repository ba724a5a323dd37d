"""Hardware-side measurement helpers: CPU time, load, machine description, FLOP counts, matmul peak.

``count_flops`` is analytic from traced shapes: the forward pass (and, for training, the gradient
of a scalar of the outputs) is traced once with a fixed input shape, the graph is pruned to the
ops its outputs depend on (what Grappler also removes, e.g. the unused image gradient of the
stem conv), and every ``Conv2D``/``Conv2DBackpropInput``/``Conv2DBackpropFilter``/``MatMul``/
``BatchMatMul`` op counts ``2 x multiply-accumulates`` from its static shapes. Elementwise work
(BatchNorm, ReLU, residual adds, the optimizer) is not counted: it is memory-bound and a few
percent of a ResNet's total. ``matmul_peak`` times the same oneDNN/cuBLAS kernels the model uses,
so their ratio is the fraction of reachable compute a step uses.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - platforms without getloadavg
        return []


def machine_info() -> dict[str, Any]:
    """CPU model, core count, accelerator, TensorFlow/Keras versions and oneDNN setting."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = []
    for g in gpus:
        try:
            gpu_names.append(
                tf.config.experimental.get_device_details(g).get("device_name", g.name)
            )
        except (ValueError, RuntimeError):
            gpu_names.append(g.name)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpu_names,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


# ----------------------------------------------------------------------------- FLOP counting
def _prod(dims: Sequence[int | None]) -> int:
    out = 1
    for d in dims:
        if d is None:
            raise ValueError("FLOP counting needs static shapes; trace with a fixed input shape")
        out *= int(d)
    return out


def _op_macs(op) -> int:
    """Multiply-accumulates of one conv/matmul op from its static shapes (0 for other ops)."""
    kind = op.type
    if kind in ("Conv2D", "DepthwiseConv2dNative"):
        out = op.outputs[0].shape.as_list()
        kh, kw, cin, _ = op.inputs[1].shape.as_list()
        # Conv2D: each output element sums kh*kw*cin products (cin is per group). Depthwise:
        # each output element sums kh*kw products.
        return _prod(out) * kh * kw * (cin if kind == "Conv2D" else 1)
    if kind == "Conv2DBackpropInput":
        kh, kw, cin, _ = op.inputs[1].shape.as_list()
        return _prod(op.inputs[2].shape.as_list()) * kh * kw * cin
    if kind == "Conv2DBackpropFilter":
        kh, kw, cin, _ = op.outputs[0].shape.as_list()
        return _prod(op.inputs[2].shape.as_list()) * kh * kw * cin
    if kind == "MatMul":
        a = op.inputs[0].shape.as_list()
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return _prod(op.outputs[0].shape.as_list()) * int(k)
    if kind.startswith("BatchMatMul"):
        a = op.inputs[0].shape.as_list()
        adj = op.get_attr("adj_x")
        k = a[-2] if adj else a[-1]
        return _prod(op.outputs[0].shape.as_list()) * int(k)
    return 0


def _live_ops(graph) -> list:
    """Ops that the graph's outputs depend on (data or control), like Grappler's pruning."""
    live: dict[str, Any] = {}
    stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
    while stack:
        op = stack.pop()
        if op.name in live:
            continue
        live[op.name] = op
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return list(live.values())


def count_flops(model, input_shape: Sequence[int], training: bool = True) -> float:
    """FLOPs per image of ``model`` (2 x multiply-accumulates of conv and matmul ops).

    Args:
      model: a Keras model taking [B, H, W, C] float32 images; dict or tensor outputs.
      input_shape: (H, W, C) of one image.
      training: True counts forward + backward (the gradient of a scalar of every output with
        respect to the trainable variables: input and weight gradients, no image gradient);
        False counts the inference forward pass.

    Returns:
      FLOPs per image (float).
    """
    import tensorflow as tf

    batch = 2  # BatchNorm in training mode needs more than one value per channel
    spec = tf.TensorSpec([batch, *[int(d) for d in input_shape]], tf.float32)

    def _scalar(outputs) -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tf.nest.flatten(outputs)])

    if training:

        def fn(x):
            with tf.GradientTape() as tape:
                y = _scalar(model(x, training=True))
            # The loss is an output too, as in a train step (it is logged): otherwise the last
            # layer's forward op would be pruned, since a sum's gradient does not need it.
            return y, tape.gradient(y, model.trainable_variables)

    else:

        def fn(x):
            return _scalar(model(x, training=False))

    graph = tf.function(fn).get_concrete_function(spec).graph
    macs = sum(_op_macs(op) for op in _live_ops(graph))
    return 2.0 * macs / batch


# ----------------------------------------------------------------------------- matmul peak
def matmul_peak(dtype: str = "float32", n: int = 2048, seconds: float = 1.5) -> tuple[float, float]:
    """GFLOP/s (2 n^3 per product) of a loop of n x n matmuls in ``dtype``.

    Measured with the same TensorFlow kernels (oneDNN on x86) as the model, so the ratio of a
    train step's GFLOP/s to this number is the fraction of reachable compute it uses.

    Returns:
      (median wall-clock GFLOP/s over 3 runs, GFLOP per CPU-second of this process over the
      same runs). On a shared machine the second is the load-independent one: it is the
      per-core rate, about the wall rate divided by the cores when the machine is idle.
    """
    import tensorflow as tf

    tdtype = tf.as_dtype(dtype)
    a = tf.cast(tf.random.stateless_normal([n, n], [1, 2]), tdtype)
    b = tf.cast(tf.random.stateless_normal([n, n], [3, 4]), tdtype)

    @tf.function
    def loop(a, b, k):
        acc = tf.zeros([], tf.float32)
        for _ in tf.range(k):
            # A data dependency on every product keeps the loop from being optimised away.
            acc += tf.cast(tf.matmul(a, b)[0, 0], tf.float32)
        return acc

    loop(a, b, tf.constant(1)).numpy()
    t0 = time.perf_counter()
    loop(a, b, tf.constant(1)).numpy()
    one = max(time.perf_counter() - t0, 1e-6)
    k = max(1, int(seconds / 3 / one))
    rates = []
    c0 = cpu_seconds()
    for _ in range(3):
        t0 = time.perf_counter()
        loop(a, b, tf.constant(k)).numpy()
        rates.append(2.0 * n**3 * k / (time.perf_counter() - t0) / 1e9)
    per_cpu = 3 * 2.0 * n**3 * k / max(cpu_seconds() - c0, 1e-9) / 1e9
    return float(np.median(rates)), per_cpu
