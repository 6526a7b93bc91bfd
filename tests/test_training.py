"""Training mode: the reference's dropout and drop-path, and one step equal to the reference's
(loss, every gradient, one AdamW step) from ``*_train.safetensors``."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

import eegdino_tf
from tests.helpers import fixture_path, nrmse
from tests.helpers.training import (
    AFTER_STEP_NRMSE,
    GRAD_NRMSE,
    NO_DROPOUT,
    PARITY,
    fixture_classifier,
    keyed_variables,
    loss_and_gradients,
)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_one_training_step_equals_the_reference(size):
    golden = load_file(str(fixture_path(f"{size}_train.safetensors")))
    model = fixture_classifier(size, **NO_DROPOUT)
    logits, loss, variables, grads = loss_and_gradients(model, golden)
    assert nrmse(logits, golden["logits"]) <= PARITY
    np.testing.assert_allclose(float(loss), golden["loss"][0], rtol=1e-6)

    errors, reference_grads = {}, []
    for (key, _, permutation), grad in zip(variables, grads, strict=True):
        expected = golden[f"grad.{key}"]
        if permutation is not None:
            expected = expected.transpose(permutation)
        errors[key] = nrmse(grad, expected)
        reference_grads.append(tf.constant(expected))
    assert set(errors) == {k[len("grad.") :] for k in golden if k.startswith("grad.")}
    worst = max(errors, key=errors.get)
    print(f"{size}: worst gradient NRMSE {errors[worst]:.1e} ({worst}) over {len(errors)}")
    assert errors[worst] < GRAD_NRMSE, worst

    # Keras adds epsilon to sqrt(v) before the bias correction, PyTorch after it: at step 1
    # PyTorch's eps=1e-8 is Keras' eps * sqrt(1 - beta_2). (With epsilon=1e-8 itself the
    # logits land 1.3e-4 (tiny) / 3.4e-3 (small) away, from gradients near zero.)
    optimizer = keras.optimizers.AdamW(
        learning_rate=1e-3,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8 * np.sqrt(1 - 0.999),
        weight_decay=0.05,
    )
    optimizer.apply_gradients(zip(reference_grads, [v for _, v, _ in variables], strict=True))
    after = model.predict(golden["raw_uv"], verbose=0)
    moved = nrmse(after, golden["logits"])
    error = nrmse(after, golden["logits_after_step"])
    print(
        f"{size}: logits after one AdamW step: NRMSE {error:.1e} (the step moved them {moved:.1e})"
    )
    assert moved > 0.5 and error < AFTER_STEP_NRMSE


def test_dropout_and_drop_path_act_in_training_only():
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    x = golden["raw_uv"]
    model = fixture_classifier("tiny")  # the reference's defaults: 0.1, 0.1, (0.5, 0.3)
    assert (model.encoder.dropout, model.encoder.drop_path, model.head_dropout) == (
        0.1,
        0.1,
        (0.5, 0.3),
    )
    reference = model.predict(x, verbose=0)
    # Inactive in predict: equal to the reference within the parity bound of every path;
    # XLA's float32 rounding is the CPU's (1.2e-6 on AVX2-only hosts).
    assert nrmse(reference, golden["logits"]) <= PARITY
    assert nrmse(model(x, training=False), golden["logits"]) <= PARITY
    trained = [model(x, training=True).numpy() for _ in range(2)]
    assert nrmse(trained[0], reference) > 1e-2 and nrmse(trained[0], trained[1]) > 1e-2


def test_drop_path_drops_whole_examples_and_keeps_the_mean():
    layer = eegdino_tf.layers.DropPath(0.25, seed=1)
    x = tf.ones([4000, 3, 2])
    y = layer(x, training=True).numpy()
    per_example = y.reshape(4000, -1)
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))  # one draw per example
    assert set(np.unique(y)) <= {np.float32(0.0), np.float32(1 / 0.75)}
    assert abs(y.mean() - 1.0) < 0.05 and abs((y == 0).mean() - 0.25) < 0.03
    assert np.array_equal(layer(x, training=False).numpy(), x.numpy())


def test_dropout_options_are_saved_in_keras_files(tmp_path):
    model = eegdino_tf.build_classifier(
        "small", num_classes=3, depth=1, dropout=0.2, drop_path=0.05, head_dropout=(0.4, 0.1)
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert (loaded.encoder.dropout, loaded.encoder.drop_path, loaded.head_dropout) == (
        0.2,
        0.05,
        (0.4, 0.1),
    )
    block = loaded.encoder.get_layer("encoder_layer_0")
    assert (block.attn.dropout, block.mlp.dropout, block.drop_path1.rate) == (0.2, 0.2, 0.05)


def test_bad_dropout_rates_name_the_option():
    with pytest.raises(eegdino_tf.ConfigError, match=r"drop_path=1\.0"):
        eegdino_tf.build_encoder("small", depth=1, drop_path=1.0)
    with pytest.raises(eegdino_tf.ConfigError, match="head_dropout needs 2 rates"):
        eegdino_tf.build_classifier("small", depth=1, head_dropout=(0.5,))


#: Gradient NRMSE of a half-precision step against float32's, all weights concatenated, on
#: the tiny fixture (measured on an AVX512-BF16 CPU: 2.3e-3 float16, 1.8e-2 bfloat16).
HALF_GRAD_NRMSE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@pytest.mark.filterwarnings("ignore::eegdino_tf.hardware.PrecisionWarning")
@pytest.mark.parametrize("precision", sorted(HALF_GRAD_NRMSE))
def test_half_precision_step_is_finite_and_close_to_float32(precision):
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    reference = np.concatenate(
        [
            np.ravel(g)
            for g in loss_and_gradients(fixture_classifier("tiny", **NO_DROPOUT), golden)[3]
        ]
    )
    model = fixture_classifier("tiny", precision=precision, **NO_DROPOUT)
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(True))
    variables = [v for _, v, _ in keyed_variables(model)]
    with tf.GradientTape() as tape:
        logits = model(golden["raw_uv"], training=True)
        loss = model.loss(golden["labels"], logits)
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    if precision == "mixed_float16":
        scale = float(optimizer.scale_loss(tf.constant(1.0)))
        grads = [g / scale for g in grads]
    flat = np.concatenate([np.ravel(g) for g in grads])
    assert np.isfinite(flat).all() and np.isfinite(float(loss))
    error = nrmse(flat, reference)
    print(f"{precision}: gradient NRMSE vs float32 {error:.1e}")
    assert error < HALF_GRAD_NRMSE[precision]
    history = model.fit(golden["raw_uv"], golden["labels"], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v.numpy()).all() for v in variables)


def test_attention_dropout_in_training_acts_on_the_softmax_weights():
    """In training with dropout the attention takes tf.nn.softmax whatever the graph form
    (the matmul form's row sums would count dropped weights): the same seed, the same output."""
    from eegdino_tf.layers import Attention, GraphForm, graph_form

    x = tf.random.stateless_normal([2, 7, 16], seed=[1, 2])
    outputs = []
    for softmax in ("op", "matmul"):
        keras.utils.set_random_seed(3)  # the same weights and dropout seeds for both
        layer = Attention(16, num_heads=4, dropout=0.5)
        with graph_form(GraphForm(softmax=softmax)):
            outputs.append(layer(x, training=True).numpy())
    assert np.array_equal(outputs[0], outputs[1])
    with graph_form(GraphForm(softmax="matmul")):
        inference = layer(x, training=False).numpy()
    assert np.abs(inference - outputs[0]).max() > 1e-3  # dropout did act
