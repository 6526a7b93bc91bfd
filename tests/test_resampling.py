"""PolyphaseResample: the headset's rate to 200 Hz inside the graph, equal to scipy's
resample_poly (default filter, that window alone) within 1e-4 uV in Keras and in LiteRT, with
builtin TFLite ops only."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from scipy import signal

from eegdino_tf import tracing
from eegdino_tf.errors import ConfigError, InputError
from eegdino_tf.io.windows import MIN_SAMPLING_RATE, resample_factors
from eegdino_tf.resampling import (
    PolyphaseResample,
    lowpass_filter,
    resampled_length,
)
from tests.helpers.recordings import eeg_like

#: Headset rates (Emotiv 128, OpenBCI 250, Muse / Crown 256) and clinical ones.
RATES = (125, 128, 250, 256, 500, 1000)
#: The issue's bound: microvolts from scipy's float64 resampling of the same window.
TOLERANCE_UV = 1e-4
#: The builtin ops the converted layer uses (TFLite names), all of which XNNPACK runs.
OPS = {"MUL", "ROUND", "SUB", "RESHAPE", "CONCATENATION", "PAD", "CONV_2D", "SPLIT", "ADD"}
OPS |= {"STRIDED_SLICE"}
#: The exporters' TFLite graphs add, per example, SUM(eeg * 0) to every output (the NaN policy,
#: ``tracing.non_finite_to_nan``): MUL and ADD are above, SUM is its own.
OPS |= {"SUM"}


def _windows(rate: float, samples: int, batch: int = 2, channels: int = 3) -> np.ndarray:
    """EEG-like float32 microvolts ``[batch, channels, samples]``, peaks near 300 uV, with a
    300 uV blink-like step in the middle."""
    x = np.stack([eeg_like(channels, samples, rate, scale=100.0) for _ in range(batch)])
    x[:, 0, samples // 2 :] += 300.0
    return x.astype(np.float32)


def _scipy(x: np.ndarray, rate: float) -> np.ndarray:
    """The reference: scipy's resample_poly in float64 on the same (float32) window."""
    up, down = resample_factors(rate)
    return signal.resample_poly(x.astype(np.float64), up, down, axis=-1)


def _model(rate: float, channels: int, samples: int) -> keras.Model:
    eeg = keras.Input((channels, samples))
    return keras.Model(eeg, PolyphaseResample(rate)(eeg))


@pytest.mark.parametrize("rate", RATES)
def test_filter_is_scipys(rate):
    up, down = resample_factors(rate)
    h = signal.firwin(20 * max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0))
    np.testing.assert_allclose(lowpass_filter(up, down), h * up, rtol=0, atol=1e-15)


@pytest.mark.parametrize("rate", RATES)
def test_length_is_scipys(rate):
    for samples in (1, 2, 7, 99, round(4 * rate), round(4 * rate) + 3):
        expected = signal.resample_poly(np.zeros(samples), *resample_factors(rate)).shape[-1]
        assert resampled_length(samples, rate) == expected == math.ceil(samples * 200 / rate)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("extra", [0, 7])
def test_keras_equals_resample_poly(rate, extra):
    """Eager, a traced function of that shape, and one of unknown batch, channels and
    samples: all within 1e-4 uV of scipy, in scipy's length."""
    x = _windows(rate, round(4 * rate) + extra)
    expected = _scipy(x, rate)
    layer = PolyphaseResample(rate)
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None])])
    for call in (layer, tf.function(layer), dynamic):
        y = call(tf.constant(x)).numpy()
        assert y.dtype == np.float32 and y.shape == expected.shape
        assert np.abs(y - expected).max() <= TOLERANCE_UV, (call, np.abs(y - expected).max())


@pytest.mark.parametrize("rate", [256, 1000])
def test_dc_offset_stays_at_float32_rounding(rate):
    """A headset's DC offset (30 000 uV): the output is within two half-steps of float32 at its
    own size (plain float32 sums of the taps reach 12)."""
    x = _windows(rate, round(4 * rate)) + np.float32(30_000)
    expected = _scipy(x, rate)
    error = np.abs(PolyphaseResample(rate)(x).numpy() - expected).max()
    assert error <= np.spacing(np.float32(np.abs(expected).max())), error


