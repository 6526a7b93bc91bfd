"""A model traced for a runtime other than Keras: input spec, traced and frozen graphs, the TFLite
flatbuffer, and what a conversion costs in memory.

:mod:`eegdino_tf.export` writes these graphs as artifacts; :mod:`eegdino_tf.litert` runs the
flatbuffer as ``predict``'s LiteRT runtime. This module knows models only through what every
Keras model has, plus two attributes of ours (``serving_output``, ``check_finite``), so it
imports no model module. TensorFlow loads on first use, so ``eegdino-tf --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eegdino_tf import hardware
from eegdino_tf.errors import ConfigError, EEGDinoError, ExportError, InputError

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

#: How each format writes GELU and the attention softmax (:class:`eegdino_tf.layers.GraphForm`
#: fields): the TFLite converter maps ``tf.nn.gelu`` to its builtin GELU, tf2onnx maps only
#: ``Erf``; TFLite and ONNX Runtime run ``tf.nn.softmax`` as one fused kernel.
GRAPH_FORMS = {
    "saved-model": {"gelu": "erfc", "softmax": "op"},
    "tflite": {"gelu": "erfc", "softmax": "op"},
    "onnx": {"gelu": "erf", "softmax": "op"},
}
#: Whether each format's artifact keeps the model's NaN/Inf input check: ``CheckNumerics``
#: exists in neither TFLite nor ONNX, whose graphs instead turn an example with a non-finite
#: sample into NaN outputs (:func:`non_finite_to_nan`); LiteRT ``predict`` checks its input in
#: NumPy too. Either way non-finite input never gives finite output.
#: The one place this is decided: exporters and the CLI's loading follow it.
KEEPS_FINITE_CHECK = {"saved-model": True, "tflite": False, "onnx": False}
#: Peak memory of :func:`tflite_flatbuffer` per byte of float32 weights, roughly: peak RSS over
#: the RSS with the model built, measured small 17x (a fixed ~160 MB plus 7.6x), medium 8.9x,
#: large 7.0x (5.4 GB); converting a frozen graph took 46x, 42x and more than 13 GB. Not the
#: ONNX export: tf2onnx converts a frozen graph (medium peaked at 6.5 GB, about 50x).
CONVERSION_BYTES_PER_WEIGHT_BYTE = 10
#: The same for the ONNX export (tf2onnx converts a frozen graph: medium peaked at 6.5 GB).
ONNX_CONVERSION_BYTES_PER_WEIGHT_BYTE = 50
#: The name prefix of :func:`non_finite_to_nan`'s ops.
NAN_POISON = "nan_poison"
#: The ops a full-integer int8 graph keeps float: the patch embedding's temporal convolution
#: stack (three conv, GroupNorm, GELU blocks). Its GroupNorms take statistics over the whole
#: window, so the patches of a 300 uV blink stay tenfold outliers in every int8 tensor there,
#: leaving the other patches a few int8 steps, until the transformer's per-token LayerNorms.
#: Measured on the small encoder, calibrated with blinks, held-out cosine min clean / with a
#: blink: 19 x 10 s at 200 Hz 0.9945 / 0.9880 with everything int8 but the first conv and
#: its GroupNorm, 0.9968 / 0.9937 with the stack float (about 30 of 476 ops). Matched against
#: the converter's tensor names (path components without their ``_N`` suffix).
INT8_FLOAT_SCOPES = (("temporal",),)
#: What our models name their output in an artifact (their ``serving_output``).
SERVING_OUTPUTS = ("tokens", "logits")


def check_conversion_memory(model: keras.Model) -> None:
    """Raise :class:`ConfigError` when converting ``model`` would need more memory than this
    machine has (the process would be killed midway)."""
    need = CONVERSION_BYTES_PER_WEIGHT_BYTE * 4 * model.count_params()
    memory = hardware.physical_memory()
    if memory is not None and need > memory:
        raise ConfigError(
            f"converting this model for runtime='litert' takes about {need / 2**30:.1f} GiB "
            f"({CONVERSION_BYTES_PER_WEIGHT_BYTE}x its float32 weights), more than this "
            f"machine's {memory / 2**30:.1f} GiB; use runtime='keras'"
        )


def input_spec(
    model: keras.Model, batch: int | None, channels: int | None, samples: int | None
) -> tf.TensorSpec:
    """The ``eeg`` TensorSpec ``[batch, channels, samples]`` float32 (None: any), after
    checking the shape fits the model."""
    import tensorflow as tf

    from eegdino_tf.layers import check_eeg_shape

    check_eeg_shape((batch, channels, samples), getattr(model, "partial_patch", "error"))
    return tf.TensorSpec([batch, channels, samples], tf.float32, name="eeg")


def named_outputs(model: keras.Model, eeg: Any, extended: bool = False) -> dict[str, tf.Tensor]:
    """The named outputs of ``model`` on ``eeg``: ``tokens`` ``[B, 1 + N, D]`` for an encoder,
    ``logits`` ``[B, K]`` for a classifier (their ``serving_output``), plus the SavedModel's
    extras when ``extended``. A model of the user's own (e.g. ``Input -> encoder -> Dense``)
    keeps its own output names and gets no extras: its outputs are not tokens."""
    out = model(eeg, training=False)
    name = getattr(model, "serving_output", None)
    if name in SERVING_OUTPUTS:
        return {name: out, **(_extras(name, out) if extended else {})}
    if isinstance(out, dict):
        return dict(out)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(outs):
        names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    return dict(zip(names, outs, strict=True))


def trace(
    model: keras.Model,
    spec: tf.TensorSpec,
    *,
    form: dict[str, str],
    extended: bool = False,
    non_finite_out: bool = False,
) -> Any:
    """A concrete function ``eeg -> {name: tensor}`` (:func:`named_outputs`) written in
    ``form`` (``GraphForm`` fields, see :data:`GRAPH_FORMS`). With ``non_finite_out`` an
    example with a NaN or Inf sample gets NaN in every output (:func:`non_finite_to_nan`)."""
    import tensorflow as tf

    from eegdino_tf.layers import GraphForm, graph_form

    def outputs(eeg: tf.Tensor) -> dict[str, tf.Tensor]:
        named = named_outputs(model, eeg, extended)
        return non_finite_to_nan(eeg, named) if non_finite_out else named

    serve = tf.function(outputs, input_signature=[spec])
    with graph_form(GraphForm(**form)):
        return serve.get_concrete_function()


def non_finite_to_nan(eeg: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``outputs`` plus, per example, the sum of ``eeg * 0``: zero for finite input, NaN when
    any sample is NaN or Inf, so such an example's outputs are all NaN, in every quantization
    (the sum and the add stay float in a dynamic-range int8 graph; a full-integer int8 graph
    keeps the ops named :data:`NAN_POISON` float, :func:`tflite_flatbuffer`), and the others
    unchanged. The artifacts without a ``CheckNumerics`` op (:data:`KEEPS_FINITE_CHECK`) take
    it."""
    import tensorflow as tf

    poison = tf.reduce_sum(
        tf.multiply(eeg, 0.0, name=f"{NAN_POISON}_mul"), axis=[1, 2], name=f"{NAN_POISON}_sum"
    )
    return {
        name: tf.add(
            out,
            tf.reshape(poison, [-1] + [1] * (out.shape.rank - 1), name=f"{NAN_POISON}_reshape"),
            name=f"{NAN_POISON}_add",
        )
        for name, out in outputs.items()
    }


