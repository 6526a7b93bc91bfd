"""The models (:mod:`eegdino_tf.models`): the presets' sizes, and fit training the head."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import eegdino_tf
from tests.helpers import TINY, load_io


def test_fit_trains_the_classifier_head():
    keras.utils.set_random_seed(0)
    io = load_io("tiny")
    # Memorising three examples: without the head's dropout (0.5, 0.3) to make it quick.
    model = eegdino_tf.load_classifier(
        TINY / "tiny_classifier.safetensors", norm_groups=4, head_dropout=(0.0, 0.0)
    )
    model.encoder.trainable = False
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = np.array([0, 1, 2])
    encoder_before = [w.numpy().copy() for w in model.encoder.weights]
    first = model.evaluate(io["raw_uv"], y, verbose=0)
    model.fit(io["raw_uv"], y, epochs=15, batch_size=3, verbose=0)
    assert model.evaluate(io["raw_uv"], y, verbose=0) < 0.5 * first
    for before, after in zip(encoder_before, model.encoder.weights, strict=False):
        np.testing.assert_array_equal(before, after.numpy())


@pytest.mark.parametrize("preset, params", [("small", 4.4e6), ("medium", 33e6), ("large", 200e6)])
def test_presets_have_the_published_sizes(preset, params):
    config = eegdino_tf.get_config(preset)
    assert config.num_heads == 8
    if preset == "large":  # building large costs a few seconds; count from shapes instead
        d, f = config.embed_dim, config.mlp_dim
        count = config.depth * (4 * d * d + 2 * d * f + 9 * d + f)
        assert abs(count - params) / params < 0.1
        return
    model = eegdino_tf.build_encoder(preset)
    assert abs(model.count_params() - params) / params < 0.1
    out = model(np.zeros((1, 2, 400), np.float32))
    assert out.shape == (1, 1 + 2 * 2, config.embed_dim)
