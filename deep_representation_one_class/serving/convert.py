"""Convert an exported SavedModel to TFLite or ONNX, for runtimes without full TensorFlow.

The converters read only the SavedModel's ``serving_default`` signature (its named inputs and
outputs), so any export with such a signature converts, whatever the run's level:

1. The signature is frozen (variables become constants) and every float64, bfloat16 and float16
   tensor of the graph is lowered to float32. The exports compute their scores in float64 (the
   classifiers' state is stored as float64), which TFLite's built-in kernels do not implement.
   The network itself is float32: a run evaluates and serves in float32 whatever it trained in
   (``--eval_precision``), and ``serving.export`` refuses to convert a run evaluated in
   bfloat16/float16 (``--eval_precision=train``), whose scores the float32 graph would not
   reproduce; the lowering of those types only makes any SavedModel convertible. The float32
   scores agree with the float64 ones to about 1e-5 relative (the parity tests hold them to
   1e-3, for float32- and bfloat16-trained runs). The lowered graph is saved as an
   intermediate float32 SavedModel with the same signature names.
2. TFLite: ``tf.lite.TFLiteConverter`` on that SavedModel, built-in ops only, so the file runs
   on the stand-alone LiteRT interpreter as well as ``tf.lite.Interpreter``; ``quantize=
   "dynamic_int8"`` stores weights as int8 (dynamic-range quantisation: activations stay float).
3. ONNX: ``tf2onnx`` on the frozen float32 graph (optional extra ``[export]``); the ONNX inputs
   and outputs carry the signature's names, so ``onnxruntime`` callers feed ``{"images": x}``
   and get ``{"kde": ..., ...}`` back.

``export_converted`` (called by ``serving.export.export_model``, the API and the
``export --format`` command) writes the run's SavedModel to a scratch folder, converts it and
renames the result into place: an export folder holds ``model.tflite`` or ``model.onnx`` plus
the same ``assets.extra/droc_export.json`` as a SavedModel export (classifiers, input shape,
thresholds, and the format).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.registry import Registry
from deep_representation_one_class.utils import io

SIGNATURE = "serving_default"
QUANTIZE = ("none", "dynamic_int8")
ONNX_OPSET = 17


class ConvertError(UserError, ValueError):
    """The conversion cannot be done; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: the file it writes in the export folder and its converter.

    Attributes:
      filename: the model file inside the export folder ("" = the folder is the SavedModel).
      convert: ``fn(saved_model_dir, out_path, quantize)``; None for the SavedModel itself.
      needs: the import the converter needs, and the pip extra that provides it.
    """

    filename: str
    convert: Callable[[str, str, str], None] | None
    needs: tuple[str, str] = ("", "")


FORMATS: Registry[Format] = Registry("export format")


# ----------------------------------------------------------------------------- lowering
def _signature(saved_model_dir: str):
    model = tf.saved_model.load(saved_model_dir)
    if SIGNATURE not in model.signatures:
        raise ConvertError(
            f"{saved_model_dir} has no '{SIGNATURE}' signature; export it with the export command"
        )
    return model, model.signatures[SIGNATURE]


# float64 (the scorers), bfloat16 and float16 (mixed-precision runs: --precision=auto is
# mixed_bfloat16 on CPUs with AVX512_BF16) all become float32: TFLite's built-in kernels and
# ONNX Runtime's CPU convolutions have none of them.
_LOWERED = (tf.float64, tf.bfloat16, tf.float16)


def _lower_attr(attr) -> None:
    lowered = {d.as_datatype_enum for d in _LOWERED}
    single = tf.float32.as_datatype_enum
    if attr.HasField("type") and attr.type in lowered:
        attr.type = single
    if attr.HasField("list"):
        for i, t in enumerate(attr.list.type):
            if t in lowered:
                attr.list.type[i] = single
    if attr.HasField("tensor") and attr.tensor.dtype in lowered:
        value = tf.make_ndarray(attr.tensor).astype(np.float32)
        attr.tensor.CopyFrom(tf.make_tensor_proto(value))


def lower_to_float32(graph_def) -> None:
    """Rewrites every float64/bfloat16/float16 dtype and constant of ``graph_def`` (and its
    functions) to float32, in place."""
    lowered = {d.as_datatype_enum for d in _LOWERED}
    for node in graph_def.node:
        for attr in node.attr.values():
            _lower_attr(attr)
    for fn in graph_def.library.function:
        for node in fn.node_def:
            for attr in node.attr.values():
                _lower_attr(attr)
        for arg in [*fn.signature.input_arg, *fn.signature.output_arg]:
            if arg.type in lowered:
                arg.type = tf.float32.as_datatype_enum


@dataclasses.dataclass
class FrozenSignature:
    """A signature as one float32 graph: its GraphDef and the tensor names of its ends.

    Attributes:
      graph_def: the frozen, float32 graph.
      inputs: signature input name -> (graph tensor name, TensorSpec).
      outputs: signature output name -> graph tensor name.
    """

    graph_def: object
    inputs: dict[str, tuple[str, tf.TensorSpec]]
    outputs: dict[str, str]


def freeze_signature(saved_model_dir: str) -> FrozenSignature:
    """The ``serving_default`` signature of a SavedModel, frozen and lowered to float32."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    _, fn = _signature(saved_model_dir)
    # Functional While (map_fn) is kept: tf2onnx converts it to a Loop, TFLite to WHILE.
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    graph_def = frozen.graph.as_graph_def()
    lower_to_float32(graph_def)
    # Signature functions take keyword inputs (structured_input_signature[1]) and return a
    # dict; both flatten in sorted-key order, the order of frozen.inputs / frozen.outputs.
    in_specs = fn.structured_input_signature[1]
    inputs = {
        name: (t.name, tf.TensorSpec(in_specs[name].shape, in_specs[name].dtype, name=name))
        for name, t in zip(sorted(in_specs), frozen.inputs)
    }
    outputs = dict(zip(sorted(fn.structured_outputs), (t.name for t in frozen.outputs)))
    return FrozenSignature(graph_def, inputs, outputs)


