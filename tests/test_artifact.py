"""Self-describing exports: every format carries the same export record, read back by
``artifact.read_record`` and ``eegdino-tf info``; the record changes no output and adds little."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from eegdino_tf import artifact
from eegdino_tf import tracing as T
from eegdino_tf.cli import main
from eegdino_tf.errors import ExportError
from eegdino_tf.export import export_onnx, export_saved_model, export_tflite, probe_eeg
from tests.helpers import TINY

WEIGHTS = TINY / "tiny_encoder.safetensors"
#: The keys ``eegdino-tf info --json`` promises for any file.
PROMISED = {"sfreq", "window_s", "channels", "input_shape", "units", "quantization",
            "weights_sha256", "version"}  # fmt: skip


@pytest.fixture(scope="module")
def exports(tmp_path_factory, encoder):
    folder = tmp_path_factory.mktemp("exports")
    muse = ["TP9", "AF7", "AF8", "TP10"]
    options = {"channels": 4, "samples": 800, "weights_file": WEIGHTS, "channel_names": muse}
    export_tflite(encoder, folder / "m.tflite", **options)
    export_tflite(encoder, folder / "q.tflite", quantize="dynamic-int8", **options)
    export_onnx(encoder, folder / "m.onnx", **options)
    export_saved_model(encoder, folder / "sm", **options)
    return folder


@pytest.mark.parametrize("name", ["m.tflite", "q.tflite", "m.onnx", "sm"])
def test_every_format_carries_the_same_record(exports, name):
    record = artifact.read_record(exports / name)
    assert record["channels"] == ["TP9", "AF7", "AF8", "TP10"]
    assert record["input_shape"][1:] == [4, 800] and record["window_s"] == 4.0
    assert record["sfreq"] == 200.0 and record["units"] == "uV"
    assert record["weights_sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert record["quantization"]["mode"] == ("dynamic-int8" if name == "q.tflite" else "none")
    assert record["quantization"]["self_check"]["nrmse"] > 0
    assert "tokens" in record["outputs"] and record["nan_policy"]


def test_the_tflite_record_changes_no_output_and_adds_under_8_kb(exports, encoder):
    spec = T.input_spec(encoder, 1, 4, 800)
    plain = T.tflite_flatbuffer(T.for_format(encoder, "tflite"), spec)
    with_record = (exports / "m.tflite").read_bytes()
    assert 0 < len(with_record) - len(plain) < 8192
    eeg = probe_eeg(1, 4, 800, seed=5)
    outputs = []
    for data in (plain, with_record):
        runner = Interpreter(model_content=data).get_signature_runner("serving_default")
        outputs.append(runner(eeg=eeg)["tokens"])
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("name", ["m.tflite", "m.onnx", "sm"])
def test_info_json_has_the_promised_keys_for_exports(exports, name, capsys):
    assert main(["info", str(exports / name), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert PROMISED <= set(shown) and shown["channels"][0] == "TP9"


def test_info_json_has_the_promised_keys_for_weights(capsys):
    assert main(["info", str(WEIGHTS), "--norm-groups", "4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert PROMISED <= set(shown)
    assert shown["weights_sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert shown["config"]["embed_dim"] == 64


def test_info_names_the_montage_of_an_export(exports, capsys):
    assert main(["info", str(exports / "m.tflite")]) == 0
    out = capsys.readouterr().out
    assert "channels:    TP9, AF7, AF8, TP10" in out and "4 s windows" in out


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("junk.tflite", b"\x00" * 64),
        ("junk.onnx", b"not a protobuf at all \xff\xfe"),
        ("other.json", json.dumps({"schema": "someone-else/1"}).encode()),
        ("broken.json", b"{"),
    ],
)
def test_a_file_without_a_valid_record_is_one_error(tmp_path, name, content, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ExportError) as info:
        artifact.read_record(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_a_model_without_a_record_says_so(tmp_path, encoder, capsys):
    path = tmp_path / "plain.tflite"
    spec = T.input_spec(encoder, 1, 19, 2000)
    path.write_bytes(T.tflite_flatbuffer(T.for_format(encoder, "tflite"), spec))
    assert main(["info", str(path)]) == 2
    assert "holds no eegdino-tf export record" in capsys.readouterr().err


def test_channel_names_must_match_the_channel_count(tmp_path, encoder):
    with pytest.raises(ExportError, match="3 channel names given for an input of 4 channels"):
        export_tflite(encoder, tmp_path / "m.tflite", channels=4, samples=800,
                      channel_names=["a", "b", "c"])  # fmt: skip
    assert not (tmp_path / "m.tflite").exists()
