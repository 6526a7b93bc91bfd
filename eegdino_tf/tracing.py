"""A model traced for a runtime other than Keras: input spec, traced and frozen graphs, the TFLite
flatbuffer, and what a conversion costs in memory.

:mod:`eegdino_tf.export` writes these graphs as artifacts; :mod:`eegdino_tf.litert` runs the
flatbuffer as ``predict``'s LiteRT runtime. This module knows models only through what every
Keras model has, plus two attributes of ours (``serving_output``, ``check_finite``), so it
imports no model module. TensorFlow loads on first use, so ``eegdino-tf --help`` stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eegdino_tf import hardware
from eegdino_tf.errors import ConfigError, EEGDinoError, ExportError

if TYPE_CHECKING:
    import keras
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
#: Peak memory of a TFLite or ONNX conversion per byte of float32 weights, roughly (the
#: converters hold several copies; measured peak RSS over the RSS before: LiteRT small 43x,
#: medium 41x; medium's ONNX export, 132 MB of weights, peaked at 6.5 GB; large's TFLite and
#: ONNX exports passed 13 GB).
CONVERSION_BYTES_PER_WEIGHT_BYTE = 45
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
    (the sum and the add stay float in a dynamic-range int8 graph), and the others unchanged.
    The artifacts without a ``CheckNumerics`` op (:data:`KEEPS_FINITE_CHECK`) take it."""
    import tensorflow as tf

    poison = tf.reduce_sum(eeg * 0.0, axis=[1, 2])
    return {
        name: out + tf.reshape(poison, [-1] + [1] * (out.shape.rank - 1))
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


def tflite_flatbuffer(model: keras.Model, spec: tf.TensorSpec, quantize: str = "none") -> bytes:
    """``model`` converted to a TFLite flatbuffer of builtin ops only, for inputs of ``spec``
    (its batch may be None: any batch), without the NaN/Inf input check; ``quantize`` is
    ``"none"``, ``"float16"`` or ``"dynamic-int8"`` (weights)."""
    import tensorflow as tf

    traced = trace(
        for_format(model, "tflite"), spec, form=GRAPH_FORMS["tflite"], non_finite_out=True
    )
    graph = frozen(traced, spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with converter_errors("TFLite"):
        flatbuffer = converter.convert()
    check_builtin_ops(flatbuffer)
    return flatbuffer


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
    import numpy as np

    name = "tokens" if "tokens" in got else "logits"
    a, b = np.asarray(got[name], np.float64), np.asarray(reference[name], np.float64)
    if name == "tokens":
        a, b = a[:, 0], b[:, 0]
    cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(np.min(cos))


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