def float32_saved_model(saved_model_dir: str, out_dir: str) -> FrozenSignature:
    """Writes the float32 version of a SavedModel's signature as a new SavedModel."""
    sig = freeze_signature(saved_model_dir)
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(sig.graph_def, name=""), []
    )
    in_names = sorted(sig.inputs)
    out_names = sorted(sig.outputs)
    pruned = wrapped.prune(
        [wrapped.graph.as_graph_element(sig.inputs[n][0]) for n in in_names],
        [wrapped.graph.as_graph_element(sig.outputs[n]) for n in out_names],
    )

    @tf.function(input_signature=[sig.inputs[n][1] for n in in_names])
    def serve(*args):
        return dict(zip(out_names, pruned(*args)))

    module = tf.Module()
    module.graph = wrapped
    module.serve = serve
    tf.saved_model.save(module, out_dir, signatures={SIGNATURE: serve})
    return sig


# ----------------------------------------------------------------------------- converters
def _check_quantize(quantize: str) -> None:
    if quantize not in QUANTIZE:
        raise ConvertError(f"unknown --quantize '{quantize}'; valid: {', '.join(QUANTIZE)}")


def to_tflite(saved_model_dir: str, out_path: str, quantize: str = "none") -> None:
    """Converts a SavedModel's signature to a TFLite flatbuffer (built-in ops only)."""
    _check_quantize(quantize)
    with tempfile.TemporaryDirectory(prefix=".tmp_f32_", dir=os.path.dirname(out_path)) as tmp:
        float32_saved_model(saved_model_dir, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        if quantize == "dynamic_int8":
            # Dynamic-range quantisation: int8 weights, float activations; no calibration data.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # the converter raises several private error types
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConvertError(f"TFLite conversion failed: {first}") from None
    with open(out_path, "wb") as f:
        f.write(flatbuffer)


def _rename_onnx_values(graph, renames: dict[str, str]) -> None:
    """Renames graph values (e.g. ``Identity_1:0`` -> ``gde``) everywhere they appear,
    including the bodies of loops (``map_fn`` becomes an ONNX Loop that reads the input)."""
    for node in graph.node:
        node.input[:] = [renames.get(v, v) for v in node.input]
        node.output[:] = [renames.get(v, v) for v in node.output]
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename_onnx_values(attr.g, renames)
            for sub in attr.graphs:
                _rename_onnx_values(sub, renames)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)


