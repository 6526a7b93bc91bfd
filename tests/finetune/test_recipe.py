"""The fine-tuning recipe: PyTorch's AdamW step, layer-wise rates, no decay where none is due,
warm-up then cosine, frozen-then-unfrozen encoder, label smoothing, class weights."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

import eegdino_tf
from eegdino_tf.errors import ConfigError
from eegdino_tf.finetune import (
    FinetuneRecipe,
    LayerwiseAdamW,
    SparseCrossentropyWithSmoothing,
    class_weights,
    compile_for_finetuning,
    finetune_optimizer,
    finetune_schedule,
)
from tests.helpers import OVERRIDES, fixture_path, nrmse
from tests.helpers.training import (
    AFTER_STEP_NRMSE,
    NO_DROPOUT,
    fixture_classifier,
    loss_and_gradients,
)


def test_layerwise_adamw_step_equals_torch_adamw():
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    model = fixture_classifier("tiny", **NO_DROPOUT)
    _, _, variables, grads = loss_and_gradients(model, golden)
    optimizer = LayerwiseAdamW(1e-3, weight_decay_rate=0.05, epsilon=1e-8)  # torch's values
    optimizer.apply_gradients(zip(grads, [v for _, v, _ in variables], strict=True))
    after = model.predict(golden["raw_uv"], verbose=0)
    assert nrmse(after, golden["logits_after_step"]) < AFTER_STEP_NRMSE


def test_recipe_scales_rates_by_depth_and_skips_decay_on_norms_biases_and_token():
    model = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    optimizer = finetune_optimizer(
        model, FinetuneRecipe(layer_decay=0.5), steps_per_epoch=10, epochs=2
    )
    scales = optimizer.lr_scales
    by_name = lambda part: {s for p, s in scales.items() if part in p}  # noqa: E731
    assert by_name("head/") == {1.0}
    assert by_name("encoder_layer_1/") == {0.5} and by_name("encoder_layer_0/") == {0.25}
    assert by_name("patch_embedding/") == {0.125} and by_name("global_token/") == {0.125}
    no_decay = set(optimizer.no_decay)
    assert any(p.endswith("global_token/token") for p in no_decay)
    assert all(not p.endswith("kernel") for p in no_decay)
    decayed = [v.path for v in model.trainable_weights if v.path not in no_decay]
    assert decayed and all(p.endswith("kernel") for p in decayed)


def test_schedule_warms_up_then_decays_to_the_floor():
    recipe = FinetuneRecipe(learning_rate=1e-3, warmup_epochs=1, min_learning_rate=1e-5)
    schedule = finetune_schedule(recipe, steps_per_epoch=10, epochs=5)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] and rates[4] == pytest.approx(1e-5, rel=1e-3)


def test_default_warmup_is_at_most_a_tenth_of_a_short_run():
    short = finetune_schedule(FinetuneRecipe(), steps_per_epoch=5, epochs=6)  # 30 steps
    assert float(short(2)) < 5e-4 and float(short(3)) == pytest.approx(5e-4)  # 3 warm-up steps
    long = finetune_schedule(FinetuneRecipe(), steps_per_epoch=10, epochs=100)
    assert float(long(49)) < 5e-4 and float(long(50)) == pytest.approx(5e-4)  # 5 epochs
    fixed = finetune_schedule(FinetuneRecipe(warmup_epochs=2), steps_per_epoch=5, epochs=6)
    assert float(fixed(5)) == pytest.approx(2.5e-4) and float(fixed(10)) == pytest.approx(5e-4)


def test_recipe_values_are_checked():
    for bad, message in (
        (dict(learning_rate=0.0), "learning_rate=0.0 must be above min_learning_rate=1e-06"),
        (dict(layer_decay=1.5), "layer_decay=1.5 must be in (0, 1]"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1 must be >= 0"),
        (dict(label_smoothing=1.0), "label_smoothing=1.0 must be in [0, 1)"),
        (dict(warmup_epochs=float("nan")), "warmup_epochs=nan must be >= 0 (or None)"),
        (dict(freeze_encoder_epochs=1.5), "freeze_encoder_epochs=1.5 must be a whole number"),
    ):
        with pytest.raises(ConfigError) as caught:
            FinetuneRecipe(**bad)
        assert str(caught.value).startswith(message), str(caught.value)


def test_label_smoothing_loss_is_the_smoothed_cross_entropy():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]], dtype=np.float32)
    labels = np.array([2, 0])
    got = float(SparseCrossentropyWithSmoothing(0.1)(labels, logits))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((2, 3), 0.1 / 3) + 0.9 * np.eye(3)[labels]
    assert got == pytest.approx(float(-(target * log_p).sum(axis=1).mean()), rel=1e-6)


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1])
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_frozen_then_unfrozen_encoder_trains_the_head_first():
    keras.utils.set_random_seed(0)
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    x, y = golden["raw_uv"], golden["labels"]
    model = fixture_classifier("tiny")
    callbacks = compile_for_finetuning(
        model,
        FinetuneRecipe(freeze_encoder_epochs=1, warmup_epochs=0),
        steps_per_epoch=1,
        epochs=2,
    )
    encoder_before = [w.numpy().copy() for w in model.encoder.weights]
    head_before = [w.numpy().copy() for w in model.head.weights]
    model.fit(x, y, epochs=1, batch_size=3, verbose=0, callbacks=callbacks)
    assert all(
        np.array_equal(a, b.numpy())
        for a, b in zip(encoder_before, model.encoder.weights, strict=True)
    )
    assert not all(
        np.array_equal(a, b.numpy()) for a, b in zip(head_before, model.head.weights, strict=True)
    )
    history = model.fit(
        x,
        y,
        epochs=2,
        initial_epoch=1,
        batch_size=3,
        verbose=0,
        callbacks=callbacks,
        class_weight=class_weights(y),
    )
    assert np.isfinite(history.history["loss"]).all()
    changed = [
        not np.array_equal(a, b.numpy())
        for a, b in zip(encoder_before, model.encoder.weights, strict=True)
    ]
    assert sum(changed) > len(changed) // 2


def test_linear_probe_never_trains_the_encoder():
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    model = fixture_classifier("tiny")
    callbacks = compile_for_finetuning(
        model, FinetuneRecipe(freeze_encoder_epochs=None), steps_per_epoch=1, epochs=2
    )
    before = [w.numpy().copy() for w in model.encoder.weights]
    model.fit(golden["raw_uv"], golden["labels"], epochs=2, verbose=0, callbacks=callbacks)
    assert all(
        np.array_equal(a, b.numpy()) for a, b in zip(before, model.encoder.weights, strict=True)
    )


def test_finetuning_learns_alpha_versus_beta_on_held_out_files(tmp_path):
    from eegdino_tf.data import window_dataset
    from eegdino_tf.io import STANDARD_CHANNELS
    from tests.helpers.recordings import rhythm_recording, write_edf

    rng = np.random.default_rng(0)
    files = {"train": [], "test": []}
    for split, count in (("train", 6), ("test", 3)):
        for i in range(count):
            for label, hz in ((0, 10.0), (1, 20.0)):  # alpha- vs beta-dominant
                path = tmp_path / f"{split}_{label}_{i}.edf"
                data = rhythm_recording(rng, hz, seconds=40, sfreq=250.0)
                write_edf(path, data, list(STANDARD_CHANNELS), 250.0)
                files[split].append((path, label))

    def dataset(split):
        paths, labels = zip(*files[split], strict=True)
        return window_dataset(paths, labels=list(labels))  # 4 windows of 10 s per file

    train = dataset("train").shuffle(64, seed=0).batch(8)
    test = dataset("test").batch(8)
    keras.utils.set_random_seed(0)
    encoder = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    model = eegdino_tf.EEGDinoClassifier(encoder, num_classes=2)
    epochs = 12
    recipe = FinetuneRecipe(learning_rate=3e-3, warmup_epochs=1)
    callbacks = compile_for_finetuning(model, recipe, steps_per_epoch=len(train), epochs=epochs)
    model.fit(train, epochs=epochs, verbose=0, callbacks=callbacks)

    y = np.concatenate([labels.numpy() for _, labels in test])
    predicted = model.predict(test, verbose=0).argmax(axis=1)
    balanced_accuracy = np.mean([np.mean(predicted[y == c] == c) for c in (0, 1)])
    print(f"held-out balanced accuracy after {epochs} epochs: {balanced_accuracy:.3f}")
    assert len(y) == 24 and balanced_accuracy >= 0.9


def test_a_classifier_saved_to_keras_keeps_its_optimizer_and_trains_on(tmp_path):
    golden = load_file(str(fixture_path("tiny_train.safetensors")))
    x, y = golden["raw_uv"], golden["labels"]
    model = fixture_classifier("tiny", **NO_DROPOUT)
    compile_for_finetuning(model, FinetuneRecipe(), steps_per_epoch=1, epochs=3)
    model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    model.save(tmp_path / "classifier.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compile() was not called"
        loaded = keras.models.load_model(tmp_path / "classifier.keras")
    assert isinstance(loaded.optimizer, LayerwiseAdamW)
    assert isinstance(loaded.loss, SparseCrossentropyWithSmoothing)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 1
    assert loaded.optimizer.lr_scales == model.optimizer.lr_scales
    assert loaded.optimizer.no_decay == model.optimizer.no_decay
    slots = zip(loaded.optimizer.variables, model.optimizer.variables, strict=True)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in slots)

    model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    assert int(loaded.optimizer.iterations) == 2
    after = model.predict(x, verbose=0)
    assert nrmse(loaded.predict(x, verbose=0), after) < AFTER_STEP_NRMSE  # measured 3.1e-7
