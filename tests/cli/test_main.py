"""The command line: info, demo, one-line errors; and the README's Python example runs."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import eegdino_tf
from eegdino_tf.cli import main
from eegdino_tf.signals import eeg_like_signal
from tests.helpers import REPO, TINY


def test_info_describes_a_classifier_file(capsys):
    assert main(["info", str(TINY / "tiny_classifier.safetensors"), "--norm-groups", "4"]) == 0
    out = capsys.readouterr().out
    assert "layout:      finetuning" in out
    assert "D=64, 2 layers, 8 heads, FFN 128, conv widths [8, 8, 8], GroupNorm groups 4" in out
    assert "yes, 4 classes" in out
    params = int(re.search(r"parameters:\s+([\d,]+)", out).group(1).replace(",", ""))
    model = eegdino_tf.load_encoder(TINY / "tiny_classifier.safetensors", norm_groups=4)
    assert params == model.count_params()


def test_demo_with_weights_prints_the_model_output(capsys):
    args = ["demo", "--weights", str(TINY / "tiny_encoder.safetensors"), "--norm-groups", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tokens (1, 191, 64)" in out
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    expected = model(eeg_like_signal()).numpy()[0, 0, :6]
    printed = re.search(r"global token \[0, 0, :6\]: \[(.*), \.\.\.\]", out).group(1)
    np.testing.assert_allclose([float(v) for v in printed.split(",")], expected, atol=1e-4)


def test_demo_without_weights_says_they_are_random():
    result = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "demo"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "NOT pretrained" in result.stdout and "--weights" in result.stdout
    assert "tokens (1, 191, 200)" in result.stdout


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eegdino-tf info: error: weight file not found")
    assert "\n" not in err


def test_eeg_like_signal_is_in_the_microvolt_range():
    x = eeg_like_signal(19, 10, seed=1)
    assert x.shape == (1, 19, 2000) and x.dtype == np.float32
    assert 5 < x.std() < 200


def test_cli_runs_without_tensorflow_start_up_noise():
    result = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "info", str(TINY / "tiny_encoder.safetensors")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "layout:      released" in result.stdout
    assert result.stderr == ""  # no oneDNN notice, CUDA probing or cuInit lines


def test_library_errors_name_python_keywords_and_the_cli_names_its_flags(tmp_path, capsys):
    from eegdino_tf.cli import build_parser
    from eegdino_tf.cli.options import translate
    from eegdino_tf.errors import OutputExistsError
    from eegdino_tf.files import atomic_output

    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"pass force=True to overwrite") as err:
        with atomic_output(taken):
            pass
    parser = build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]
    assert translate(str(err.value), export).endswith("pass --force to overwrite it")
    message = "or build the model with partial_patch='pad' (or partial_patch='crop')"
    assert translate(message, export) == (
        "or build the model with --partial-patch pad (or --partial-patch crop)"
    )
    assert translate("unknown_name=3 stays", export) == "unknown_name=3 stays"

    args = ["export", "onnx", str(TINY / "tiny_encoder.safetensors"), str(taken)]
    assert main([*args, "--norm-groups", "4"]) == 2
    err = capsys.readouterr().err
    assert "pass --force to overwrite it" in err and "force=True" not in err
    assert taken.read_bytes() == b"x"


def test_classifier_flag_on_an_encoder_file_says_drop_the_flag(tmp_path, capsys):
    weights = str(TINY / "tiny_encoder.safetensors")
    args = ["export", "onnx", weights, str(tmp_path / "m.onnx"), "--classifier"]
    assert main([*args, "--norm-groups", "4"]) == 2
    err = capsys.readouterr().err
    assert "without a classification head; drop --classifier" in err
    assert "load_encoder" not in err and not (tmp_path / "m.onnx").exists()


def test_a_keras_model_file_is_named_as_such(tmp_path, capsys):
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(eegdino_tf.WeightsError, match=r"is a zip archive \(a Keras .keras model"):
        eegdino_tf.load_encoder(path)
    assert main(["info", str(path)]) == 2
    assert "Keras .keras model" in capsys.readouterr().err
