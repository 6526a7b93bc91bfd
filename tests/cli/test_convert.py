"""``eegdino-tf convert``: the summary it prints, ``--all``, ``--layout``, one-line errors."""

from __future__ import annotations

import shutil

import pytest
from safetensors import safe_open

from eegdino_tf import cli
from tests.helpers import TINY

PRETRAIN = TINY / "tiny_pretrain_checkpoint.pt"


def test_cli_prints_a_summary(tmp_path, capsys):
    output = tmp_path / "out.safetensors"
    assert cli.main(["convert", str(PRETRAIN), str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {output}" in printed
    assert "kept: 45 tensors" in printed
    assert "46 x DINO teacher network (pretraining only)" in printed
    assert "1 x unused relative_position_index buffer" in printed
    assert "custom-size encoder (D=64, 2 layers" in printed


def test_cli_all(tmp_path, capsys):
    shutil.copy(PRETRAIN, tmp_path / "model_EEG_DINO_M.pt")
    argv = ["convert", "--all", "--input-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    assert cli.main([*argv, "--layout", "rs"]) == 0
    with safe_open(str(tmp_path / "eeg_dino_medium.safetensors"), "np") as handle:
        assert handle.metadata()["layout"] == "eegdino-rs"
    assert "eeg_dino_medium.safetensors" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", str(PRETRAIN)], "give INPUT.pt OUTPUT.safetensors"),
        (["convert", "--all", str(PRETRAIN), "x"], "not both"),
        (["convert", str(PRETRAIN), "x", "--input-dir", "."], "go with --all"),
        (["convert", "missing.pt", "x.safetensors"], "not found"),
        (
            ["convert", str(PRETRAIN), "x.safetensors", "--layout", "finetuning"],
            "is an encoder; write it with --layout released",
        ),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("eegdino-tf convert: error:") and message in err
    assert err.count("\n") == 1
