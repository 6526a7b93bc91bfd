"""``predict``'s default ``runtime="auto"``: LiteRT where a conversion is at hand (in the model,
or cached on disk) or pays for itself, Keras otherwise; never a stale conversion, never a
conversion a call would not win back."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf import runtime as runtime_module
from eegdino_tf import tracing
from eegdino_tf.signals import probe_eeg
from tests.helpers import OVERRIDES, fixture_path, nrmse

#: LiteRT's float32 parity with Keras (as tests/test_litert.py pins it).
TOLERANCE = 2e-6
SHAPE = (4, 400)


def fresh_encoder(precision: str = "float32") -> eegdino_tf.EEGDinoEncoder:
    """A new tiny encoder object: nothing converted in it yet."""
    path = fixture_path("tiny_encoder.safetensors")
    return eegdino_tf.load_encoder(path, precision=precision, **OVERRIDES["tiny"])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty LiteRT disk cache for this test alone."""
    monkeypatch.setenv("EEGDINO_TF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_conversion(monkeypatch):
    """Fail the test if anything converts a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a conversion ran")

    monkeypatch.setattr(tracing, "tflite_flatbuffer", refuse)


def eeg(batch: int = 3) -> np.ndarray:
    return np.asarray(probe_eeg(batch, *SHAPE), np.float32)


def test_without_a_cached_conversion_the_default_is_keras_and_converts_nothing(
    cache, no_conversion
):
    model, x = fresh_encoder(), eeg()
    assert model.choose_runtime(*SHAPE, len(x)) == "keras"
    default = model.predict(x, verbose=0)
    np.testing.assert_array_equal(default, model.predict(x, verbose=0, runtime="keras"))
    assert not model.__dict__.get("_litert_functions")
    assert not cache.exists() or not any(cache.iterdir())


def test_a_conversion_cached_by_another_process_is_the_default_without_converting(
    cache, monkeypatch
):
    x = eeg()
    fresh_encoder().litert_function(*SHAPE)  # "another process": another model object
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr(tracing, "tflite_flatbuffer", lambda *a, **k: pytest.fail("converted"))
    model = fresh_encoder()
    keras_tokens = model.predict(x, verbose=0, runtime="keras")
    tokens = model.predict(x, verbose=0)
    made = model.__dict__["_litert_functions"][(*SHAPE, "none")]
    assert made.cached
    assert model.choose_runtime(*SHAPE, len(x)) == "litert"
    assert nrmse(tokens, keras_tokens) <= TOLERANCE
    np.testing.assert_array_equal(tokens, model.predict(x, verbose=0, runtime="litert"))


def test_changed_weights_leave_a_stale_conversion_for_keras_without_converting(cache, monkeypatch):
    model, x = fresh_encoder(), eeg()
    model.litert_function(*SHAPE)
    assert model.choose_runtime(*SHAPE, len(x)) == "litert"
    monkeypatch.setattr(tracing, "tflite_flatbuffer", lambda *a, **k: pytest.fail("converted"))
    kernel = model.weights[3]
    kernel.assign(kernel * 1.5)
    tokens = model.predict(x, verbose=0)
    assert model.choose_runtime(*SHAPE, len(x)) == "keras"
    np.testing.assert_array_equal(tokens, model.predict(x, verbose=0, runtime="keras"))
    assert (*SHAPE, "none") not in model.__dict__["_litert_functions"]


def test_a_call_large_enough_to_pay_for_a_conversion_converts_and_runs_litert(cache, monkeypatch):
    model, x = fresh_encoder(), eeg(4)
    tokens_per_example = 1 + SHAPE[0] * SHAPE[1] // 200
    # The threshold as if converting paid off at 4 examples of this shape, not at 3.
    monkeypatch.setattr(runtime_module, "AUTO_CONVERT_TOKENS", 4 * tokens_per_example)
    assert model.choose_runtime(*SHAPE, 3) == "keras"
    keras_tokens = model.predict(x, verbose=0, runtime="keras")
    tokens = model.predict(x, verbose=0)
    assert (*SHAPE, "none") in model.__dict__["_litert_functions"]
    assert nrmse(tokens, keras_tokens) <= TOLERANCE
    assert len(list(cache.iterdir())) == 1  # and kept for the machine's next process


def test_a_conversion_that_would_not_fit_in_memory_is_not_started(cache, monkeypatch):
    model = fresh_encoder()
    monkeypatch.setattr(runtime_module, "AUTO_CONVERT_TOKENS", 1)
    monkeypatch.setattr(runtime_module.hardware, "physical_memory", lambda: 2**20)
    monkeypatch.setattr(tracing, "tflite_flatbuffer", lambda *a, **k: pytest.fail("converted"))
    assert model.choose_runtime(*SHAPE, 1000) == "keras"


@pytest.mark.parametrize("why", ["mixed_bfloat16", "no ai-edge-litert"])
def test_auto_stays_on_keras_where_litert_cannot_run_the_model(cache, monkeypatch, why):
    fresh_encoder().litert_function(*SHAPE)  # a float32 conversion on disk
    if why == "no ai-edge-litert":
        model = fresh_encoder()
        find_spec = runtime_module.importlib.util.find_spec
        monkeypatch.setattr(
            runtime_module.importlib.util,
            "find_spec",
            lambda name, *a: None if name == "ai_edge_litert" else find_spec(name, *a),
        )
    else:
        model = fresh_encoder(precision=why)
    monkeypatch.setattr(tracing, "tflite_flatbuffer", lambda *a, **k: pytest.fail("converted"))
    x = eeg()
    assert model.choose_runtime(*SHAPE, 10**9) == "keras"
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), model.predict(x, verbose=0, runtime="keras")
    )


def test_a_dataset_takes_litert_when_its_batches_shape_has_a_cached_conversion(cache):
    model, x = fresh_encoder(), eeg(4)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(2)
    keras_tokens = model.predict(x, verbose=0, runtime="keras")
    np.testing.assert_allclose(model.predict(batches, verbose=0), keras_tokens, atol=1e-5)
    assert not model.__dict__.get("_litert_functions")  # Keras' own predict ran it
    model.litert_function(*SHAPE)
    tokens = model.predict(batches, verbose=0)
    np.testing.assert_array_equal(tokens, model.predict(x, verbose=0, runtime="litert"))
    assert nrmse(tokens, keras_tokens) <= TOLERANCE


def test_quantize_with_auto_runs_in_litert(cache):
    model, x = fresh_encoder(), eeg()
    int8 = model.predict(x, verbose=0, quantize="dynamic-int8")
    np.testing.assert_array_equal(
        int8, model.predict(x, verbose=0, runtime="litert", quantize="dynamic-int8")
    )
    assert nrmse(int8, model.predict(x, verbose=0, runtime="keras")) > TOLERANCE  # int8 ran


def test_runtime_xla_compiles_with_xla_whatever_compile_chose(cache, monkeypatch):
    model, x = fresh_encoder(), eeg()
    model.compile(jit_compile=False)
    asked = []
    original = model.inference_function
    monkeypatch.setattr(model, "inference_function", lambda jit: asked.append(jit) or original(jit))
    plain = model.predict(x, verbose=0, runtime="keras")
    xla = model.predict(x, verbose=0, runtime="xla")
    assert asked == [False, True]
    assert nrmse(xla, plain) <= 1e-6


def test_encode_decides_the_runtime_once_for_the_whole_recording(cache, monkeypatch):
    from eegdino_tf.io import encode_recording, open_recording
    from tests.helpers.recordings import eeg_like

    names = ["Fp1", "Fp2", "C3", "C4"]
    uv = open_recording(eeg_like(4, 200 * 20, 200.0), sfreq=200.0, ch_names=names, channels=names)
    model = fresh_encoder()
    ran = []
    predict = model.predict
    monkeypatch.setattr(
        model, "predict", lambda *a, **k: ran.append(k.get("runtime")) or predict(*a, **k)
    )
    options = {"window": 2, "batch_size": 4, "progress": False}
    kept = encode_recording(model, uv, **options)
    assert set(ran) == {"keras"}
    # Ten 2 s windows of 4 channels: 90 tokens; paying for a conversion from 80 on.
    monkeypatch.setattr(runtime_module, "AUTO_CONVERT_TOKENS", 80)
    ran.clear()
    fast = encode_recording(model, uv, **options)
    assert set(ran) == {"litert"}
    assert nrmse(fast["global_token"], kept["global_token"]) <= TOLERANCE
