"""``eegdino-tf finetune``: runs, and every mistake is one line in the command's own flags
(exit 2): a bad manifest, an output that exists, is a file or cannot be written, a recording
shorter than a window, a resume with other settings, a bad recipe value."""

from __future__ import annotations

import pytest

from eegdino_tf.cli import build_parser, main
from eegdino_tf.cli.finetune import classes_line, settings_from
from eegdino_tf.finetune import FinetuneRecipe
from tests.helpers.finetune import ENCODER, rhythm_files, write_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edf")
    files = rhythm_files(folder, per_class=4, seconds=20)
    return write_manifest(folder, ["path,label", *(f"{p},{label}" for p, label, _ in files)])


def command(manifest, out, *flags):
    return ["finetune", str(manifest), "--weights", str(ENCODER), "--output", str(out), *flags]


FAST = ("--epochs", "1", "--batch-size", "8", "--norm-groups", "4", "--warmup-epochs", "0")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("eegdino-tf finetune: error: "), err
    return err


def test_cli_finetunes_and_reports_mistakes_in_one_line(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(command(manifest, out, *FAST)) == 0
    printed = capsys.readouterr().out
    assert "best epoch 1 of 1" in printed and "classifier.safetensors" in printed
    assert "classes: 0=alpha, 1=beta\n" in printed and (out / "classifier.safetensors").exists()

    bad = write_manifest(manifest.parent, ["path,label", "missing.edf,alpha"], "bad.csv")
    assert main(command(bad, tmp_path / "x")) == 2
    assert "missing.edf: no such file" in one_line_error(capsys)

    assert main(command(manifest, out)) == 2  # the output holds a run
    err = one_line_error(capsys)
    assert "pass --force to replace it or --resume to continue it" in err

    assert main(command(manifest, out, *FAST, "--resume", "--batch-size", "4")) == 2
    err = one_line_error(capsys)
    assert "was trained with --batch-size 8, not --batch-size 4; --resume continues" in err


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_that_is_no_folder_is_exit_2(manifest, tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
    assert main(command(manifest, out, "--force")) == 2
    assert "is a file, not a folder" in one_line_error(capsys)


def test_a_recording_shorter_than_a_window_is_advised_in_flags(manifest, tmp_path, capsys):
    assert main(command(manifest, tmp_path / "run", "--window", "30")) == 2
    err = one_line_error(capsys)
    assert "shorter than one --window 30 s; use a shorter window" in err and "pad" not in err


def test_the_recipe_is_set_by_flags_and_checked(tmp_path, capsys):
    parser = build_parser()
    base = ["finetune", "m.csv", "--weights", "w", "--output", "o"]
    assert settings_from(parser.parse_args(base)).recipe == FinetuneRecipe()
    flags = "--learning-rate 1e-3 --warmup-epochs 1 --layer-decay 0.9 --weight-decay 0.01 "
    flags += "--label-smoothing 0 --linear-probe"
    recipe = settings_from(parser.parse_args([*base, *flags.split()])).recipe
    assert recipe == FinetuneRecipe(
        learning_rate=1e-3,
        warmup_epochs=1,
        layer_decay=0.9,
        weight_decay=0.01,
        label_smoothing=0,
        freeze_encoder_epochs=None,
    )
    frozen = settings_from(parser.parse_args([*base, "--freeze-encoder-epochs", "2"]))
    assert frozen.recipe.freeze_encoder_epochs == 2

    assert main([*base, "--layer-decay", "1.5"]) == 2
    assert "--layer-decay 1.5 must be in (0, 1]" in one_line_error(capsys)


def test_many_classes_are_abbreviated():
    assert classes_line({"a": 0, "b": 1}) == "classes: 0=a, 1=b"
    line = classes_line({f"c{i:05d}": i for i in range(10_000)})
    assert line.endswith("9=c00009, ... (10000 in all: see metrics.json)") and len(line) < 200
