"""The Beam corpus pipeline (eegdino_tf.beam, ``eegdino-tf encode-corpus``) on a generated
corpus: rows equal ``encode``'s, failures isolated in errors.jsonl, counts, reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY, nrmse

beam = pytest.importorskip("apache_beam", reason="apache-beam is not installed (the beam extra)")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (the beam extra)")

import eegdino_tf  # noqa: E402
from eegdino_tf import cli  # noqa: E402
from eegdino_tf.beam import (  # noqa: E402
    EEGDinoModelHandler,
    _collect,
    encode_corpus,
    output_name,
)
from eegdino_tf.io import STANDARD_CHANNELS, encode_recording  # noqa: E402
from tests.helpers.recordings import TUH_LABELS, eeg_like, write_edf  # noqa: E402

WEIGHTS = str(TINY / "tiny_encoder.safetensors")
NEW_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
#: name -> (sampling rate, seconds, windows of 10 s): lengths, rates and layouts differ.
CORPUS = {"a.edf": (200.0, 35, 3), "sub/b.bdf": (256.0, 42, 4), "sub/deep/c.edf": (250.0, 20, 2)}
CORRUPT = "sub/corrupt.edf"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub" / "deep").mkdir(parents=True)
    write_edf(root / "a.edf", eeg_like(19, 200 * 35, 200.0), TUH_LABELS, 200.0)
    shuffled = [NEW_NAMES.get(name, name) for name in STANDARD_CHANNELS][::-1]  # other order
    write_edf(root / "sub/b.bdf", eeg_like(19, 256 * 42, 256.0), shuffled, 256.0, bdf=True)
    write_edf(root / "sub/deep/c.edf", eeg_like(19, 250 * 20, 250.0), TUH_LABELS, 250.0, extra=True)
    raw = (root / "a.edf").read_bytes()
    (root / CORRUPT).write_bytes(raw[: len(raw) - 5000])  # truncated
    return root


@pytest.fixture(scope="module")
def encoder():
    return eegdino_tf.load_encoder(WEIGHTS, norm_groups=4)


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> tuple[Path, dict]:
    """The corpus through the pipeline once (DirectRunner, in this process)."""
    output = tmp_path_factory.mktemp("out")
    patterns = [str(corpus / "**/*.edf"), str(corpus / "**/*.bdf")]
    result = encode_corpus(
        WEIGHTS, str(output), patterns=patterns, model_options={"norm_groups": 4}
    )
    return output, result


def rows(output: Path, recording: str) -> dict:
    """A recording's Parquet file as columns: lists, and float32 arrays for the lists of floats."""
    table = pq.read_table(output / "embeddings" / output_name(recording))
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        kind = table.schema.field(name).type
        while hasattr(kind, "value_type"):
            kind = kind.value_type
        columns[name] = np.asarray(values, np.float32) if kind == "float" else values
    return columns


def test_every_row_equals_encode_on_that_file(corpus, run, encoder):
    output, result = run
    report = {line["recording"]: line for line in result["recordings"]}
    for name, (_, _, count) in CORPUS.items():
        path = str(corpus / name)
        expected = encode_recording(encoder, path, progress=False)
        table = rows(output, path)
        assert (
            len(expected["global_token"])
            == count
            == len(table["window"])
            == report[path]["windows"]
        )
        assert report[path]["status"] == "written"
        assert list(table["window"]) == list(range(count))
        assert table["recording"] == [path] * count
        np.testing.assert_array_equal(table["start_s"], expected["window_start_s"])
        assert table["channels"] == [list(STANDARD_CHANNELS)] * count
        assert table["sfreq"] == [200.0] * count
        for key in ("global_token", "mean_token"):  # float32 lists (checked by rows())
            assert nrmse(table[key], expected[key]) <= 1e-6, (name, key)
    total = sum(count for _, _, count in CORPUS.values())
    metrics = result["metrics"]
    assert metrics["windows_read"] == metrics["windows_written"] == total
    assert metrics["recordings_written"] == len(CORPUS)
    assert metrics["model_loads"] == 1


