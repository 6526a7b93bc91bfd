"""``.keras`` files of our models: what a user without ``import eegdino_tf`` sees, and hostile
files (a zip bomb, a config that would build more than the file holds) refused before Keras
inflates or builds them, by ``keras.models.load_model`` and ``eegdino_tf.load_keras`` alike."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import eegdino_tf
from eegdino_tf.errors import ConfigError, WeightsError
from tests.helpers import OVERRIDES, fixture_path
from tests.helpers.hostile import outcome

LOADERS = {"keras.models.load_model": keras.models.load_model, "load_keras": eegdino_tf.load_keras}


@functools.cache
def tiny_classifier_file(folder: Path) -> Path:
    path = folder / "tiny_classifier.keras"
    model = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    model.save(path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return tiny_classifier_file(tmp_path_factory.mktemp("keras"))


def rewritten(source: Path, target: Path, *, config=None, weights: bytes | None = None) -> Path:
    """``source`` with its config (a function of the parsed ``config.json``) or its weights
    member replaced; a replaced weights member is deflated (a bomb: zeros)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "config.json" and config is not None:
                data = json.dumps(config(json.loads(data))).encode()
            if info.filename == "model.weights.h5" and weights is not None:
                new.writestr(info.filename, weights, compress_type=zipfile.ZIP_DEFLATED)
                continue
            new.writestr(info, data)
    return target


def test_loading_without_importing_eegdino_tf_names_the_package(saved):
    # Keras imports the module of a class it does not know only for its own packages; what it
    # prints names our class, and (in the config it quotes) our package and module.
    code = f"import keras\nkeras.models.load_model({str(saved)!r})\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "Could not locate class 'EEGDinoClassifier'" in last
    assert "'module': 'eegdino_tf.models'" in last
    assert "'registered_name': 'eegdino_tf>EEGDinoClassifier'" in last


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS)
def test_a_keras_file_round_trips_through_both_loaders(saved, load):
    model = load(saved)
    assert isinstance(model, eegdino_tf.EEGDinoClassifier)
    x = np.random.default_rng(0).normal(0, 30, (2, 19, 2000)).astype(np.float32)
    reference = eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )
    np.testing.assert_array_equal(model(x).numpy(), reference(x).numpy())


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS)
def test_weights_that_inflate_past_the_ratio_are_refused_before_inflating(saved, tmp_path, load):
    bomb = rewritten(saved, tmp_path / "bomb.keras", weights=bytes(64 * 2**20))
    assert bomb.stat().st_size < 2**20  # 64 MiB of zeros deflate to some 64 kB
    err = outcome(lambda: load(bomb), max_bytes=16 * 2**20)
    assert isinstance(err, WeightsError)
    assert "MAX_INFLATE_RATIO=4 times the file's" in str(err)
    assert str(bomb) in str(err) and "refused before inflating them" in str(err)


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS)
def test_a_billion_classes_are_refused_before_anything_is_built(saved, tmp_path, load):
    def classes(config):
        config["config"]["num_classes"] = 10**9
        return config

    err = outcome(lambda: load(rewritten(saved, tmp_path / "classes.keras", config=classes)))
    assert isinstance(err, ConfigError)
    assert str(err) == "num_classes=1000000000 must be an integer in 1..100000"


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS)
@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        ({"depth": 10**6}, ConfigError, r"depth=1000000 must be an integer in 1\.\.256"),
        ({"mlp_dim": 10**9}, ConfigError, r"mlp_dim=1000000000 must be an integer in 1\.\.16384"),
        (  # each within its limit, together 1.6 TB of weights in a file of 0.5 MB
            {"depth": 256, "embed_dim": 16384, "mlp_dim": 16384, "conv_channels": [8, 8, 2048]},
            WeightsError,
            r"depth 256, width 16384 and MLP width 16384, whose blocks alone take "
            r"1649267441664 bytes of weights; its model.weights.h5 holds \d+: refused",
        ),
    ],
)
def test_an_encoder_shape_larger_than_the_file_is_refused_before_building(
    saved, tmp_path, load, shape, error, message
):
    def grown(config):
        config["config"]["encoder"]["config"].update(shape, norm_groups=1)
        return config

    err = outcome(lambda: load(rewritten(saved, tmp_path / "shape.keras", config=grown)))
    assert isinstance(err, error)
    assert re.search(message, str(err)), str(err)


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS)
def test_an_encoder_of_another_class_is_refused(saved, tmp_path, load):
    def dense(config):
        config["config"]["encoder"] = keras.saving.serialize_keras_object(keras.layers.Dense(10**9))
        return config

    err = outcome(lambda: load(rewritten(saved, tmp_path / "dense.keras", config=dense)))
    assert isinstance(err, ConfigError)
    assert "holds an 'encoder' of class 'eegdino_tf>EEGDinoEncoder'; found 'Dense'" in str(err)


def test_load_keras_refuses_what_is_not_a_zip_before_keras_opens_it(tmp_path):
    path = tmp_path / "bad.keras"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(WeightsError, match=r"bad.keras is not a .keras file \(not a zip archive\)"):
        eegdino_tf.load_keras(path)
