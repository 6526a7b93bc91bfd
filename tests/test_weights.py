"""Every weight layout loads to the same numbers; bad files fail with errors that say why."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eegdino_tf
from eegdino_tf import WeightsError
from tests.helpers import TINY, load_io, nrmse

TINY_ENCODER = TINY / "tiny_encoder.safetensors"
TINY_CLASSIFIER = TINY / "tiny_classifier.safetensors"


def tokens_of(path, **kwargs) -> np.ndarray:
    io = load_io("tiny")
    return eegdino_tf.load_encoder(path, norm_groups=4, **kwargs)(io["raw_uv_b1"]).numpy()


def write(tmp_path, tensors: dict, name: str = "weights.safetensors"):
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def tiny():
    return load_file(str(TINY_ENCODER))


def test_released_layout_loads(tiny):
    assert nrmse(tokens_of(TINY_ENCODER), load_io("tiny")["tokens_b1"]) <= 2e-6


@pytest.mark.parametrize("prefix", ["module.student.", "encoder.", "student."])
def test_prefixed_encoder_keys_load(tmp_path, tiny, prefix):
    path = write(tmp_path, {prefix + k: v for k, v in tiny.items()})
    assert nrmse(tokens_of(path), load_io("tiny")["tokens_b1"]) <= 2e-6


def test_rs_layout_loads():
    rs = TINY / "tiny_encoder_rs_layout.safetensors"
    assert nrmse(tokens_of(rs), load_io("tiny")["tokens_b1"]) <= 2e-6


def test_pretraining_extras_are_dropped(tmp_path, tiny):
    tensors = {"module.student." + k: v for k, v in tiny.items()}
    tensors |= {"module.teacher." + k: v + 1.0 for k, v in tiny.items()}
    tensors["module.student.encoder_layers.0.attn.relative_position_index"] = np.zeros(
        (4, 4), np.int64
    )
    tensors["module.student_head.mlp.0.weight"] = np.ones((3, 64), np.float32)
    tensors["module.dino_loss.center"] = np.ones((1, 3), np.float32)
    path = write(tmp_path, tensors)
    assert nrmse(tokens_of(path), load_io("tiny")["tokens_b1"]) <= 2e-6
    normalized = eegdino_tf.weights.normalize_state_dict(tensors)
    assert normalized.layout == "pretraining"
    assert len(normalized.dropped) == len(tiny) + 3
    assert "teacher" in normalized.dropped["module.teacher.global_tokens"]


def test_braindecode_head_names_load(tmp_path):
    names = {
        "full_linear.": "final_layer.token_proj.0.",
        "channel_linear.": "final_layer.time_proj.0.",
        "classifier.": "final_layer.classifier.",
    }
    tensors = {}
    for key, value in load_file(str(TINY_CLASSIFIER)).items():
        key = key.removeprefix("encoder.")
        for ours, theirs in names.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
        tensors[key] = value
    path = write(tmp_path, tensors)
    io = load_io("tiny")
    logits = eegdino_tf.load_classifier(path, norm_groups=4)(io["raw_uv"]).numpy()
    assert nrmse(logits, io["logits"]) <= 2e-6
    assert eegdino_tf.weights.normalize_state_dict(tensors).layout == "braindecode"


def test_missing_key_is_named(tmp_path, tiny):
    tensors = dict(tiny)
    del tensors["encoder_layers.1.mlp.fc2.bias"]
    with pytest.raises(WeightsError, match=r"missing key 'encoder_layers\.1\.mlp\.fc2\.bias'"):
        eegdino_tf.load_encoder(write(tmp_path, tensors), norm_groups=4)


def test_unexpected_key_is_named(tmp_path, tiny):
    tensors = dict(tiny, **{"patch_embedding.extra.weight": np.ones(3, np.float32)})
    with pytest.raises(WeightsError, match=r"unexpected key 'patch_embedding\.extra\.weight'"):
        eegdino_tf.load_encoder(write(tmp_path, tensors), norm_groups=4)


def test_wrong_shape_names_key_and_both_shapes(tmp_path, tiny):
    tensors = dict(tiny)
    tensors["encoder_layers.0.attn.proj.weight"] = np.ones((64, 63), np.float32)
    message = r"'encoder_layers\.0\.attn\.proj\.weight' has shape \[64, 63\], expected \[64, 64\]"
    with pytest.raises(WeightsError, match=message):
        eegdino_tf.load_encoder(write(tmp_path, tensors), norm_groups=4)


def test_wrong_config_is_a_shape_error(tmp_path):
    """An explicit config that does not fit the file fails on shapes, not silently."""
    with pytest.raises(WeightsError, match=r"has shape \[1, 1, 64\], expected \[1, 1, 200\]"):
        eegdino_tf.load_encoder(TINY_ENCODER, config="small")


def test_classifier_from_encoder_file_says_no_head():
    with pytest.raises(WeightsError, match="without a classification head"):
        eegdino_tf.load_classifier(TINY_ENCODER, norm_groups=4)


def test_truncated_file_is_one_line_error(tmp_path):
    data = TINY_ENCODER.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated, corrupt or not a safetensors") as err:
        eegdino_tf.load_encoder(path)
    assert "\n" not in str(err.value)


def test_garbage_file_is_one_line_error(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(WeightsError, match="cannot read"):
        eegdino_tf.load_encoder(path)


def test_missing_file_and_directory_are_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        eegdino_tf.load_encoder(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="is a directory"):
        eegdino_tf.load_encoder(tmp_path)


def test_non_eegdino_file_is_an_error(tmp_path):
    path = write(tmp_path, {"conv.weight": np.ones((2, 2), np.float32)})
    with pytest.raises(WeightsError, match="not an EEG-DINO"):
        eegdino_tf.load_encoder(path)


def test_num_heads_override_changes_the_model(tmp_path):
    model = eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4, num_heads=16)
    assert model.config.num_heads == 16
    io = load_io("tiny")
    assert nrmse(model(io["raw_uv_b1"]).numpy(), io["tokens_b1"]) > 1e-3


@pytest.mark.parametrize("layout", ["finetuning", "braindecode", "released"])
def test_save_weights_writes_exactly_what_the_loaders_read(tmp_path, layout):
    classifier = eegdino_tf.load_classifier(TINY_CLASSIFIER, norm_groups=4)
    model = classifier.encoder if layout == "released" else classifier
    path = eegdino_tf.save_weights(model, tmp_path / f"{layout}.safetensors", layout=layout)
    written = load_file(str(path))
    fixture = load_file(str(TINY_CLASSIFIER))  # the original finetuning layout
    renames = {
        "full_linear.": "final_layer.token_proj.0.",
        "channel_linear.": ("final_layer.time_proj.0."),
        "classifier.": "final_layer.classifier.",
    }
    expected = {}
    for key, value in fixture.items():
        if layout != "finetuning":
            key = key.removeprefix("encoder.")
        if layout == "braindecode":
            ours = next((o for o in renames if key.startswith(o)), None)
            key = key if ours is None else renames[ours] + key[len(ours) :]
        if layout != "released" or key.startswith(("global_tokens", "patch_", "encoder_")):
            expected[key] = value
    assert sorted(written) == sorted(expected)
    for key, value in expected.items():  # same PyTorch layouts, bit for bit
        assert written[key].dtype == np.float32 and written[key].shape == value.shape, key
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    assert eegdino_tf.weights.normalize_state_dict(written).layout == layout
    load = eegdino_tf.load_encoder if layout == "released" else eegdino_tf.load_classifier
    io = load_io("tiny")
    again = load(path, norm_groups=4)
    np.testing.assert_array_equal(
        again.predict(io["raw_uv"], verbose=0), model.predict(io["raw_uv"], verbose=0)
    )


def test_save_weights_refuses_a_head_layout_for_an_encoder_and_overwrites_only_with_force(
    tmp_path,
):
    encoder = eegdino_tf.load_encoder(TINY_CLASSIFIER, norm_groups=4)
    with pytest.raises(eegdino_tf.WeightsError, match="write it with layout='released'"):
        eegdino_tf.save_weights(encoder, tmp_path / "x.safetensors", layout="braindecode")
    assert not (tmp_path / "x.safetensors").exists()
    path = eegdino_tf.save_weights(encoder, tmp_path / "x.safetensors", layout="released")
    with pytest.raises(eegdino_tf.OutputExistsError):
        eegdino_tf.save_weights(encoder, path, layout="released")
    eegdino_tf.save_weights(encoder, path, layout="released", force=True)


def test_braindecode_loads_our_braindecode_layout_strictly(tmp_path):
    """Needs the bench extra (PyTorch, braindecode); skipped without it."""
    pytest.importorskip("braindecode")
    import torch
    from braindecode.models import EEGDINO
    from safetensors.torch import load_file as load_torch

    from eegdino_tf.signals import eeg_like_signal

    keras.utils.set_random_seed(0)
    model = eegdino_tf.build_classifier("small", num_classes=4)
    path = eegdino_tf.save_weights(model, tmp_path / "bd.safetensors", layout="braindecode")
    reference = EEGDINO(n_chans=19, n_outputs=4, n_times=2000, sfreq=200)
    reference.load_state_dict(load_torch(str(path)), strict=True)
    x = eeg_like_signal(19, 10, batch=2)
    with torch.no_grad():
        theirs = reference.eval()(torch.from_numpy(x) * 0.01).numpy()  # it takes uV / 100
    assert nrmse(model.predict(x, verbose=0), theirs) < 2e-6


def test_the_config_save_weights_writes_is_read_back(tmp_path):
    """What the tensors cannot tell (the group count, the heads) need not be passed again for
    a file eegdino-tf wrote; what is passed still wins."""
    model = eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=4, num_heads=16)
    path = eegdino_tf.save_weights(model, tmp_path / "custom.safetensors", layout="released")
    again = eegdino_tf.load_encoder(path)
    assert again.config == model.config and again.config.num_heads == 16
    io = load_io("tiny")
    np.testing.assert_array_equal(again(io["raw_uv_b1"]).numpy(), model(io["raw_uv_b1"]).numpy())
    info = eegdino_tf.weights.describe_weights(path)
    assert info["config"]["norm_groups"] == 4 and info["norm_groups_unknown"] is None
    assert eegdino_tf.load_encoder(path, num_heads=8).config.num_heads == 8
    metadata = eegdino_tf.weights.read_weights(path).metadata
    assert metadata.config == model.config.to_dict() and metadata.layout == "released"
    assert not metadata.has_head and metadata.writer == f"eegdino-tf {eegdino_tf.__version__}"
