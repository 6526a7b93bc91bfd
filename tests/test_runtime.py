"""Predict's runtime (:mod:`eegdino_tf.runtime`): eager, tf.function, XLA and predict agree;
batches run in parallel parts, padded where XLA needs it; the XLA choice per machine."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from tests.helpers import TINY, load_io, nrmse

AGREE = 1e-6


@functools.cache
def tiny_encoder():
    return eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)


@functools.cache
def tiny_classifier():
    return eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_eager_function_xla_and_predict_agree(kind):
    model = tiny_encoder() if kind == "encoder" else tiny_classifier()
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
    assert nrmse(tiny_encoder().predict(x, batch_size=batch_size, verbose=0), expected) <= 2e-6


def test_predict_allocates_little_more_than_its_result():
    from tests.helpers.hostile import outcome

    x = np.random.default_rng(0).normal(0, 30, (200, 19, 2000)).astype(np.float32)
    model = tiny_encoder()
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
    compiled = tiny_encoder().inference_function(jit)
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
    assert nrmse(tiny_encoder().predict(data, verbose=0), io["tokens"]) <= 2e-6


def test_compile_without_a_jit_choice_keeps_predicts_own():
    model = eegdino_tf.build_encoder(eegdino_tf.get_config("small", depth=1))
    model.compile(optimizer="adam", loss="mse")  # jit_compile="auto": fit's own business
    model.predict(np.zeros((1, 2, 400), np.float32), verbose=0)
    xla = eegdino_tf.runtime.default_jit_compile(model.precision)
    assert model.inference_function(xla).experimental_get_tracing_count() == 1
    assert model.inference_function(not xla).experimental_get_tracing_count() == 0
