"""Tracing (:mod:`eegdino_tf.tracing`): the any-batch TFLite graph, the builtin-op check, and
each format's NaN/Inf input check decided in one table."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf.errors import ExportError
from eegdino_tf.tracing import (
    KEEPS_FINITE_CHECK,
    check_builtin_ops,
    for_format,
    input_spec,
    tflite_flatbuffer,
    tflite_operators,
)
from tests.helpers import OVERRIDES, fixture_path, load_io


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_any_batch_conversion_computes_no_shape_at_run_time(kind):
    # A shape computed from the batch at run time (SHAPE -> PACK -> RESHAPE or TILE) is not
    # run by XNNPACK and splits the graph into dozens of partitions (61 for small before).
    load = eegdino_tf.load_encoder if kind == "encoder" else eegdino_tf.load_classifier
    model = load(fixture_path(f"tiny_{kind}.safetensors"), **OVERRIDES["tiny"])
    ops = tflite_operators(tflite_flatbuffer(model, input_spec(model, None, 19, 2000)))
    assert {"SHAPE", "PACK", "TILE", "BROADCAST_TO"}.isdisjoint(ops), sorted(ops)
    assert {"FULLY_CONNECTED", "BATCH_MATMUL", "RESHAPE"} <= set(ops)


def test_builtin_op_check_names_flex_ops():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def erf(x):
        return tf.math.erf(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [erf.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    flatbuffer = converter.convert()
    assert tflite_operators(flatbuffer) == {"FlexErf": False}
    with pytest.raises(ExportError, match="FlexErf"):
        check_builtin_ops(flatbuffer)


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_each_format_keeps_the_finite_check_as_its_table_says(kind):
    load = eegdino_tf.load_encoder if kind == "encoder" else eegdino_tf.load_classifier
    model = load(fixture_path(f"tiny_{kind}.safetensors"), **OVERRIDES["tiny"])
    x = load_io("tiny")["raw_uv"]
    assert KEEPS_FINITE_CHECK == {"saved-model": True, "tflite": False, "onnx": False}
    assert for_format(model, "saved-model") is model
    for fmt in ("tflite", "onnx"):
        copy = for_format(model, fmt)
        encoder = copy.encoder if kind == "classifier" else copy
        assert type(copy) is type(model) and not copy.check_finite and not encoder.check_finite
        np.testing.assert_array_equal(copy(x).numpy(), model(x).numpy())
        assert for_format(copy, fmt) is copy  # already without: no second copy
    bad = np.full((1, 19, 2000), np.nan, np.float32)
    assert np.isnan(for_format(model, "onnx")(bad).numpy()).all()
