"""Score uint8 images with an exported model in each runtime that can run it.

Every runtime maps ``images`` (uint8 ``[B, H, W, C]`` at the export's input shape) to
``{output name: [B] array}``, the export's serving signature; ``load(runtime, path)`` picks the
model file of an export folder by format. The benchmark (``benchmarks/serving.py``) and the
parity tests call them the same way, so a number in the benchmark is the number of this code.

Runtimes (optional packages are imported only when used):
  savedmodel   ``tf.saved_model.load`` (float64 scores)
  tflite       the LiteRT interpreter (``ai_edge_litert`` when installed, else
               ``tf.lite.Interpreter``), XNNPACK on CPU
  onnxruntime  ``onnxruntime.InferenceSession`` on ``model.onnx`` (extra ``[export]``)
  openvino     ``openvino`` compiling ``model.tflite`` for the CPU (extra ``[openvino]``)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import numpy as np

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.registry import Registry

ScoreFn = Callable[[np.ndarray], dict[str, np.ndarray]]
RUNTIMES: Registry[Callable[[str, int], ScoreFn]] = Registry("runtime")


class RuntimeMissingError(UserError, ImportError):
    """The runtime's package is not installed; the message names the pip extra."""


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeMissingError(
            f"the '{module}' package is not installed; pip install "
            f"'deep-representation-one-class[{extra}]'"
        ) from None


def _file(path: str, name: str) -> str:
    candidate = os.path.join(path, name) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise UserError(f"{path} holds no {name}; export it with --format for that runtime")
    return candidate


@RUNTIMES.register("savedmodel")
def savedmodel(path: str, threads: int = 0) -> ScoreFn:
    """The SavedModel's serving signature (TensorFlow's own thread pools)."""
    import tensorflow as tf

    sig = tf.saved_model.load(path).signatures["serving_default"]
    name = next(iter(sig.structured_input_signature[1]))

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in sig(**{name: tf.constant(images)}).items()}

    run.model = sig  # keeps the loaded object alive (its variables)
    return run


@RUNTIMES.register("tflite")
def tflite(path: str, threads: int = 0) -> ScoreFn:
    """The TFLite file through LiteRT (or TensorFlow's bundled interpreter)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    interp = Interpreter(model_path=_file(path, "model.tflite"), num_threads=threads or None)
    runner = interp.get_signature_runner("serving_default")
    name = next(iter(runner.get_input_details()))

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(runner(**{name: np.ascontiguousarray(images)}))

    return run


@RUNTIMES.register("onnxruntime", "onnx")
def onnxruntime(path: str, threads: int = 0) -> ScoreFn:
    """``model.onnx`` in ONNX Runtime's CPU provider."""
    ort = _import("onnxruntime", "export")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(
        _file(path, "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {name: images})))

    return run


def _tflite_output_names(model_file: str) -> dict[str, str]:
    """TFLite tensor name -> signature output name (OpenVINO names outputs by tensor)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    interp = Interpreter(model_path=model_file)
    details = interp.get_signature_runner("serving_default").get_output_details()
    by_index = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    return {by_index[d["index"]]: name for name, d in details.items()}


@RUNTIMES.register("openvino")
def openvino(path: str, threads: int = 0) -> ScoreFn:
    """The export's ``model.tflite`` compiled by OpenVINO for the CPU (dynamic batch).

    OpenVINO 2026.4 reads the TFLite file; it cannot convert the ONNX file (its ONNX frontend
    rejects the Loop that tf2onnx makes of the per-image preprocessing) nor the SavedModel (its
    TensorFlow frontend rejects the resource variables).
    """
    ov = _import("openvino", "openvino")
    model_file = _file(path, "model.tflite")
    names = _tflite_output_names(model_file)
    core = ov.Core()
    # f32 inference precision: OpenVINO would otherwise run bf16 on CPUs that have it.
    config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(model_file), "CPU", config)
    request = compiled.create_infer_request()
    outputs = [(o, names.get(o.get_any_name(), o.get_any_name())) for o in compiled.outputs]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        result = request.infer({0: images})
        return {name: np.array(result[o]) for o, name in outputs}

    return run


def load(runtime: str, path: str, threads: int = 0) -> ScoreFn:
    """The scoring function of the export at ``path`` in ``runtime`` (a ``RUNTIMES`` name).

    Args:
      runtime: savedmodel, tflite, onnxruntime or openvino.
      path: an export folder (or the model file itself).
      threads: intra-op threads (0 = the runtime's default).

    Raises:
      RuntimeMissingError: the runtime's package is not installed.
      UserError: unknown runtime, or no model file of that kind at ``path``.
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES.names())}")
    return RUNTIMES.get(runtime)(path, threads)