def to_onnx(saved_model_dir: str, out_path: str, quantize: str = "none") -> None:
    """Converts a SavedModel's signature to ONNX through tf2onnx (float32 throughout)."""
    _check_quantize(quantize)
    if quantize != "none":
        raise ConvertError(
            "--quantize applies to --format=tflite only; export ONNX without it (onnxruntime "
            "has its own quantisation tools)"
        )
    tf2onnx = _require("tf2onnx", "export")
    sig = freeze_signature(saved_model_dir)
    in_tensors = [sig.inputs[n][0] for n in sorted(sig.inputs)]
    out_tensors = [sig.outputs[n] for n in sorted(sig.outputs)]
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            sig.graph_def, input_names=in_tensors, output_names=out_tensors, opset=ONNX_OPSET
        )
    except Exception as e:  # tf2onnx raises plain exceptions of many kinds
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConvertError(f"ONNX conversion failed: {first}") from None
    renames = {t: n for n, (t, _) in sig.inputs.items()}
    renames.update({t: n for n, t in sig.outputs.items()})
    _rename_onnx_values(model.graph, renames)
    with open(out_path, "wb") as f:
        f.write(model.SerializeToString())


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConvertError(
            f"this needs the '{module}' package; install it with "
            f"pip install 'deep-representation-one-class[{extra}]'"
        ) from None


FORMATS.add("savedmodel", Format("", None))
FORMATS.add("tflite", Format("model.tflite", to_tflite))
FORMATS.add("onnx", Format("model.onnx", to_onnx, ("tf2onnx", "export")))


# ----------------------------------------------------------------------------- export
def check_format(fmt: str, quantize: str = "none") -> Format:
    """The ``Format`` for ``fmt``; refuses unknown names, missing packages, bad quantisation."""
    if fmt not in FORMATS:
        raise ConvertError(f"unknown --format '{fmt}'; valid: {', '.join(FORMATS.names())}")
    _check_quantize(quantize)
    spec = FORMATS.get(fmt)
    if quantize != "none" and FORMATS.canonical(fmt) != "tflite":
        raise ConvertError("--quantize applies to --format=tflite only")
    if spec.needs[0]:
        _require(*spec.needs)
    return spec


def _replace_dir(stage: str, out_dir: str) -> None:
    """Renames ``stage`` onto ``out_dir``; an existing ``out_dir`` is moved aside first."""
    old = None
    if os.path.lexists(out_dir):
        old = tempfile.mkdtemp(prefix=".tmp_old_export_", dir=os.path.dirname(out_dir))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_converted(
    run_dir: str,
    out_dir: str,
    fmt: str,
    quantize: str,
    classifiers: Sequence[str],
    feature: str,
    overwrite: bool,
    *,
    export_saved_model: Callable[..., str],
    check_out: Callable[[str, str, bool], None],
    info_path: str,
) -> str:
    """Exports a run in ``fmt``: its SavedModel, converted, renamed into ``out_dir`` at the end.

    Called by ``serving.export.export_model``, which passes its own SavedModel exporter, its
    check of ``out_dir`` and the path of its metadata file (so that this module does not import
    the exporter that imports it).

    Args:
      run_dir: the finished run folder.
      out_dir: destination folder (``check_out``'s rules: new or empty, or with ``overwrite``
        an earlier export of any format).
      fmt: a name in ``FORMATS`` other than savedmodel.
      quantize: ``"none"`` or (TFLite) ``"dynamic_int8"``.
      classifiers, feature, overwrite: as for the SavedModel exporter.
      export_saved_model: ``fn(run_dir, out_dir, classifiers, feature)`` writing the SavedModel.
      check_out: ``fn(run_dir, out_dir, overwrite)`` raising when ``out_dir`` may not be used.
      info_path: the export's metadata file, relative to the export folder.

    Returns:
      ``out_dir``; the model file is ``out_dir/FORMATS[fmt].filename``.
    """
    spec = check_format(fmt, quantize)
    if spec.convert is None:
        raise ConvertError(f"--format={fmt} is written by the SavedModel exporter itself")
    check_out(run_dir, out_dir, overwrite)
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".tmp_convert_", dir=parent)
    try:
        sm_dir = os.path.join(scratch, "savedmodel")
        stage = os.path.join(scratch, "stage")
        export_saved_model(run_dir, sm_dir, classifiers, feature)
        os.makedirs(os.path.join(stage, os.path.dirname(info_path)))
        spec.convert(sm_dir, os.path.join(stage, spec.filename), quantize)
        info = io.read_json(os.path.join(sm_dir, info_path), expect=dict)
        info.update(
            format=FORMATS.canonical(fmt),
            model_file=spec.filename,
            quantize=quantize,
            dtype="float32",
            signature=SIGNATURE,
        )
        io.write_json(os.path.join(stage, info_path), info)
        _replace_dir(stage, out_dir)
        return out_dir
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
