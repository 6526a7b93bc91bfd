"""``eegdino-tf info``: what the metadata eegdino-tf wrote tells about a file."""

from __future__ import annotations

import hashlib

import eegdino_tf
from eegdino_tf.cli import main
from eegdino_tf.convert import convert_checkpoint
from tests.helpers import TINY

PRETRAIN = TINY / "tiny_pretrain_checkpoint.pt"


def test_info_names_the_writer_and_the_source_of_a_conversion(tmp_path, capsys):
    converted = convert_checkpoint(PRETRAIN, tmp_path / "c.safetensors").output
    assert main(["info", str(converted)]) == 0
    digest = hashlib.sha256(PRETRAIN.read_bytes()).hexdigest()
    line = f"written by:  eegdino-tf {eegdino_tf.__version__}, from {PRETRAIN.name} ({digest})"
    assert line in capsys.readouterr().out.splitlines()
    assert main(["info", str(TINY / "tiny_encoder.safetensors")]) == 0
    assert "written by" not in capsys.readouterr().out  # no metadata of ours


def test_info_reads_the_group_count_from_a_file_eegdino_tf_wrote(tmp_path, capsys):
    model = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    path = eegdino_tf.save_weights(model, tmp_path / "e.safetensors", layout="eegdino-rs")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GroupNorm groups 4" in out and "note:" not in out
    assert "layout:      eegdino-rs" in out
    assert f"written by:  eegdino-tf {eegdino_tf.__version__}\n" in out
