"""The benchmark's timed paths compute what the model computes: ``predict`` through its call
timer, and the ``xla`` / ``graph`` runtimes, which share ``predict``'s compiled functions."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.runners import CallTimer, PredictRunner, SizeModels
from benchmarks.settings import Settings, Unavailable
from benchmarks.timing import _own_ms
from benchmarks.workload import eeg_input
from eegdino_tf.runtime import parallel_calls
from tests.helpers import global_cosines


def test_timed_predict_and_the_bare_calls_match_the_model(tmp_path):
    models = SizeModels(Settings(depth=1, channels=2, samples=400), "small", tmp_path)
    model = models.keras("float32")
    assert isinstance(model.inference_function, CallTimer)
    x = eeg_input(3, 2, 400)
    expected = np.asarray(model(x, training=False))

    run = models.runner("predict-keras", "float32", 3)
    assert isinstance(run, PredictRunner) and run.runtime == "keras"
    for _ in range(3):
        np.testing.assert_array_equal(
            run(x), model.predict(x, batch_size=3, verbose=0, runtime="keras")
        )
    np.testing.assert_allclose(run(x), expected, rtol=0, atol=1e-5)
    # Batch 3 in parallel_calls() parts: 2 and 1 (padded to 2) on a CPU with 2 threads or more
    assert len(run.own_ms) == 4 and len(model.inference_function.spans) == parallel_calls()
    assert all(0 < ms < 1e3 for ms in run.own_ms)
    assert _own_ms(run) is not None and _own_ms(lambda x: x) is None

    for runtime, jit in (("xla", True), ("graph", False)):
        assert models.function("float32", jit) is type(model).inference_function(model, jit)
        np.testing.assert_allclose(models.runner(runtime, "float32", 3)(x), expected, atol=1e-5)


def test_timed_litert_predict_matches_the_model_and_is_float32_only(tmp_path):
    models = SizeModels(Settings(depth=1, channels=2, samples=400), "small", tmp_path)
    x = eeg_input(3, 2, 400)
    expected = np.asarray(models.keras("float32")(x, training=False))
    run = models.runner("predict-litert", "float32", 3)
    assert isinstance(run, PredictRunner) and run.runtime == "litert"
    for _ in range(3):
        np.testing.assert_allclose(run(x), expected, rtol=0, atol=1e-5)
    timer = models.keras("float32").litert_function
    assert isinstance(timer, CallTimer) and len(timer.spans) == 1  # one LiteRT run a call
    assert len(run.own_ms) == 3 and all(0 < ms < 1e3 for ms in run.own_ms[1:])
    with pytest.raises(Unavailable, match="float32 models only"):
        models.runner("predict-litert", "mixed_bfloat16", 3)


@pytest.mark.parametrize("runtime", ["predict", "predict-int8"])
def test_the_default_predict_and_int8_rows_run_litert_with_the_conversion_made_first(
    tmp_path, runtime
):
    models = SizeModels(Settings(depth=1, channels=2, samples=400), "small", tmp_path)
    model, x = models.keras("float32"), eeg_input(3, 2, 400)
    run = models.runner(runtime, "float32", 3)  # converts now, untimed
    assert (2, 400, "dynamic-int8" if runtime == "predict-int8" else "none") in (
        model.__dict__["_litert_functions"]
    )
    expected = np.asarray(model(x, training=False))
    tokens = run(x)
    assert len(model.litert_function.spans) == 1 and not model.inference_function.spans
    if runtime == "predict":
        assert run.runtime == "auto"
        np.testing.assert_allclose(tokens, expected, rtol=0, atol=1e-5)
    else:
        assert (run.runtime, run.quantize) == ("litert", "dynamic-int8")
        cosine = global_cosines(tokens, expected)
        assert cosine.min() >= 0.99 and not np.allclose(tokens, expected, atol=1e-5)
    assert 0 < run.own_ms[0] < 1e3
    # A model of another precision: the default predict runs Keras.
    assert models.runner("predict", "mixed_bfloat16", 3).runtime == "auto"


def test_call_timer_counts_calls_that_ran_at_once_once():
    timer = CallTimer(lambda: None)
    timer.spans[:] = [(1.0, 1.5), (1.2, 1.4), (1.3, 2.0), (3.0, 3.25)]
    assert timer.busy_ms() == pytest.approx(1250.0)