@pytest.mark.parametrize("rate", RATES)
def test_litert_equals_resample_poly(rate):
    """Converted as the exporters convert (builtin ops only, any batch) and run in LiteRT."""
    samples = round(4 * rate)
    model = _model(rate, 4, samples)
    flatbuffer = tracing.tflite_flatbuffer(model, tf.TensorSpec([None, 4, samples], name="eeg"))
    ops = tracing.tflite_operators(flatbuffer)
    assert set(ops) == OPS and all(ops.values()), ops
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    # One XNNPACK partition for the whole layer (PACK, or EXPAND_DIMS of an
    # unknown batch, would cut it in two).
    assert [op["op_name"] for op in interpreter._get_ops_details()].count("DELEGATE") == 1
    runner = interpreter.get_signature_runner("serving_default")
    for batch in (1, 3):
        x = _windows(rate, samples, batch=batch, channels=4)
        (y,) = runner(eeg=x).values()
        expected = _scipy(x, rate)
        assert y.shape == expected.shape == (batch, 4, 800)
        assert np.abs(y - expected).max() <= TOLERANCE_UV


def test_muse_adds_under_a_tenth_of_a_megabyte():
    """256 Hz (Muse, Crown, Emotiv): the constants, and the whole converted file, < 0.1 MB."""
    layer = PolyphaseResample(256)
    assert layer.filter_bytes == 22_800
    flatbuffer = tracing.tflite_flatbuffer(
        _model(256, 4, 1024), tf.TensorSpec([None, 4, 1024], name="eeg")
    )
    assert layer.filter_bytes < len(flatbuffer) < 100_000


def test_200_hz_is_the_identity():
    layer = PolyphaseResample(200)
    x = tf.constant(_windows(200, 800))
    assert layer(x) is x
    assert layer.filter_bytes == 0
    spec = tf.TensorSpec([None, 4, 800])
    graph = tf.function(layer, input_signature=[spec]).get_concrete_function().graph
    bare = tf.function(lambda eeg: eeg, input_signature=[spec]).get_concrete_function().graph
    assert [op.type for op in graph.get_operations()] == [op.type for op in bare.get_operations()]


@pytest.mark.parametrize(
    "sfreq, words",
    [
        (0, "invalid sampling rate"),
        (-256.0, "invalid sampling rate"),
        (float("nan"), "invalid sampling rate"),
        (float("inf"), "invalid sampling rate"),
        (MIN_SAMPLING_RATE / 2, "MIN_SAMPLING_RATE"),
        (173.61, "MAX_FILTER_BYTES"),
        (True, "a number"),
        ("256", "a number"),
    ],
)
def test_bad_rate_is_one_line_naming_it(sfreq, words):
    with pytest.raises(ConfigError) as err:
        PolyphaseResample(sfreq)
    message = str(err.value)
    assert f"sfreq={sfreq!r}" in message and words in message and "\n" not in message


def test_173_61_hz_bank_would_be_too_large():
    """173.61 Hz is up 20000 / down 17361: a bank of gigabytes, refused before any is built."""
    with pytest.raises(ConfigError, match=r"up 20000 / down 17361.*\d+ MiB filter bank"):
        resampled_length(1000, 173.61)


def test_shape_checks_and_keras_file(tmp_path):
    """Symbolic shapes, float32 whatever the policy, and a .keras round trip."""
    model = _model(256, 4, 1024)
    assert model.output_shape == (None, 4, 800)
    layer = PolyphaseResample(250, dtype="mixed_bfloat16")
    assert layer.compute_dtype == "float32"
    assert layer.compute_output_shape((None, None, None)) == (None, None, None)
    with pytest.raises(InputError, match=r"\[batch, channels, samples\]"):
        layer(np.zeros((4, 1000), np.float32))
    model.save(tmp_path / "resample.keras")
    loaded = keras.models.load_model(tmp_path / "resample.keras")
    x = _windows(256, 1024, channels=4)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert loaded.layers[-1].get_config()["sfreq"] == 256.0
