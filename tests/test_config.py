"""One source for the architecture: the conv geometry, preset names, and the run options."""

from __future__ import annotations

import pytest

import eegdino_tf
from eegdino_tf import weights as W
from eegdino_tf.config import (
    CONV_POSITIONS,
    PATCH_SIZE,
    PRESETS,
    TEMPORAL_CONVS,
    EEGDinoConfig,
    ModelOptions,
    conv_lengths,
    get_config,
)
from eegdino_tf.errors import ConfigError


def test_conv_geometry_maps_a_patch_to_eight_positions():
    assert conv_lengths() == (PATCH_SIZE, 8, 8, 8) and CONV_POSITIONS == 8
    assert [(c.kernel, c.stride, c.padding) for c in TEMPORAL_CONVS] == [
        (49, 25, 24),
        (3, 1, 1),
        (3, 1, 1),
    ]


def test_layers_take_their_geometry_from_the_config():
    encoder = eegdino_tf.build_encoder("small", depth=1)
    stack = encoder.get_layer("patch_embedding").temporal
    convs = (stack.conv1, stack.conv2, stack.conv3)
    got = [(c.kernel_size, c.strides, c.padding, c.length) for c in convs]
    assert got == [
        (g.kernel, g.stride, g.padding, n)
        for g, n in zip(TEMPORAL_CONVS, conv_lengths()[:-1], strict=True)
    ]
    assert [c.filters for c in convs] == list(PRESETS["small"].conv_channels)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_name_comes_from_the_full_shape(name):
    assert get_config(name).name == name
    assert get_config(name, depth=2).name == "custom"
    preset = PRESETS[name]
    assert EEGDinoConfig(**{**preset.to_dict(), "depth": 2}).name == "custom"
    assert EEGDinoConfig.from_dict(preset.to_dict()).name == name


def test_a_two_layer_small_width_checkpoint_is_custom(tmp_path):
    encoder = eegdino_tf.build_encoder("small", depth=2)
    path = W.save_weights(encoder, tmp_path / "two_layers.safetensors", layout="released")
    assert W.describe_weights(path)["size"] == "custom"
    assert W.describe_weights(path)["config"]["depth"] == 2


def test_model_options_split_run_options_from_config_overrides():
    options, overrides = ModelOptions.split(
        {"precision": "mixed_bfloat16", "check_finite": False, "norm_groups": 4}
    )
    assert options == ModelOptions(precision="mixed_bfloat16", check_finite=False)
    assert overrides == {"norm_groups": 4}
    with pytest.raises(TypeError):
        ModelOptions("float32")  # keyword-only


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        get_config("tiny")
    with pytest.raises(ConfigError, match="num_heads"):
        get_config("small", num_heads=7)
    with pytest.raises(ConfigError, match="unknown config field"):
        get_config("small", width=3)
    with pytest.raises(ConfigError, match="precision must be"):
        eegdino_tf.build_encoder("small", depth=1, precision="float8")
    with pytest.raises(ConfigError, match="partial_patch must be"):
        eegdino_tf.build_encoder("small", depth=1, partial_patch="wrap")


def test_from_dict_takes_exactly_the_fields_to_dict_writes():
    data = PRESETS["small"].to_dict()
    assert EEGDinoConfig.from_dict(data) == PRESETS["small"]
    with pytest.raises(ConfigError, match=r"unknown \['name'\], missing \[\]"):
        EEGDinoConfig.from_dict({**data, "name": "small"})  # no "older configs" path
    with pytest.raises(ConfigError, match=r"unknown \[\], missing \['depth'\]"):
        EEGDinoConfig.from_dict({k: v for k, v in data.items() if k != "depth"})