def frozen(concrete: Any, spec: tf.TensorSpec) -> Any:
    """``concrete`` with its variables and captured tensors folded into constants.

    The TFLite converter of TF 2.21 keeps Keras 3 variables as uninitialised ``VAR_HANDLE``
    ops (the model then outputs garbage), and tf2onnx turns a captured tensor into an extra
    graph input; a frozen graph avoids both.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    constants = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    @tf.function(input_signature=[spec])
    def serve(eeg):
        return tf.nest.pack_sequence_as(structure, constants(eeg))

    return serve


def for_format(model: keras.Model, fmt: str) -> keras.Model:
    """``model`` as ``fmt``'s artifact holds it: itself, or where the format has no NaN/Inf
    check (:data:`KEEPS_FINITE_CHECK`) and ``model.check_finite`` is on, a copy with the same
    weights built without it (from its own config, so a classifier's encoder too)."""
    if KEEPS_FINITE_CHECK[fmt] or not getattr(model, "check_finite", False):
        return model
    copy = type(model).from_config(_finite_check_off(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _finite_check_off(config: Any) -> Any:
    """``config`` (nested dicts and lists) with every ``check_finite`` set to False."""
    if isinstance(config, dict):
        return {
            k: False if k == "check_finite" else _finite_check_off(v) for k, v in config.items()
        }
    if isinstance(config, list):
        return [_finite_check_off(v) for v in config]
    return config


def variables_module(model: keras.Model) -> tf.Module:
    """A ``tf.Module`` tracking the ``tf.Variable`` under each of ``model``'s Keras variables,
    so that a SavedModel of a function over ``model`` holds its weights (as variables)."""
    import tensorflow as tf

    module = tf.Module()
    module.weights = [getattr(v, "value", v) for v in model.variables]
    return module


def tflite_flatbuffer(
    model: keras.Model,
    spec: tf.TensorSpec,
    quantize: str = "none",
    calibration: np.ndarray | None = None,
    int8_io: bool = False,
) -> bytes:
    """``model`` converted to a TFLite flatbuffer of builtin ops only, for inputs of ``spec``
    (its batch may be None: any batch), without the NaN/Inf input check; ``quantize`` is
    ``"none"``, ``"float16"``, ``"dynamic-int8"`` (weights) or ``"int8"`` (full-integer: int8
    weights and activations calibrated on ``calibration`` ``[N, C, T]``, ``spec``'s C and T;
    :data:`INT8_FLOAT_SCOPES` and the NaN policy's ops stay float; ``int8_io``: int8 input and
    output tensors, and no NaN policy, since int8 cannot hold NaN)."""
    import tempfile

    import tensorflow as tf

    model = for_format(model, "tflite")
    traced = trace(model, spec, form=GRAPH_FORMS["tflite"], non_finite_out=not int8_io)
    # The converter reads the weights from a SavedModel's variables and freezes them itself:
    # a graph frozen here would hold them as constants, copied some 40 times on the way.
    with tempfile.TemporaryDirectory(prefix="eegdino-tflite-") as folder:
        tf.saved_model.save(variables_module(model), folder, signatures=traced)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        hardware.release_freed_memory()  # the copy it loaded to read the signature
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        with converter_errors("TFLite"):
            if quantize == "int8":
                flatbuffer = _full_int8(converter, spec, calibration, int8_io)
            else:
                flatbuffer = converter.convert()
    check_builtin_ops(flatbuffer)
    return flatbuffer


def _full_int8(converter: Any, spec: tf.TensorSpec, calibration: Any, int8_io: bool) -> bytes:
    """The full-integer int8 flatbuffer: calibrated on ``calibration`` one window at a time,
    then quantized with the float ops kept float by name (TFLite's selective quantization,
    ``tf.lite.experimental.QuantizationDebugger``'s ``denylisted_nodes``)."""
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python.util import modify_model_io_type

    windows = np.asarray(calibration, np.float32)
    batch = spec.shape[0] or 1

    def representative() -> Iterator[list[np.ndarray]]:
        for x in windows:
            yield [np.repeat(x[None], batch, axis=0)]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter, deprecated
        warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative
        )
        calibrated = Interpreter(model_content=debugger.calibrated_model)
        keep = [t["name"] for t in calibrated.get_tensor_details() if _kept_float(t["name"])]
        if not int8_io:  # the NaN policy's add writes the outputs
            keep += [t["name"] for t in calibrated.get_output_details()]
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep)
        flatbuffer = debugger.get_nondebug_quantized_model()
    if int8_io:
        flatbuffer = modify_model_io_type(flatbuffer, tf.int8, tf.int8)
    return bytes(flatbuffer)


def _kept_float(name: str) -> bool:
    """Whether the converter's tensor ``name`` (``;``-joined op paths) is one of the NaN
    policy's or in :data:`INT8_FLOAT_SCOPES`."""
    import re

    for path in name.split(";"):
        parts = [re.sub(r"_\d+$", "", part) for part in path.split("/")]
        if parts[0].startswith(NAN_POISON):
            return True
        for scope in INT8_FLOAT_SCOPES:
            if any(tuple(parts[i : i + len(scope)]) == scope for i in range(len(parts))):
                return True
    return False


def int8_op_counts(flatbuffer: bytes) -> tuple[int, int]:
    """``(int8 ops, all ops)`` of a flatbuffer's main graph: an int8 op has an int8 tensor
    among its inputs and outputs and no float one (int32 biases and shapes allowed)."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)
    int8 = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        tensors = [*op.InputsAsNumpy(), *op.OutputsAsNumpy()]
        types = {graph.Tensors(int(t)).Type() for t in tensors if t >= 0}
        int8 += schema.TensorType.INT8 in types and types <= {
            schema.TensorType.INT8,
            schema.TensorType.INT32,
        }
    return int8, graph.OperatorsLength()


def int8_input_range(flatbuffer: bytes) -> tuple[float, float, float, int] | None:
    """``(low, high, scale, zero_point)``: the microvolts the input's int8 step covers without
    clipping, from the input tensor's quantization (int8 input) or from the first ``QUANTIZE``
    op reading the float input; ``None`` for a graph whose input is never quantized."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    graph = model.Subgraphs(0)
    source = graph.Inputs(0)
    quantized = graph.Tensors(source)
    if quantized.Type() != schema.TensorType.INT8:
        quantizes = [
            graph.Operators(i)
            for i in range(graph.OperatorsLength())
            if _builtin(model, graph.Operators(i)) == schema.BuiltinOperator.QUANTIZE
            and graph.Operators(i).Inputs(0) == source
        ]
        if not quantizes:
            return None
        quantized = graph.Tensors(quantizes[0].Outputs(0))
    params = quantized.Quantization()
    scale, zero = float(params.Scale(0)), int(params.ZeroPoint(0))
    return (-128 - zero) * scale, (127 - zero) * scale, scale, zero


def int8_output_quantization(flatbuffer: bytes) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of a flatbuffer's first output when it is int8, else ``None``."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)
    tensor = graph.Tensors(graph.Outputs(0))
    if tensor.Type() != schema.TensorType.INT8:
        return None
    return float(tensor.Quantization().Scale(0)), int(tensor.Quantization().ZeroPoint(0))


def float_runner(signature: Any) -> Any:
    """A LiteRT signature runner of ``eeg`` as a function of float32 microvolts returning float
    outputs: for a file with int8 input the input is quantized with the file's scale and zero
    point (:func:`to_int8`, which refuses NaN), int8 outputs are dequantized."""
    import numpy as np

    given = signature.get_input_details()["eeg"]
    outputs = signature.get_output_details()
    if given["dtype"] != np.int8:
        return lambda eeg: signature(eeg=eeg)

    def run(eeg: np.ndarray) -> dict[str, np.ndarray]:
        got = signature(eeg=to_int8(eeg, *given["quantization"]))
        return {k: from_int8(v, *outputs[k]["quantization"]) for k, v in got.items()}

    return run


def to_int8(x: Any, scale: float, zero_point: int) -> np.ndarray:
    """Float microvolts as a file's int8 input (``round(x / scale) + zero_point``, clipped to
    -128..127); an :class:`InputError` for a NaN or Inf sample, which int8 cannot hold."""
    import numpy as np

    x = np.asarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(
            f"the input holds {int(np.sum(~np.isfinite(x)))} NaN/Inf sample(s); an int8 input "
            "cannot hold them: expected finite microvolts"
        )
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def from_int8(q: Any, scale: float, zero_point: int) -> np.ndarray:
    """An int8 output as float32 (``(q - zero_point) * scale``); a float one as it is."""
    import numpy as np

    q = np.asarray(q)
    if q.dtype != np.int8:
        return q
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _builtin(model: Any, op: Any) -> int:
    """The builtin operator code of ``op`` (a flatbuffer ``Operator`` of ``model``)."""
    code = model.OperatorCodes(op.OpcodeIndex())
    return max(code.BuiltinCode(), code.DeprecatedBuiltinCode())


def tflite_operators(flatbuffer: bytes) -> dict[str, bool]:
    """The operators a TFLite flatbuffer uses: name -> whether it is a TFLite builtin.

    Flex (Select TF) and custom ops appear under their custom code, e.g. ``FlexErf``.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    ops = {}
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            ops[custom.decode() if isinstance(custom, bytes) else str(custom)] = False
        else:
            ops[names.get(builtin, str(builtin))] = True
    return ops


def check_builtin_ops(flatbuffer: bytes) -> None:
    """Raise :class:`ExportError` if the flatbuffer needs Flex (Select TF) or custom ops."""
    extra = sorted(op for op, builtin in tflite_operators(flatbuffer).items() if not builtin)
    if extra:
        raise ExportError(
            f"the TFLite model needs non-builtin ops {extra} (Flex/Select TF or custom), "
            "which the plain LiteRT runtime on Android does not have"
        )


def min_cosine(got: dict[str, Any], reference: dict[str, Any]) -> float:
    """Smallest per-example cosine similarity of a conversion's global token (or logits) to
    the reference's: how far a quantized graph turned the answers."""
    return float(min(cosines(got, reference)))


def cosines(got: dict[str, Any], reference: dict[str, Any]) -> np.ndarray:
    """Per-example cosine similarity ``[B]`` of the global token (``tokens[:, 0]``; ``logits``
    for a classifier) of ``got`` to ``reference``'s."""
    import numpy as np

    name = "tokens" if "tokens" in got else "logits"
    a, b = np.asarray(got[name], np.float64), np.asarray(reference[name], np.float64)
    if name == "tokens":
        a, b = a[:, 0], b[:, 0]
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@contextlib.contextmanager
def converter_errors(what: str) -> Iterator[None]:
    """Turn a converter's exception into a one-line :class:`ExportError`."""
    try:
        yield
    except EEGDinoError:
        raise
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # The TFLite converter's message is pages of MLIR; these lines name the missing ops.
        key = [line for line in lines if line.startswith(("TF Select ops:", "Custom ops:"))]
        detail = "; ".join(key or lines[-1:]) or type(err).__name__
        raise ExportError(f"{what} conversion failed: {detail[:600]}") from err


def _extras(name: str, out: tf.Tensor) -> dict[str, tf.Tensor]:
    """A SavedModel's extra outputs: ``global_token`` (token 0) and ``mean_token`` (mean of the
    patch tokens) ``[B, D]`` beside ``tokens``; ``probabilities`` ``[B, K]`` beside ``logits``."""
    import tensorflow as tf

    if name == "tokens":
        return {"global_token": out[:, 0], "mean_token": tf.reduce_mean(out[:, 1:], axis=1)}
    return {"probabilities": tf.nn.softmax(out, axis=-1)}
