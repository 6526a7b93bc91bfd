"""The layout registry: each layout is recognised, maps to and from the released names
exactly, round-trips through loading and saving, and is named nowhere else."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from safetensors.numpy import load_file

import eegdino_tf
from eegdino_tf import layouts
from eegdino_tf import weights as W
from eegdino_tf.cli import convert as convert_command
from eegdino_tf.convert import convert_checkpoint
from eegdino_tf.errors import ConfigError, WeightsError
from eegdino_tf.layouts import HEAD, LAYOUTS, NAMES, NO_HEAD, get_layout
from tests.helpers import TINY

TINY_CLASSIFIER = TINY / "tiny_classifier.safetensors"


@pytest.fixture(scope="module")
def released() -> dict[str, np.ndarray]:
    """The tiny classifier (encoder and head) under the released names."""
    return W.normalize_state_dict(load_file(str(TINY_CLASSIFIER))).tensors


def held(layout: layouts.Layout, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``layout`` holds of ``tensors``: the encoder alone where it has no head."""
    if layout.head != NO_HEAD:
        return tensors
    return {k: v for k, v in tensors.items() if not layouts.HEAD_KEY.match(k)}


def assert_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.parametrize("layout", LAYOUTS, ids=NAMES)
def test_each_layout_is_recognised_and_maps_back_exactly(tmp_path, released, layout):
    tensors = held(layout, released)
    config = W.infer_config(tensors, norm_groups=4)
    path = tmp_path / f"{layout.name}.safetensors"
    written = W.write_weights(path, tensors, config, layout=layout.name)
    assert sorted(load_file(str(path))) == sorted(written)
    assert set(written) != set(tensors) or layout.name == "released"  # its own names
    back = W.normalize_state_dict(load_file(str(path)))  # without the metadata
    assert back.layout == layout.name and back.dropped == {}
    assert_equal(back.tensors, tensors)


@pytest.mark.parametrize("layout", LAYOUTS, ids=NAMES)
def test_load_save_load_round_trips_exactly(tmp_path, released, layout):
    """Load a file of each layout, save it in that layout again: the same tensors, bit for
    bit; the model loads from either file to the same weights."""
    tensors = held(layout, released)
    config = W.infer_config(tensors, norm_groups=4)
    first = tmp_path / "first.safetensors"
    W.write_weights(first, tensors, config, layout=layout.name)
    load = eegdino_tf.load_encoder if layout.head == NO_HEAD else eegdino_tf.load_classifier
    model = load(first)  # the group count comes from the metadata
    assert_equal(W.released_tensors(model), tensors)
    second = eegdino_tf.save_weights(model, tmp_path / "second.safetensors", layout=layout.name)
    assert_equal(load_file(str(second)), load_file(str(first)))
    assert_equal(W.released_tensors(load(second)), tensors)


def test_the_eegdino_rs_layout_is_the_rs_crates_fixture(released):
    encoder = held(get_layout("eegdino-rs"), released)
    rs = get_layout("eegdino-rs").write(encoder, "the tiny encoder")
    assert_equal(rs, load_file(str(TINY / "tiny_encoder_rs_layout.safetensors")))


def test_a_layout_writes_a_head_exactly_where_it_has_one(released):
    encoder = {k: v for k, v in released.items() if not layouts.HEAD_KEY.match(k)}
    for layout in LAYOUTS:
        if layout.head == NO_HEAD:
            with pytest.raises(WeightsError, match=f"the {layout.name} layout is defined for the"):
                layout.write(released, "this model")
        if layout.head == HEAD:
            with pytest.raises(WeightsError, match=f"the {layout.name} layout holds a classifier"):
                layout.write(encoder, "this model")
    assert {x.name for x in LAYOUTS if x.head == NO_HEAD} == {"pretraining", "eegdino-rs"}
    assert {x.name for x in LAYOUTS if x.head == HEAD} == {"finetuning", "braindecode"}


def test_the_registry_names_every_layout_once():
    assert NAMES == ("braindecode", "pretraining", "eegdino-rs", "finetuning", "released")
    assert layouts.CHOICES == (*NAMES, "rs")
    assert get_layout("rs") is get_layout("eegdino-rs")
    command = convert_command.add_parser(argparse.ArgumentParser().add_subparsers())
    choices = next(a.choices for a in command._actions if a.dest == "layout")
    assert tuple(choices) == layouts.CHOICES


def test_an_unknown_layout_is_the_same_config_error_everywhere(tmp_path):
    encoder = eegdino_tf.build_encoder("small", depth=1)
    message = r"layout='keras' is not a weight layout; choose one of \('braindecode'"
    with pytest.raises(ConfigError, match=message):
        eegdino_tf.save_weights(encoder, tmp_path / "a.safetensors", layout="keras")
    with pytest.raises(ConfigError, match=message):
        convert_checkpoint(TINY_CLASSIFIER, tmp_path / "b.safetensors", layout="keras")
    assert list(tmp_path.iterdir()) == []
