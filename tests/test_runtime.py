"""Predict's runtime (:mod:`eegdino_tf.runtime`): eager, tf.function, XLA and predict agree;
batches run in parallel parts, padded where XLA needs it; the XLA choice per machine; and the
EEG it takes: wrong shapes and bad values are errors that say what is wrong and what is
expected, windows whose attention cannot fit in memory are refused before running."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf import InputError
from eegdino_tf.runtime import check_attention_memory, parallel_calls
from tests.helpers import TINY, load_io, nrmse

AGREE = 1e-6
TINY_ENCODER = TINY / "tiny_encoder.safetensors"


@functools.cache
def encoder(partial_patch: str = "error"):
    return eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4, partial_patch=partial_patch)


def eeg(batch=1, channels=19, samples=2000):
    return np.random.default_rng(0).normal(0, 30, (batch, channels, samples)).astype(np.float32)


@functools.cache
def tiny_classifier():
    return eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_eager_function_xla_and_predict_agree(kind):
    model = encoder() if kind == "encoder" else tiny_classifier()
    io = load_io("tiny")
    x = io["raw_uv"]
    eager = model(x).numpy()
    traced = tf.function(model)(tf.constant(x)).numpy()
    xla = tf.function(model, jit_compile=True)(tf.constant(x)).numpy()
    predicted = model.predict(x, batch_size=2, verbose=0)
    for other in (traced, xla, predicted):
        assert nrmse(other, eager) <= AGREE
    expected = io["tokens" if kind == "encoder" else "logits"]
    assert nrmse(eager, expected) <= 2e-6


@pytest.mark.parametrize("batch_size", [1, 2, 4, 7])
def test_predict_any_batch_size(batch_size):
    io = load_io("tiny")
    x = np.concatenate([io["raw_uv"], io["raw_uv_b1"]])  # 4 examples
    expected = np.concatenate([io["tokens"], io["tokens_b1"]])
    assert nrmse(encoder().predict(x, batch_size=batch_size, verbose=0), expected) <= 2e-6


def test_predict_allocates_little_more_than_its_result():
    from tests.helpers.hostile import outcome

    x = np.random.default_rng(0).normal(0, 30, (200, 19, 2000)).astype(np.float32)
    model = encoder()
    model.predict(x[:8], batch_size=8, verbose=0)  # traced before measuring
    result_bytes = 200 * 191 * 64 * 4
    out = outcome(lambda: model.predict(x, batch_size=8, verbose=0), max_bytes=result_bytes + 2**22)
    assert out.nbytes == result_bytes
    assert nrmse(out[-8:], model(x[-8:]).numpy()) <= AGREE


@pytest.mark.parametrize("jit", [True, False])
def test_a_batch_run_in_parallel_parts_equals_the_reference_in_order(jit):
    from eegdino_tf.runtime import run_in_parts

    io = load_io("tiny")
    x, expected = io["raw_uv"], io["tokens"]  # 3 examples: parts of 2 and 1 (padded or not)
    compiled = encoder().inference_function(jit)
    for parts, equal in ((2, True), (2, False), (3, True), (5, True)):
        tokens = run_in_parts(compiled, x, parts, equal)
        assert tokens.shape == expected.shape
        assert nrmse(tokens, expected) <= 2e-6
        for i in range(3):  # each example in its place
            assert nrmse(tokens[i], expected[i]) <= 2e-6


def test_parallel_calls_follow_the_threads_tensorflow_may_use(monkeypatch):
    import dataclasses

    from eegdino_tf import hardware, runtime

    monkeypatch.setattr(hardware, "cpu_threads", lambda: 16)
    assert runtime.parallel_calls() == runtime.CPU_PARALLEL_CALLS == 2
    monkeypatch.setattr(hardware, "cpu_threads", lambda: 1)
    assert runtime.parallel_calls() == 1  # one thread asked for: one call at a time
    monkeypatch.setattr(hardware, "cpu_threads", lambda: 16)
    gpu = dataclasses.replace(hardware.detect(), gpus=(("a GPU", (8, 0)),))
    monkeypatch.setattr(hardware, "detect", lambda: gpu)
    assert runtime.parallel_calls() == 1  # a GPU runs one call at a time anyway


def test_compiled_with_jit_predict_matches():
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    model.compile(jit_compile=True)
    io = load_io("tiny")
    assert nrmse(model.predict(io["raw_uv"], verbose=0), io["tokens"]) <= 2e-6


def test_xla_predict_pads_the_last_batch():
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    model.compile(jit_compile=True)
    io = load_io("tiny")
    x = np.concatenate([io["raw_uv"], io["raw_uv"][:2]])  # 5 examples: batches 2, 2, 1 (+1)
    out = model.predict(x, batch_size=2, verbose=0)
    assert model.inference_function(True).experimental_get_tracing_count() == 1
    assert out.shape == (5, 191, 64)
    assert nrmse(out, np.concatenate([io["tokens"], io["tokens"][:2]])) <= 2e-6


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_predict_follows_the_machines_xla_choice_unless_compiled(precision):
    from eegdino_tf.runtime import default_jit_compile

    xla = default_jit_compile(precision)  # per CPU: bfloat16 without XLA only on native bf16
    model = eegdino_tf.build_encoder(eegdino_tf.get_config("small", depth=1), precision=precision)
    x = np.zeros((1, 2, 400), np.float32)
    model.predict(x, verbose=0)
    assert model.inference_function(xla).experimental_get_tracing_count() == 1
    assert model.inference_function(not xla).experimental_get_tracing_count() == 0
    model.compile(jit_compile=not xla)
    model.predict(x, verbose=0)
    assert model.inference_function(not xla).experimental_get_tracing_count() == 1


def test_predict_on_tf_data():
    io = load_io("tiny")
    data = tf.data.Dataset.from_tensor_slices(io["raw_uv"]).batch(2)
    assert nrmse(encoder().predict(data, verbose=0), io["tokens"]) <= 2e-6


def test_compile_without_a_jit_choice_keeps_predicts_own():
    model = eegdino_tf.build_encoder(eegdino_tf.get_config("small", depth=1))
    model.compile(optimizer="adam", loss="mse")  # jit_compile="auto": fit's own business
    model.predict(np.zeros((1, 2, 400), np.float32), verbose=0)
    xla = eegdino_tf.runtime.default_jit_compile(model.precision)
    assert model.inference_function(xla).experimental_get_tracing_count() == 1
    assert model.inference_function(not xla).experimental_get_tracing_count() == 0


@pytest.mark.parametrize(
    "shape, message",
    [
        ((19, 2000), "rank 2"),
        ((1, 1, 19, 2000), "rank 4"),
        ((1, 20, 2000), "has 20 channels"),
        ((1, 0, 2000), "has 0 channels"),
        ((1, 19, 2050), "2050 samples, not a multiple of 200"),
        ((1, 19, 150), "150 samples"),
    ],
)
def test_bad_shapes_are_value_errors_naming_the_problem(shape, message):
    with pytest.raises(ValueError, match=message) as err:
        encoder()(np.zeros(shape, np.float32))
    assert "expected raw EEG in microvolts shaped [batch, channels, samples]" in str(err.value)
    assert isinstance(err.value, InputError)


def test_bad_shape_in_predict_is_a_value_error():
    with pytest.raises(ValueError, match="has 23 channels"):
        encoder().predict(eeg(2, 23), verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_an_error(bad):
    x = eeg()
    x[0, 3, 17] = bad
    with pytest.raises(InputError, match="NaN or Inf"):
        encoder()(x)


def test_non_finite_input_in_predict_is_an_error():
    x = eeg(2)
    x[1, 0, 5] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        encoder().predict(x, verbose=0)


def test_non_finite_input_in_a_graph_is_an_error():
    x = eeg(2)
    x[1, 0, 5] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="EEG input contains NaN or Inf"):
        tf.function(encoder())(tf.constant(x))


def test_check_finite_off_lets_nan_through():
    model = eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4, check_finite=False)
    x = eeg()
    x[0, 0, 0] = np.nan
    assert np.isnan(model(x).numpy()).any()


def test_pad_zero_pads_the_last_patch():
    x = eeg(samples=1900)
    padded = np.pad(x, [(0, 0), (0, 0), (0, 100)])
    expected = encoder()(padded).numpy()
    assert nrmse(encoder("pad")(x).numpy(), expected) <= 1e-6


def test_crop_drops_the_partial_patch():
    x = eeg(samples=2150)
    expected = encoder()(x[:, :, :2000]).numpy()
    assert nrmse(encoder("crop")(x).numpy(), expected) <= 1e-6


def test_fewer_channels_use_the_first_slots():
    io = load_io("tiny")
    out = encoder()(io["raw_uv_c16"]).numpy()
    assert out.shape == (2, 1 + 16 * 15, 64)
    assert nrmse(out, io["tokens_c16"]) <= 2e-6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: np.zeros((0, 19, 2000), np.float32), "holds no examples"),
        (lambda: np.float32(1.0), "rank 0"),
        (lambda: [eeg()], "is a list, not one array"),
        (lambda: (eeg(), eeg()), "is a tuple, not one array"),
    ],
)
@pytest.mark.parametrize("how", ["call", "predict"])
def test_empty_scalar_and_list_inputs_are_one_clear_error(make, message, how):
    model = encoder()
    run = model if how == "call" else functools.partial(model.predict, verbose=0)
    with pytest.raises(InputError, match=message) as err:
        run(make())
    assert "Exception encountered" not in str(err.value)  # raised before Keras wraps it


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_a_bad_batch_size_is_a_config_error(batch_size):
    message = f"batch_size must be a positive integer, got {batch_size!r}"
    with pytest.raises(eegdino_tf.ConfigError, match=message):
        encoder().predict(eeg(2), batch_size=batch_size, verbose=0)


def test_predict_fills_one_result_equal_to_the_call_from_float64_input():
    x = eeg(5).astype(np.float64)
    out = encoder().predict(x, batch_size=2, verbose=0)
    assert out.dtype == np.float32 and out.shape == (5, 1 + 19 * 10, 64)
    assert nrmse(out, encoder()(x.astype(np.float32)).numpy()) <= 1e-6


def test_predict_runs_8_examples_a_batch_on_a_cpu_unless_told(monkeypatch):
    if eegdino_tf.hardware.detect().gpus:
        pytest.skip("this machine has a GPU, where predict's default batch is Keras' 32")
    model, seen = encoder(), []
    compiled = model.inference_function(True)

    def counting(jit_compile):
        def run(x):
            seen.append(x.shape[0])
            return compiled(x)

        return run

    monkeypatch.setattr(model, "inference_function", counting)
    x, parts = eeg(10), parallel_calls()  # each batch in `parts` calls at once
    out = model.predict(x, verbose=0)
    assert sorted(seen) == [8 // parts] * (2 * parts)  # the last batch padded under XLA
    seen.clear()
    assert nrmse(out, model.predict(x, batch_size=32, verbose=0)) <= 1e-6
    assert sorted(seen) == [-(-10 // parts)] * parts


def test_predict_names_the_first_non_finite_example():
    x = eeg(5)
    x[3, 2, 1] = np.inf
    with pytest.raises(InputError, match=r"^example 3: EEG input contains NaN or Inf"):
        encoder().predict(x, batch_size=2, verbose=0)


def test_non_finite_output_from_finite_input_names_the_units():
    x = eeg(3) * 1e25  # finite, but nothing like microvolts
    message = r"output for example 0 is not finite although its input is"
    with pytest.raises(InputError, match=message) as err:
        encoder().predict(x, verbose=0)
    assert "not in microvolts" in str(err.value) and "1e6" in str(err.value)
    model = eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4, check_finite=False)
    assert not np.isfinite(model.predict(x, verbose=0)).all()  # the opt-out lets it through


def test_a_window_whose_attention_cannot_fit_in_memory_is_refused(monkeypatch):
    """19 channels x 305 s is 5796 tokens: one example's [8, N, N] float32 attention weights
    take 1.0 GiB, two take 2.0 GiB; refused before anything runs on a (pretend) 1.5 GiB host."""
    monkeypatch.setattr(eegdino_tf.hardware, "physical_memory", lambda: 3 * 2**29)
    x = np.zeros((2, 19, 200 * 305), np.float32)
    message = r"5796 tokens an example: .* one batch of 2 alone would take 2\.0 GiB, more than"
    with pytest.raises(InputError, match=message) as err:
        encoder().predict(x, verbose=0)
    assert "1.5 GiB of memory; use shorter windows (encode: --window)" in str(err.value)
    with pytest.raises(InputError, match="one batch of 2 alone"):  # calling the model too
        encoder()(x)
    classifier = eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)
    with pytest.raises(InputError, match="one batch of 2 alone"):  # the same for a classifier
        classifier.predict(x, verbose=0)
    check_attention_memory(x.shape, 1, 8)  # batch 1 (1.0 GiB) fits
    with pytest.raises(InputError, match="one example alone would take 2.0 GiB") as err:
        check_attention_memory(x.shape, 1, 16)  # 16 heads: 2.0 GiB
    assert str(err.value).endswith("use shorter windows (encode: --window)")  # no batch to cut


def test_a_tf_data_window_whose_attention_cannot_fit_is_refused_in_keras_fit_and_predict(
    monkeypatch,
):
    """19 channels x 420 s is 7981 tokens, 1.9 GiB of attention weights an example: on a
    (pretend) 1.5 GiB host, Keras' predict and fit on a tf.data pipeline are refused before
    anything runs, whether Keras traces them with the first batch's size (2: 3.8 GiB) or with
    an unknown one (fit: at least one example)."""
    monkeypatch.setattr(eegdino_tf.hardware, "physical_memory", lambda: 3 * 2**29)
    x = np.zeros((2, 19, 200 * 420), np.float32)
    message = (
        r"7981 tokens an example: .* of one "
        r"(batch of 2 alone would take 3\.8|example alone would take 1\.9) GiB"
    )
    fresh = eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4)  # Keras' predict untraced
    with pytest.raises(InputError, match=message):
        fresh.predict(tf.data.Dataset.from_tensor_slices(x).batch(2), verbose=0)
    classifier = eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    labelled = tf.data.Dataset.from_tensor_slices((x, np.zeros(2, np.int32))).batch(2)
    with pytest.raises(InputError, match=message):
        classifier.fit(labelled, epochs=1, verbose=0)


def test_physical_memory_is_this_machines():
    memory = eegdino_tf.hardware.physical_memory()
    assert memory is None or 2**28 <= memory <= 2**50


def test_bfloat16_graph_predict_runs_frozen_weights_and_follows_their_changes():
    """mixed_bfloat16 without XLA (native-bfloat16 CPUs) runs the weights as constants, made
    again when they change; its error to float32 stays within the bfloat16 bound."""
    from tests.helpers import fixture_path

    path = fixture_path("small_encoder.safetensors")
    model = eegdino_tf.load_encoder(path, precision="mixed_bfloat16")
    model.compile(jit_compile=False)  # the graph path on any CPU
    reference = eegdino_tf.load_encoder(path)
    x = eeg(3, 4, 400)
    tokens = model.predict(x, verbose=0)
    (made,) = model.__dict__["_frozen_functions"].values()
    assert nrmse(tokens, reference.predict(x, verbose=0, runtime="keras")) <= 1e-2
    np.testing.assert_array_equal(model.predict(x, verbose=0), tokens)  # the same, kept
    assert model.__dict__["_frozen_functions"][(4, 400)] is made

    for mine, theirs in zip(model.weights, reference.weights, strict=True):
        if mine.path.endswith("kernel") and len(mine.shape) == 2:
            mine.assign(mine * 1.25)
            theirs.assign(theirs * 1.25)
            break
    changed = model.predict(x, verbose=0)
    assert model.__dict__["_frozen_functions"][(4, 400)] is not made
    expected = reference.predict(x, verbose=0, runtime="keras")
    assert nrmse(changed, expected) <= 1e-2 < nrmse(tokens, expected)


def test_bfloat16_graph_predict_keeps_the_variables_where_a_frozen_copy_would_not_fit(
    monkeypatch,
):
    from eegdino_tf import runtime

    model = eegdino_tf.build_encoder(
        eegdino_tf.get_config("small", depth=1), precision="mixed_bfloat16"
    )
    model.compile(jit_compile=False)
    need = runtime.FROZEN_BYTES_PER_WEIGHT_BYTE * 4 * model.count_params()
    x = eeg(2, 2, 400)
    monkeypatch.setattr(runtime.hardware, "physical_memory", lambda: 4 * need - 1)
    kept = model.predict(x, verbose=0)
    assert not model.__dict__.get("_frozen_functions")
    monkeypatch.setattr(runtime.hardware, "physical_memory", lambda: 4 * need)
    frozen = model.predict(x, verbose=0)
    assert model.__dict__["_frozen_functions"]
    expected = model.inference_function(False)(x).numpy()
    assert nrmse(kept, expected) <= 1e-2 and nrmse(frozen, expected) <= 1e-2


def test_the_native_softmax_form_runs_the_softmax_in_bfloat16_with_float32s_numbers():
    """The graph path's form where oneDNN runs bfloat16 skips the casts around the softmax:
    its Softmax runs in bfloat16, and where oneDNN runs it (float32 inside, one rounding) the
    answer is float32's rounded, as with the casts."""
    from eegdino_tf.layers import Attention, GraphForm, graph_form

    layer = Attention(64, num_heads=4, dtype="mixed_bfloat16")
    x = tf.random.stateless_normal([2, 50, 64], seed=[4, 5]) * 3
    spec = tf.TensorSpec(x.shape, tf.float32)
    outputs, softmax_types = {}, {}
    for softmax in ("op", "native"):
        with graph_form(GraphForm(softmax=softmax)):
            run = tf.function(lambda t: layer(t, training=False)).get_concrete_function(spec)
        ops = run.graph.get_operations()
        softmax_types[softmax] = {op.get_attr("T") for op in ops if op.type == "Softmax"}
        outputs[softmax] = tf.cast(run(x), tf.float32).numpy()
    assert softmax_types == {"op": {tf.float32}, "native": {tf.bfloat16}}
    if eegdino_tf.runtime.graph_path_form() == eegdino_tf.runtime.ONEDNN_GRAPH_FORM:
        assert nrmse(outputs["native"], outputs["op"]) <= 1e-3  # where predict takes it
