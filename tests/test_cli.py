"""The command line: info, demo, one-line errors; and the README's Python example runs."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
from conftest import REPO, TINY

import eegdino_tf
from eegdino_tf.cli import main
from eegdino_tf.commands import eeg_like_signal


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


def test_readme_python_example_runs():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        subprocess.run([sys.executable, "-c", block], check=True, cwd=REPO)
