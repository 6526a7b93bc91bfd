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
from tests.helpers import OVERRIDES, fixture_path, load_io
from tests.helpers.hostile import outcome

LOADERS = {"keras.models.load_model": keras.models.load_model, "load_keras": eegdino_tf.load_keras}


@functools.cache
def tiny_encoder():
    return eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])


@functools.cache
def tiny_classifier():
    return eegdino_tf.load_classifier(
        fixture_path("tiny_classifier.safetensors"), **OVERRIDES["tiny"]
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The tiny classifier as a ``.keras`` file."""
    path = tmp_path_factory.mktemp("keras") / "tiny_classifier.keras"
    tiny_classifier().save(path)
    return path


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
@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_keras_file_round_trip_is_identical(tmp_path, kind, load):
    model = tiny_encoder() if kind == "encoder" else tiny_classifier()
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = load(path)
    assert type(loaded) is type(model)
    x = load_io("tiny")["raw_uv_c16"]
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize(
    "imports",
    [
        "import eegdino_tf; import keras",
        "import eegdino_tf; import tensorflow; import keras",
        "import keras; import eegdino_tf",
        "import eegdino_tf.layers; import keras",  # Keras arrives inside one of our modules
    ],
)
def test_keras_file_loads_in_a_fresh_process_after_a_plain_import(tmp_path, imports):
    path = tmp_path / "classifier.keras"
    tiny_classifier().save(path)
    x = load_io("tiny")["raw_uv_c16"]
    np.save(tmp_path / "x.npy", x)
    code = (
        f"{imports}; import numpy as np\n"
        f"model = keras.models.load_model({str(path)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, model(np.load({str(tmp_path / 'x.npy')!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not register" not in result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), tiny_classifier()(x).numpy())


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