def test_errors_name_exactly_the_corrupt_file(corpus, run):
    output, result = run
    errors = [json.loads(line) for line in (output / "errors.jsonl").read_text().splitlines()]
    assert [e["recording"] for e in errors] == [str(corpus / CORRUPT)]
    assert errors[0]["stage"] == "open" and "truncated or corrupt" in errors[0]["error"]
    assert {line["status"] for line in result["recordings"]} == {"written", "failed"}
    assert len(result["recordings"]) == len(CORPUS) + 1
    written = sorted(p.name for p in (output / "embeddings").iterdir())
    assert written == sorted(output_name(str(corpus / name)) for name in CORPUS)
    assert not (output / ".tmp").exists()  # no temporaries left, nor their emptied folders


def test_rerun_skips_done_recordings_and_gives_the_same_rows(corpus, run, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(run[0], output)
    before = {p.name: p.read_bytes() for p in (output / "embeddings").iterdir()}
    redo = output / "embeddings" / output_name(str(corpus / "a.edf"))
    redo.unlink()
    patterns = [str(corpus / "**/*.edf"), str(corpus / "**/*.bdf")]
    result = encode_corpus(
        WEIGHTS, str(output), patterns=patterns, model_options={"norm_groups": 4}
    )
    statuses = {Path(line["recording"]).name: line["status"] for line in result["recordings"]}
    assert statuses == {"a.edf": "written", "b.bdf": "skipped", "c.edf": "skipped",
                        "corrupt.edf": "failed"}  # fmt: skip
    assert {line["windows"] for line in result["recordings"] if line["status"] == "skipped"} == {
        4,
        2,
    }
    after = {p.name: p.read_bytes() for p in (output / "embeddings").iterdir()}
    assert after.keys() == before.keys()
    assert all(after[n] == before[n] for n in before if n != redo.name)  # untouched
    assert pq.read_table(redo).equals(pq.read_table(run[0] / "embeddings" / redo.name))
    assert (output / "errors.jsonl").read_text() == (run[0] / "errors.jsonl").read_text()
    assert result["metrics"]["windows_written"] == 3


def test_rerun_through_another_spelling_of_the_files_finds_them_done(corpus, run, tmp_path):
    output, link = tmp_path / "out", tmp_path / "link"
    shutil.copytree(run[0], output)
    link.symlink_to(corpus, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in (output / "embeddings").iterdir()}
    patterns = [f"{link}/./**/*.edf", f"{link}/**/*.bdf"]
    options = {"norm_groups": 4}
    result = encode_corpus(WEIGHTS, str(output), patterns=patterns, model_options=options)
    statuses = {Path(line["recording"]).name: line["status"] for line in result["recordings"]}
    assert statuses == {"a.edf": "skipped", "b.bdf": "skipped", "c.edf": "skipped",
                        "corrupt.edf": "failed"}  # fmt: skip
    metrics = result["metrics"]
    assert metrics["windows_read"] == metrics["windows_written"] == 0  # counters that never ran
    assert metrics["recordings_skipped"] == 3 and metrics["recordings_failed"] == 1
    assert {p.name: p.read_bytes() for p in (output / "embeddings").iterdir()} == before


def test_rerun_with_other_settings_is_refused_before_anything_runs(corpus, run, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(run[0], output)
    before = sorted(p.name for p in (output / "embeddings").iterdir())
    with pytest.raises(eegdino_tf.ConfigError, match=r"window=10 there, 5 now"):
        encode_corpus(
            WEIGHTS, str(output), patterns=[str(corpus / "a.edf")], window=5,
            model_options={"norm_groups": 4},
        )  # fmt: skip
    assert sorted(p.name for p in (output / "embeddings").iterdir()) == before


def test_classifier_pt_from_a_manifest_with_a_duplicate_and_bad_files(corpus, tmp_path):
    weights = str(TINY / "tiny_finetune_checkpoint.pt")  # a torch.save checkpoint, read as is
    path, missing = str(corpus / "a.edf"), str(corpus / "missing.edf")
    no_eeg = tmp_path / "no_eeg.edf"  # only ECG / EMG: no channel to pick
    write_edf(no_eeg, eeg_like(2, 200 * 20, 200.0), ["ECG", "EMG chin"], 200.0)
    manifest = tmp_path / "list.txt"
    other_spelling = str(corpus / "sub" / ".." / "a.edf")  # the same file: encoded once
    manifest.write_text(f"# recordings\n{path}\n\n{missing}\n{other_spelling}\n{no_eeg}\n{path}\n")
    output = tmp_path / "out"
    options = {"norm_groups": 4}
    result = encode_corpus(
        weights, str(output), manifest=str(manifest), classifier=True, model_options=options
    )
    assert [(line["recording"], line["status"]) for line in result["recordings"]] == [
        (path, "written"),
        (missing, "failed"),
        (str(no_eeg), "failed"),
    ]
    errors = [json.loads(line) for line in (output / "errors.jsonl").read_text().splitlines()]
    assert [(e["recording"], e["stage"]) for e in errors] == [
        (missing, "open"),
        (str(no_eeg), "open"),
    ]
    assert "no such file" in errors[0]["error"]
    table = rows(output, path)
    model = eegdino_tf.load_classifier(weights, **options)
    expected = encode_recording(model, path, progress=False)
    assert table["window"] == [0, 1, 2]  # once each, though listed twice
    for key in ("logits", "probabilities"):
        assert nrmse(table[key], expected[key]) <= 1e-6
    assert "global_token" not in table


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


def test_failed_inference_goes_to_errors_and_writes_no_file(corpus, tmp_path, monkeypatch):
    def boom(self, batch, model, inference_args=None):
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(EEGDinoModelHandler, "run_inference", boom)
    path = str(corpus / "a.edf")
    result = encode_corpus(
        WEIGHTS, str(tmp_path), patterns=[path], model_options={"norm_groups": 4}
    )
    assert [(line["status"], line["stage"]) for line in result["recordings"]] == [
        ("failed", "inference")
    ]
    assert "RuntimeError: the accelerator fell over" in result["recordings"][0]["error"]
    assert not list(tmp_path.glob("embeddings/*"))


def test_rows_must_be_exactly_the_planned_windows():
    plan = {"windows": 3, "channels": ["Cz"], "steps": []}
    for found in ([0, 1], [0, 1, 1, 2], [0, 2, 3]):  # dropped, duplicated, shifted
        group = {"plan": [plan], "rows": [{"window": i} for i in found], "error": []}
        (out,) = list(_collect(("r.edf", group)))
        assert out.tag == "error" and out.value["stage"] == "collect", found
    group = {"plan": [plan], "rows": [{"window": i} for i in (2, 0, 1)], "error": []}
    assert [row["window"] for row in next(_collect(("r.edf", group)))[2]] == [0, 1, 2]


def test_handler_through_litert_gives_the_keras_rows():
    """``runtime="litert"``: the same rows (to float32 rounding), a padded last batch too."""
    windows = [np.random.default_rng(i).normal(0, 30, (19, 2000)).astype(np.float32)
               for i in range(3)]  # fmt: skip
    found = {}
    for runtime in ("keras", "litert"):
        handler = EEGDinoModelHandler(WEIGHTS, batch_size=2, runtime=runtime, norm_groups=4)
        model = handler.load_model()
        found[runtime] = [*handler.run_inference(windows[:2], model),
                          *handler.run_inference(windows[2:], model)]  # fmt: skip
    for keras_row, litert_row in zip(found["keras"], found["litert"], strict=True):
        for key in ("global_token", "mean_token"):
            assert nrmse(litert_row[key], keras_row[key]) <= 2e-6
    with pytest.raises(eegdino_tf.ConfigError, match="unknown runtime 'onnx'"):
        EEGDinoModelHandler(WEIGHTS, runtime="onnx")
