"""The Beam corpus pipeline (eegdino_tf.beam, ``eegdino-tf encode-corpus``) on a generated
corpus: rows equal ``encode``'s, failures isolated in errors.jsonl, counts, reruns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY, nrmse
from tests.helpers.beam import (
    CORPUS,
    CORRUPT,
    WEIGHTS,
    interrupt_while_encoding,
    leftovers,
    rows,
    write_corpus,
)

beam = pytest.importorskip("apache_beam", reason="apache-beam is not installed (the beam extra)")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (the beam extra)")

import eegdino_tf  # noqa: E402
import eegdino_tf.beam as beam_module  # noqa: E402
from eegdino_tf.beam import (  # noqa: E402
    EEGDinoModelHandler,
    EncodeCorpus,
    _collect,
    _exception_message,
    _lock_run,
    _Progress,
    encode_corpus,
    match_recordings,
    output_name,
)
from eegdino_tf.io import STANDARD_CHANNELS, encode_recording  # noqa: E402
from tests.helpers.recordings import eeg_like, write_edf  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


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


def test_patterns_match_as_the_shell_does(tmp_path, monkeypatch):
    """Relative globs from the data folder, ``**`` for zero or more folders, dot files only
    when spelled, files only; an existing ``rec[1].edf`` is itself, a missing plain path kept."""
    for name in ("a.edf", "rec[1].edf", "rec1.edf", ".hidden.edf", "sub/b.edf", "sub/deep/c.edf",
                 "folder.edf/inner.edf"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert match_recordings("*.edf") == ["a.edf", "rec1.edf", "rec[1].edf"]
    assert match_recordings("**/*.edf") == [
        "a.edf", "folder.edf/inner.edf", "rec1.edf", "rec[1].edf", "sub/b.edf", "sub/deep/c.edf",
    ]  # fmt: skip
    assert match_recordings(["rec[1].edf", "missing.edf", "a.edf", "./a.edf"]) == [
        "rec[1].edf", "missing.edf", "a.edf", "./a.edf",
    ]  # fmt: skip
    assert match_recordings("sub/**/*.edf") == ["sub/b.edf", "sub/deep/c.edf"]
    assert match_recordings(str(tmp_path / "sub" / "*.edf")) == [str(tmp_path / "sub/b.edf")]
    assert match_recordings(["zz*.edf", "sub/*.bdf"]) == []
    (tmp_path / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (tmp_path / "sub" / "deep" / "loop").symlink_to("..", target_is_directory=True)
    assert match_recordings("sub/**/*.edf") == ["sub/b.edf", "sub/deep/c.edf"]  # not entered
    assert match_recordings("sub/loop/*.edf") == ["sub/loop/a.edf", "sub/loop/rec1.edf",
                                                  "sub/loop/rec[1].edf"]  # fmt: skip


def test_no_recording_is_an_error_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    options = {"model_options": {"norm_groups": 4}}
    with pytest.raises(eegdino_tf.RecordingError, match=r"^0 recordings: patterns=\['\*\.edf'\]"):
        encode_corpus(WEIGHTS, "out", patterns="*.edf", **options)
    with pytest.raises(eegdino_tf.RecordingError, match="manifest='empty.txt' match no file"):
        encode_corpus(WEIGHTS, "out", manifest="empty.txt", **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_bad_outputs_and_manifests_are_refused_before_the_pipeline(corpus, tmp_path):
    path, options = str(corpus / "a.edf"), {"model_options": {"norm_groups": 4}}
    file = tmp_path / "file.txt"
    file.write_text("mine")
    unwritable = tmp_path / "read-only"
    unwritable.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into any folder: take one no one may write into
        unwritable = Path("/sys/eegdino-tf-test")
    cases = [
        (file, rf"^output='{file}' is a file, not a folder$"),
        (file / "out", rf"^cannot write output='{file}/out': {file} is a file, not a folder$"),
        (unwritable / "out", rf"^cannot write output='{unwritable}/out': \w[\w ]+$"),
    ]
    for output, message in cases:
        with pytest.raises(eegdino_tf.OutputError, match=message):
            encode_corpus(WEIGHTS, str(output), patterns=[path], **options)
    missing = tmp_path / "missing.txt"
    with pytest.raises(eegdino_tf.RecordingError, match=rf"^manifest='{missing}': no such file$"):
        encode_corpus(WEIGHTS, str(tmp_path / "out"), manifest=str(missing), **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "read-only"]
    assert file.read_text() == "mine"


def test_a_run_that_fails_at_its_start_pins_no_settings(corpus, tmp_path, monkeypatch):
    """An unknown group count is refused before anything is written; a model that fails to
    load on the workers leaves no settings.json, so the corrected rerun is not refused."""
    path, output = str(corpus / "sub/deep/c.edf"), tmp_path / "out"
    with pytest.raises(eegdino_tf.WeightsError, match="pass norm_groups=G"):
        encode_corpus(WEIGHTS, str(output), patterns=[path])
    assert not output.exists()

    def broken(self):
        raise RuntimeError("no memory for the model")

    with monkeypatch.context() as patch:
        patch.setattr(EEGDinoModelHandler, "load_model", broken)
        with pytest.raises(Exception, match="no memory for the model"):
            encode_corpus(WEIGHTS, str(output), patterns=[path], window=10,
                          model_options={"norm_groups": 2})  # fmt: skip
    assert leftovers(output) == []
    result = encode_corpus(WEIGHTS, str(output), patterns=[path], window=5,
                           model_options={"norm_groups": 4})  # fmt: skip
    assert [line["status"] for line in result["recordings"]] == ["written"]
    assert json.loads((output / "settings.json").read_text())["window"] == 5
    assert leftovers(output) == ["settings.json"]


def test_ctrl_c_raises_keyboard_interrupt_and_leaves_nothing(corpus, tmp_path, monkeypatch):
    """A real SIGINT while the model runs: Beam would make a RuntimeError of it."""
    interrupt_while_encoding(monkeypatch)
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(WEIGHTS, str(output), patterns=[str(corpus / "a.edf")],
                      model_options={"norm_groups": 4})  # fmt: skip
    assert list(output.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_next_run_removes_what_dead_runs_left_not_what_live_runs_hold(tmp_path):
    """Decided by lock: a run holds an exclusive flock on .tmp/<run>.lock while it lives (the
    kernel drops it when the process dies, kill -9 too)."""
    import fcntl

    output = tmp_path / "out"
    dead = subprocess.run(  # a run that takes its lock, writes a partial file and is killed
        [sys.executable, "-c", "import os, sys; from eegdino_tf.beam import _lock_run; "
         "_lock_run(sys.argv[1], 'dead'); os.makedirs(sys.argv[1] + '/.tmp/dead'); "
         "open(sys.argv[1] + '/.tmp/dead/123_partial', 'wb').write(b'PAR1');"
         "os.kill(os.getpid(), 9)", str(output)],
        cwd=Path(eegdino_tf.__file__).parents[1],
    )  # fmt: skip
    assert dead.returncode == -9
    (output / ".tmp" / "old_partial").write_bytes(b"from an earlier version")
    (output / "beam-temp-errors.jsonl-0123abcd").mkdir()
    (output / ".tmp" / "live").mkdir()
    (output / ".tmp" / "live" / "456_partial").write_bytes(b"PAR1")
    live = os.open(output / ".tmp" / "live.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(live, fcntl.LOCK_EX)  # another run, alive
    try:
        mine = _lock_run(str(output), "mine")
        os.close(mine)
    finally:
        os.close(live)
    found = sorted(p.relative_to(output).as_posix() for p in output.rglob("*"))
    assert found == [".tmp", ".tmp/live", ".tmp/live.lock", ".tmp/live/456_partial",
                     ".tmp/mine.lock"]  # fmt: skip


def test_a_bad_recording_fails_alone_in_its_batch(corpus, tmp_path, capfd):
    """NaN samples in one recording: the clean ones sharing its batches are written; each
    error is one line naming the window. The library prints no progress unless asked."""
    mne = pytest.importorskip("mne", reason="mne writes the .fif recording with NaN samples")
    data = eeg_like(19, 200 * 30, 200.0) * 1e-6
    data[3, 2500:2600] = np.nan  # in window 1 (10-20 s)
    info = mne.create_info(list(STANDARD_CHANNELS), 200.0, "eeg")
    bad = tmp_path / "nan_raw.fif"
    mne.io.RawArray(data, info, verbose=False).save(bad, verbose=False)
    clean = [str(corpus / name) for name in CORPUS]
    output = tmp_path / "out"
    result = encode_corpus(WEIGHTS, str(output), patterns=[*clean, str(bad)], batch_size=16,
                           model_options={"norm_groups": 4})  # fmt: skip
    statuses = {line["recording"]: line["status"] for line in result["recordings"]}
    assert statuses == {**dict.fromkeys(clean, "written"), str(bad): "failed"}
    assert result["metrics"]["windows_written"] == sum(c for _, _, c in CORPUS.values())
    lines = (output / "errors.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{
        "recording": str(bad), "stage": "inference",
        "error": "window 1 at 10 s: InputError: example 0: EEG input contains NaN or Inf; clean "
                 "or interpolate bad samples first (or build the model with check_finite=False)",
    }]  # fmt: skip
    assert "progress" not in capfd.readouterr().err


def test_dead_letters_give_the_first_line_of_the_exception():
    lines = ["Traceback (most recent call last):\n", '  File "x.py", line 1, in f\n',
             "ValueError: bad window\nsecond line of the message\n"]  # fmt: skip
    assert _exception_message((ValueError, "ValueError('bad')", lines)) == "ValueError: bad window"
    assert _exception_message(KeyError("k")) == "KeyError: 'k'"


def test_progress_is_one_line_a_second_at_most():
    now = [0.0]
    lines: list[str] = []
    progress = _Progress(3, lines.append, clock=lambda: now[0])
    for t, event in [
        (0.2, ("planned", "a", 2)),
        (0.4, ("encoded", "a")),
        (0.6, ("encoded", "a")),
        (1.5, ("finished", "b")),
        (1.9, ("encoded", "c")),
        (2.6, ("planned", "c", 1)),
    ]:
        now[0] = t
        getattr(progress, event[0])(*event[1:])
    assert lines == [
        "progress: 2/3 recordings, 2 windows, 1.3 windows/s",
        "progress: 3/3 recordings, 3 windows, 1.2 windows/s",
    ]


def test_litert_is_converted_as_the_model_loads_inside_load_context(monkeypatch):
    """So the command line sets the converter's C++ log lines aside (``load_context``)."""
    monkeypatch.setattr(beam_module, "_unreported_loads", 0)  # its load is never reported
    events: list[str] = []

    class Context:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    class Model:
        def litert_function(self, channels, samples, quantize="none"):
            events.append(f"convert {channels}x{samples}")

    monkeypatch.setattr(eegdino_tf, "load_encoder", lambda path, **options: Model())
    transform = EncodeCorpus(WEIGHTS, "unused", runtime="litert", window=5, channels="Cz, Pz,",
                             load_context=Context, model_options={"norm_groups": 4})  # fmt: skip
    assert transform.window_shape() == (2, 1000)
    transform.handler.load_model()
    assert events == ["enter", "convert 2x1000", "exit"]
