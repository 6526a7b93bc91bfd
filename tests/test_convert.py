"""``.pt`` -> safetensors conversion: exact tensors, provenance, and model parity."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open
from safetensors.numpy import load_file

import eegdino_tf
from eegdino_tf import weights as W
from eegdino_tf.convert import convert_all, convert_checkpoint
from eegdino_tf.errors import CheckpointError, EEGDinoError
from tests.helpers import CASES, OVERRIDES, TINY, nrmse
from tests.helpers.checkpoints import dumps, tensor, write_checkpoint

PRETRAIN = TINY / "tiny_pretrain_checkpoint.pt"
FINETUNE = TINY / "tiny_finetune_checkpoint.pt"
TOLERANCE = 2e-6


def metadata(path) -> dict[str, str]:
    with safe_open(str(path), "np") as handle:
        return handle.metadata()


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == np.float32, key
        np.testing.assert_array_equal(actual[key], value)


def test_pretraining_checkpoint_keeps_the_student_encoder(tmp_path):
    output = tmp_path / "encoder.safetensors"
    report = convert_checkpoint(PRETRAIN, output)
    assert_same_tensors(load_file(str(output)), load_file(str(TINY / "tiny_encoder.safetensors")))
    assert report.kept == 45 and report.output == output and not report.has_head
    assert (report.config.embed_dim, report.config.depth) == (64, 2)
    assert report.source_layout == "pretraining"
    assert report.dropped["module.teacher.global_tokens"].startswith("DINO teacher")
    index_key = "module.student.encoder_layers.0.attn.relative_position_index"
    assert report.dropped[index_key] == "unused relative_position_index buffer"
    assert sum("teacher" in k for k in report.dropped) == 46
    meta = metadata(output)
    assert meta["size"] == "custom" and meta["has_head"] == "false" and meta["layout"] == "released"
    config = json.loads(meta["config"])
    assert (config["embed_dim"], config["depth"], config["norm_groups"]) == (64, 2, None)
    assert meta["source"] == PRETRAIN.name
    assert meta["source_sha256"] == hashlib.sha256(PRETRAIN.read_bytes()).hexdigest()
    assert meta["writer"] == f"eegdino-tf {eegdino_tf.__version__}"
    assert set(meta) == set(W.METADATA_KEYS)  # the one schema, which save_weights writes too


def test_finetune_checkpoint_keeps_encoder_and_head(tmp_path):
    output = tmp_path / "classifier.safetensors"
    report = convert_checkpoint(FINETUNE, output)
    expected = {
        key.removeprefix("encoder."): value
        for key, value in load_file(str(TINY / "tiny_classifier.safetensors")).items()
    }
    assert_same_tensors(load_file(str(output)), expected)
    assert report.has_head and report.dropped == {} and metadata(output)["has_head"] == "true"


def test_rs_layout_matches_the_eegdino_rs_fixture(tmp_path):
    output = tmp_path / "rs.safetensors"
    convert_checkpoint(PRETRAIN, output, layout="rs")
    expected = load_file(str(TINY / "tiny_encoder_rs_layout.safetensors"))
    assert_same_tensors(load_file(str(output)), expected)
    assert metadata(output)["layout"] == "eegdino-rs"


def test_safetensors_input_in_rs_layout_is_rewritten_released(tmp_path):
    output = tmp_path / "released.safetensors"
    convert_checkpoint(TINY / "tiny_encoder_rs_layout.safetensors", output)
    assert_same_tensors(load_file(str(output)), load_file(str(TINY / "tiny_encoder.safetensors")))


@pytest.mark.parametrize(
    ("storage_type", "dtype"),
    [("HalfStorage", np.float16), ("BFloat16Storage", ml_dtypes.bfloat16)],
)
def test_half_precision_checkpoint_is_widened_exactly(tmp_path, storage_type, dtype):
    halves = {
        k: v.astype(dtype) for k, v in load_file(str(TINY / "tiny_encoder.safetensors")).items()
    }
    state, storages = {}, {}
    for i, (key, value) in enumerate(halves.items()):
        strides = [s // value.itemsize for s in value.strides]
        state[f"module.student.{key}"] = tensor(
            str(i), storage_type, value.size, 0, value.shape, strides
        )
        storages[str(i)] = value.tobytes()
    source = write_checkpoint(tmp_path / "half.pt", dumps({"state_dict": state}), storages)
    convert_checkpoint(source, tmp_path / "out.safetensors")
    expected = {k: v.astype(np.float32) for k, v in halves.items()}
    assert_same_tensors(load_file(str(tmp_path / "out.safetensors")), expected)


def test_a_conversion_keeps_the_config_of_a_file_eegdino_tf_wrote(tmp_path):
    """The group count a file's metadata records survives conversion: the output loads
    without norm_groups."""
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    saved = eegdino_tf.save_weights(model, tmp_path / "saved.safetensors", layout="released")
    report = convert_checkpoint(saved, tmp_path / "rs.safetensors", layout="eegdino-rs")
    assert report.config == model.config and report.source_layout == "released"
    assert json.loads(metadata(report.output)["config"]) == model.config.to_dict()
    assert eegdino_tf.load_encoder(report.output).config == model.config


def test_rs_layout_refuses_a_head(tmp_path):
    with pytest.raises(EEGDinoError, match="rs layout is defined for the encoder only"):
        convert_checkpoint(FINETUNE, tmp_path / "rs.safetensors", layout="rs")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"keep me")
    with pytest.raises(EEGDinoError, match="already exists"):
        convert_checkpoint(PRETRAIN, output)
    assert output.read_bytes() == b"keep me"
    convert_checkpoint(PRETRAIN, output, force=True)
    assert len(load_file(str(output))) == 45


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(PRETRAIN.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        convert_checkpoint(broken, tmp_path / "out" / "x.safetensors")

    def fail_midway(tensors, path, metadata):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(PRETRAIN, tmp_path / "out" / "x.safetensors")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["broken.pt", "out"]


def test_convert_all_names_the_released_files(tmp_path):
    source, target = tmp_path / "pt", tmp_path / "out"
    source.mkdir()
    shutil.copy(PRETRAIN, source / "model_EEG_DINO_S.pt")
    shutil.copy(PRETRAIN, source / "model_EEG_DINO_L.pt")
    reports = convert_all(source, target)
    assert [r.output.name for r in reports] == [
        "eeg_dino_small.safetensors",
        "eeg_dino_large.safetensors",
    ]
    assert sorted(p.name for p in target.iterdir()) == [
        "eeg_dino_large.safetensors",
        "eeg_dino_small.safetensors",
    ]


def test_convert_all_without_released_files_lists_the_folder(tmp_path):
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(EEGDinoError, match=r"none of the released checkpoints.*other\.pt"):
        convert_all(tmp_path, tmp_path / "out")


def test_conversion_never_imports_torch(tmp_path):
    """Even where PyTorch is installed: a planted ``torch`` package must stay unimported."""
    planted = tmp_path / "site" / "torch"
    planted.mkdir(parents=True)
    marker = tmp_path / "torch_was_imported"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path / "site")!r})
        from eegdino_tf.convert import convert_checkpoint
        convert_checkpoint({str(PRETRAIN)!r}, {str(tmp_path / "e.safetensors")!r})
        convert_checkpoint({str(FINETUNE)!r}, {str(tmp_path / "c.safetensors")!r})
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Converted files run the reference computation
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def io_and_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("converted")
    encoder_path = folder / "encoder.safetensors"
    classifier_path = folder / "classifier.safetensors"
    convert_checkpoint(PRETRAIN, encoder_path)
    convert_checkpoint(FINETUNE, classifier_path)
    return {
        "io": load_file(str(TINY / "tiny_io.safetensors")),
        "encoder": eegdino_tf.load_encoder(encoder_path, **OVERRIDES["tiny"]),
        "encoder_from_pt": eegdino_tf.load_encoder(PRETRAIN, **OVERRIDES["tiny"]),
        "classifier": eegdino_tf.load_classifier(classifier_path, **OVERRIDES["tiny"]),
        "classifier_from_pt": eegdino_tf.load_classifier(FINETUNE, **OVERRIDES["tiny"]),
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", ["encoder", "encoder_from_pt"])
def test_converted_encoder_matches_reference(io_and_models, model, case):
    io = io_and_models["io"]
    tokens = io_and_models[model](io["raw_uv" + case]).numpy()
    assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", ["classifier", "classifier_from_pt"])
def test_converted_classifier_matches_reference(io_and_models, model, case):
    io = io_and_models["io"]
    logits = io_and_models[model](io["raw_uv" + case]).numpy()
    assert nrmse(logits, io["logits" + case]) <= TOLERANCE
