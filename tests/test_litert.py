"""``predict(x, runtime="litert")``: the model run by LiteRT keeps float32 parity, follows the
weights, and refuses what it cannot run."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf import litert, tracing
from eegdino_tf.errors import ConfigError, InputError
from eegdino_tf.export import MIN_INT8_COSINE as EXPORT_MIN_INT8_COSINE
from tests.helpers import OVERRIDES, fixture_path, global_cosines, load_io, nrmse

TOLERANCE = 2e-6


@functools.cache
def encoder(model: str):
    return eegdino_tf.load_encoder(fixture_path(f"{model}_encoder.safetensors"), **OVERRIDES[model])


@pytest.mark.parametrize("model", ["tiny", "small"])
def test_litert_predict_matches_reference_tokens(model):
    io, run = load_io(model), encoder(model)
    for case in ("", "_c16", "_b1"):
        # batch_size 2 over 3 examples: a full batch, then a padded one
        tokens = run.predict(io["raw_uv" + case], batch_size=2, verbose=0, runtime="litert")
        assert tokens.shape == io["tokens" + case].shape
        assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE
    assert set(run.__dict__["_litert_functions"]) == {(19, 2000, "none"), (16, 3000, "none")}


def test_litert_predict_matches_reference_logits():
    io = load_io("tiny")
    model = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    logits = model.predict(io["raw_uv"], verbose=0, runtime="litert")
    assert nrmse(logits, io["logits"]) <= TOLERANCE


def test_litert_conversion_is_kept_and_dropped_when_weights_change():
    io = load_io("tiny")
    model = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    x = io["raw_uv"]
    model.predict(x, verbose=0, runtime="litert")
    first = model.litert_function(19, 2000)
    model.predict(x[:1], verbose=0, runtime="litert")
    assert model.litert_function(19, 2000) is first  # one conversion, any batch

    model.set_weights([w * 0.5 for w in model.get_weights()])
    changed = model.predict(x, verbose=0, runtime="litert")
    assert model.litert_function(19, 2000) is not first
    keras_tokens = model.predict(x, verbose=0)
    assert nrmse(changed, keras_tokens) <= TOLERANCE
    assert nrmse(changed, io["tokens"]) > 0.1  # the new weights, not the converted old ones


def test_litert_predict_runs_a_dataset_of_batches_in_order():
    io = load_io("tiny")
    x, run = io["raw_uv"], encoder("tiny")
    labelled = tf.data.Dataset.from_tensor_slices((x, [0, 1, 0])).batch(2)  # 2, then 1 padded
    tokens = run.predict(labelled, verbose=0, runtime="litert")
    assert tokens.shape == io["tokens"].shape
    assert nrmse(tokens, io["tokens"]) <= TOLERANCE
    first = run.predict(tf.data.Dataset.from_tensor_slices(x).batch(2), steps=1, runtime="litert")
    assert nrmse(first, io["tokens"][:2]) <= TOLERANCE


def test_litert_predict_on_a_dataset_refuses_bad_batches_and_steps():
    x, run = load_io("tiny")["raw_uv"].copy(), encoder("tiny")
    x[2, 4, 100] = float("nan")
    with pytest.raises(InputError, match="example 2: "):
        run.predict(tf.data.Dataset.from_tensor_slices(x).batch(2), verbose=0, runtime="litert")
    batches = tf.data.Dataset.from_tensor_slices(x[:2]).batch(2)
    with pytest.raises(ConfigError, match="steps must be a positive integer, got 0"):
        run.predict(batches, steps=0, runtime="litert")
    with pytest.raises(InputError, match="no batches"):
        run.predict(batches.take(0), verbose=0, runtime="litert")
    with pytest.raises(InputError, match=r"\[batch, channels, samples\] tensor; got dict"):
        run.predict(batches.map(lambda b: {"eeg": b}), verbose=0, runtime="litert")


@pytest.mark.filterwarnings("ignore::eegdino_tf.hardware.PrecisionWarning")
def test_litert_predict_refuses_what_it_cannot_run():
    io = load_io("tiny")
    x = io["raw_uv"]
    with pytest.raises(ConfigError, match="unknown runtime 'tflite'"):
        encoder("tiny").predict(x, runtime="tflite")
    with pytest.raises(ConfigError, match="takes a NumPy array, a tensor or a tf.data.Dataset"):
        encoder("tiny").predict(iter([x]), runtime="litert")
    with pytest.raises(ConfigError, match="steps only with a dataset"):
        encoder("tiny").predict(x, steps=1, runtime="litert")
    half = eegdino_tf.load_encoder(
        fixture_path("tiny_encoder.safetensors"), precision="mixed_bfloat16", **OVERRIDES["tiny"]
    )
    with pytest.raises(ConfigError, match="runs float32 models.*mixed_bfloat16"):
        half.predict(x, verbose=0, runtime="litert")


def test_litert_conversion_too_big_for_memory_is_refused_before_converting(monkeypatch):
    from eegdino_tf import hardware

    monkeypatch.setenv("EEGDINO_TF_CACHE", "off")  # a conversion found on disk needs no memory
    model = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    factor = tracing.CONVERSION_BYTES_PER_WEIGHT_BYTE
    need = factor * 4 * model.count_params()
    monkeypatch.setattr(hardware, "physical_memory", lambda: need - 1)  # one example fits
    with pytest.raises(ConfigError, match=rf"takes about .* GiB \({factor}x its float32 weights\)"):
        model.predict(load_io("tiny")["raw_uv"][:1], verbose=0, runtime="litert")
    assert not model.__dict__.get("_litert_functions")


def _scaled(weights: list, factor: float = 0.5) -> list:
    return [w * factor for w in weights]


def _encoder_set_weights(classifier, x, tmp_path):
    classifier.encoder.set_weights(_scaled(classifier.encoder.get_weights()))


def _fit(classifier, x, tmp_path):
    classifier.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(x, np.array([0, 1, 2]), epochs=1, batch_size=3, verbose=0)


def _assign(classifier, x, tmp_path):
    for variable in classifier.encoder.weights:
        variable.assign(variable * 0.5)


def _own_training_step(classifier, x, tmp_path):
    @tf.function
    def step(eeg):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(classifier(eeg, training=False) ** 2)
        variables = classifier.trainable_variables
        for variable, grad in zip(variables, tape.gradient(loss, variables), strict=True):
            variable.assign_sub(0.5 * grad)

    step(tf.constant(x))


def _checkpoint_read(classifier, x, tmp_path):
    other = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    other.set_weights(_scaled(other.get_weights()))
    path = tf.train.Checkpoint(model=other).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=classifier).read(path).assert_existing_objects_matched()


@pytest.mark.parametrize(
    "change", [_encoder_set_weights, _fit, _assign, _own_training_step, _checkpoint_read]
)
@pytest.mark.parametrize("which", ["classifier", "encoder"])
def test_litert_answers_from_the_current_weights_however_they_changed(change, which, tmp_path):
    # The conversion is made (for the classifier, or its encoder), the weights change in one
    # of the ways Keras and TensorFlow offer, through the classifier or its encoder, and the
    # next LiteRT call answers from the new weights.
    classifier = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    model = classifier if which == "classifier" else classifier.encoder
    x = load_io("tiny")["raw_uv"]
    before = model.predict(x, verbose=0, runtime="litert")
    change(classifier, x, tmp_path)
    keras_after = model.predict(x, verbose=0)
    assert nrmse(keras_after, before) > 1e-3  # the weights did change what the model says
    assert nrmse(model.predict(x, verbose=0, runtime="litert"), keras_after) <= TOLERANCE


def test_the_weights_fingerprint_sees_a_change_of_one_value_and_a_transpose():
    from eegdino_tf.litert import weights_fingerprint

    model = eegdino_tf.build_encoder(eegdino_tf.get_config("small", depth=1))
    first = weights_fingerprint(model)
    assert first.dtype == np.int32 and np.array_equal(weights_fingerprint(model), first)
    kernel = next(v for v in model.weights if v.path.endswith("attn/proj/kernel"))  # [D, D]
    value = kernel.numpy()
    kernel.assign(value.T)
    assert not np.array_equal(weights_fingerprint(model), first)
    value[3, 5] = np.nextafter(value[3, 5], np.inf)  # one ulp of one weight
    kernel.assign(value)
    assert not np.array_equal(weights_fingerprint(model), first)
    value[3, 5] = np.nextafter(value[3, 5], -np.inf)
    kernel.assign(value)
    assert np.array_equal(weights_fingerprint(model), first)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_weights_watch_passes_over_the_weights_again_only_after_a_write(jit_compile):
    # Unchanged weights reuse the held fingerprint without a pass over them; a write of one
    # ulp from a compiled step (in place, as a graph or XLA would write it) is seen.
    from eegdino_tf.litert import weights_fingerprint

    model = eegdino_tf.build_encoder(eegdino_tf.get_config("small", depth=1))
    first = weights_fingerprint(model)
    watch = model.__dict__["_weights_watch"]
    passes = []
    sums = watch._sums
    watch._sums = lambda tensors: passes.append(1) or sums(tensors)
    for _ in range(3):
        assert weights_fingerprint(model) is first
    assert not passes
    kernel = next(v for v in model.weights if v.path.endswith("mlp/fc1/kernel"))
    ulp = np.zeros(kernel.shape, np.float32)
    ulp[7, 11] = np.spacing(kernel.numpy()[7, 11])

    @tf.function(jit_compile=jit_compile)
    def step():
        kernel.assign_add(ulp)

    step()
    assert not np.array_equal(weights_fingerprint(model), first) and len(passes) == 1
    assert weights_fingerprint(model) is weights_fingerprint(model) and len(passes) == 1


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_int8_litert_predict_keeps_the_export_bounds_at_any_batch(kind):
    io = load_io("tiny")
    model = (
        encoder("tiny")
        if kind == "encoder"
        else eegdino_tf.load_classifier(
            fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
        )
    )
    expected = io["tokens" if kind == "encoder" else "logits"]
    int8 = model.predict(io["raw_uv"], 2, verbose=0, runtime="litert", quantize="dynamic-int8")
    assert int8.shape == expected.shape
    assert global_cosines(int8, expected).min() >= EXPORT_MIN_INT8_COSINE
    assert 1e-4 < nrmse(int8, expected) < 0.1  # int8: not float32's answer, but close to it
    function = model.litert_function(19, 2000, "dynamic-int8")
    assert litert.MIN_INT8_COSINE <= function.cosine <= 1.0
    single = model.predict(io["raw_uv"][2:], verbose=0, runtime="litert", quantize="dynamic-int8")
    np.testing.assert_allclose(single, int8[2:], rtol=0, atol=1e-6)  # batch 1: the same answer


def test_int8_is_refused_under_the_probe_cosine_and_the_refusal_is_kept(monkeypatch):
    monkeypatch.setattr(litert, "MIN_INT8_COSINE", 1.5)  # above any cosine
    x = load_io("tiny")["raw_uv"]
    model = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    pattern = r"quantize='dynamic-int8' moves this model's output to cosine 0\.9\d{4} of float32"
    with pytest.raises(
        ConfigError, match=pattern + r" on the probe, under 1\.5; use quantize='none'"
    ):
        model.predict(x, verbose=0, runtime="litert", quantize="dynamic-int8")
    assert not model.__dict__["_litert_functions"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(tracing, "tflite_flatbuffer", no_conversion)  # the probe is kept too
    with pytest.raises(ConfigError, match=pattern):
        model.predict(x, verbose=0, runtime="litert", quantize="dynamic-int8")


def test_quantize_needs_litert_and_a_known_mode():
    x = load_io("tiny")["raw_uv"]
    with pytest.raises(ConfigError, match="quantize='dynamic-int8' runs in LiteRT: pass runtime="):
        encoder("tiny").predict(x, runtime="keras", quantize="dynamic-int8")
    with pytest.raises(ConfigError, match=r"unknown quantize='float16'; choose one of \('none', "):
        encoder("tiny").predict(x, runtime="litert", quantize="float16")


def test_encode_and_encode_corpus_pass_quantize_through(tmp_path, capsys):
    from eegdino_tf import cli
    from eegdino_tf.beam import EncodeCorpus
    from tests.helpers.recordings import TUH_LABELS, eeg_like, write_edf

    path = tmp_path / "rec.edf"
    write_edf(path, eeg_like(19, 200 * 20, 200.0), TUH_LABELS, 200.0, unit="uV")
    weights = str(fixture_path("tiny_encoder.safetensors"))
    argv = ["encode", str(path), "--weights", weights, "--norm-groups", "4"]
    outputs = {}
    for quantize in ("none", "dynamic-int8"):
        out = tmp_path / f"{quantize}.npz"
        flags = ["--output", str(out), "--runtime", "litert", "--quantize", quantize]
        assert cli.main([*argv, *flags]) == 0
        outputs[quantize] = np.load(out)["global_token"]
    assert outputs["none"].shape == outputs["dynamic-int8"].shape == (2, 64)
    cosines = global_cosines(outputs["dynamic-int8"], outputs["none"])
    assert cosines.min() >= litert.MIN_INT8_COSINE and nrmse(*outputs.values()) > 1e-4
    capsys.readouterr()
    keras = ["--runtime", "keras", "--quantize", "dynamic-int8"]
    assert cli.main([*argv, "--output", str(tmp_path / "x.npz"), *keras]) == 2
    assert (
        "--quantize dynamic-int8 runs in LiteRT: pass --runtime litert" in capsys.readouterr().err
    )

    corpus = EncodeCorpus(weights, "unused", runtime="litert", quantize="dynamic-int8")
    assert corpus.handler.quantize == corpus.settings()["quantize"] == "dynamic-int8"
    assert "quantize" not in EncodeCorpus(weights, "unused", runtime="litert").settings()
    with pytest.raises(ConfigError, match="quantize='dynamic-int8' runs in LiteRT"):
        EncodeCorpus(weights, "unused", runtime="keras", quantize="dynamic-int8")
