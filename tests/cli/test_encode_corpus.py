"""``eegdino-tf encode-corpus``: end to end against ``encode``, shared models, shell globs,
progress and a quiet stderr, errors as one line (exit 2), Ctrl-C (exit 130)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import nrmse
from tests.helpers.beam import (
    CORRUPT,
    WEIGHTS,
    interrupt_while_encoding,
    leftovers,
    rows,
    write_corpus,
)

pytest.importorskip("apache_beam", reason="apache-beam is not installed (the beam extra)")
pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (the beam extra)")

from eegdino_tf import cli  # noqa: E402
from eegdino_tf.io import encode_recording  # noqa: E402

PROGRESS = re.compile(r"progress: \d+/\d+ recordings, \d+ windows, \d+\.\d windows/s")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_cli_end_to_end_with_tokens_and_two_threads(corpus, tmp_path, capsys):
    path = str(corpus / "sub/deep/c.edf")
    options = ["--weights", WEIGHTS, "--norm-groups", "4", "--tokens", "--window", "5"]
    options += ["--stride", "2.5"]
    assert cli.main(["encode", path, "--output", str(tmp_path / "one.npz"), *options]) == 0
    output = tmp_path / "corpus"
    pipeline = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    argv = ["encode-corpus", path, "--output", str(output), *options, "--pipeline-options"]
    assert cli.main([*argv, *pipeline]) == 0
    printed = capsys.readouterr().out
    assert f"- {path}: written (7 windows)" in printed
    assert "1 recordings: 1 written; model loads: 1" in printed  # one model, two threads
    expected = np.load(tmp_path / "one.npz")
    table = rows(output, path)
    np.testing.assert_array_equal(table["start_s"], expected["window_start_s"])
    assert nrmse(table["tokens"], expected["tokens"]) <= 1e-6
    assert nrmse(table["global_token"], expected["global_token"]) <= 1e-6

    assert cli.main(["encode-corpus", str(corpus / CORRUPT), "--weights", WEIGHTS,
                     "--norm-groups", "4", "--output", str(tmp_path / "bad")]) == 1  # fmt: skip
    assert "1 failed" in capsys.readouterr().out
    assert leftovers(tmp_path / "bad") == []  # no row written: no settings pinned


def test_model_copies_serve_one_shared_model_with_the_same_rows(corpus, encoder, tmp_path, capsys):
    """``--model-copies``: the model loads in Beam's model server process (whose counters
    Beam loses), so the summary says the loads are not counted instead of printing 0."""
    path = str(corpus / "a.edf")
    argv = ["encode-corpus", path, "--weights", WEIGHTS, "--norm-groups", "4"]
    assert cli.main([*argv, "--output", str(tmp_path / "out"), "--model-copies", "1"]) == 0
    assert "model loads: not counted with --model-copies" in capsys.readouterr().out
    expected = encode_recording(encoder, path, progress=False)
    table = rows(tmp_path / "out", path)
    assert nrmse(table["global_token"], expected["global_token"]) <= 1e-6


def test_relative_glob_through_litert_prints_progress_and_nothing_else(
    corpus, tmp_path, monkeypatch, capfd
):
    """Run inside the data folder with ``'**/*.edf'`` (matched as the shell does), on LiteRT:
    stderr holds progress lines only, none of TensorFlow's, LiteRT's or Beam's log lines."""
    monkeypatch.chdir(corpus)
    output = tmp_path / "out"
    argv = ["encode-corpus", "**/*.edf", "--weights", WEIGHTS, "--norm-groups", "4"]
    assert cli.main([*argv, "--runtime", "litert", "--output", str(output)]) == 1  # corrupt
    out, err = capfd.readouterr()
    printed = out.splitlines()
    assert printed[0] == "- a.edf: written (3 windows)"
    assert printed[1].startswith(f"- {CORRUPT}: failed (") and "truncated or corrupt" in out
    assert printed[2:4] == [
        "- sub/deep/c.edf: written (2 windows)",
        "3 recordings: 1 failed, 2 written; model loads: 1",
    ]
    lines = err.splitlines()
    assert lines and all(PROGRESS.fullmatch(line) for line in lines), err
    assert lines[-1].startswith("progress: 3/3 recordings, 5 windows, ")
    assert leftovers(output) == ["settings.json"]


def test_errors_are_one_line_before_anything_runs(corpus, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("mine")
    base = ["encode-corpus", "--weights", WEIGHTS]
    path = str(corpus / "a.edf")
    cases = [
        ([*base, "*.edf", "--norm-groups", "4", "-o", "out"],
         f"0 recordings: patterns=['*.edf'] match no file (relative paths from {tmp_path})"),
        ([*base, path, "--norm-groups", "4", "-o", "file.txt"],
         "--output file.txt is a file, not a folder"),
        ([*base, path, "--norm-groups", "4", "-o", "file.txt/out"],
         "cannot write --output file.txt/out: file.txt is a file, not a folder"),
        ([*base, "--manifest", "list.txt", "--norm-groups", "4", "-o", "out"],
         "--manifest list.txt: no such file"),
        ([*base, path, "-o", "out"],
         f"{WEIGHTS}: the file does not tell the GroupNorm group count: D=64 with conv widths "
         "[8, 8, 8] matches no released size, so it is unknown; pass --norm-groups G, G one of "
         "[1, 2, 4, 8] (what the model was trained with)"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        out, err = capfd.readouterr()
        assert (out, err) == ("", f"eegdino-tf encode-corpus: error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_ctrl_c_exits_130_with_one_word_and_leaves_nothing(corpus, tmp_path, monkeypatch, capfd):
    interrupt_while_encoding(monkeypatch)
    output = tmp_path / "out"
    argv = ["encode-corpus", str(corpus / "a.edf"), "--weights", WEIGHTS, "--norm-groups", "4"]
    assert cli.main([*argv, "--output", str(output)]) == 130
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert out == "" and lines[-1] == "eegdino-tf encode-corpus: interrupted"
    assert all(PROGRESS.fullmatch(line) for line in lines[:-1]), err
    assert not output.exists()  # made by the run, left empty: removed
