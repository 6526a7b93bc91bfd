"""``finetune_recordings`` and ``eegdino-tf finetune``: a manifest of labelled EDF files in,
a fine-tuned classifier, its held-out metrics and curves out; bad manifests fail before
training; ``resume`` continues a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import eegdino_tf
from eegdino_tf.errors import EEGDinoError, RecordingError
from eegdino_tf.finetune import (
    METRICS,
    FinetuneRecipe,
    finetune_recordings,
    label_mapping,
    plan_windows,
    read_manifest,
    split_rows,
)
from eegdino_tf.io import STANDARD_CHANNELS
from tests.helpers import OVERRIDES, fixture_path
from tests.helpers.recordings import rhythm_recording, write_edf

ENCODER = fixture_path("tiny_encoder.safetensors")
FAST = dict(
    batch_size=8,
    recipe=FinetuneRecipe(learning_rate=3e-3, warmup_epochs=0),
    verbose=0,
    **OVERRIDES["tiny"],
)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Eight 20 s EDF files (256 Hz, resampled to 200): four alpha, four beta, 2 windows each."""
    folder = tmp_path_factory.mktemp("edf")
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        for label, hz in (("alpha", 10.0), ("beta", 20.0)):
            path = folder / f"{label}_{i}.edf"
            write_edf(path, rhythm_recording(rng, hz, 20, 256.0), list(STANDARD_CHANNELS), 256.0)
            files.append((path.name, label, f"s{i}"))
    return folder, files


def write_manifest(folder, lines, name="manifest.csv"):
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def manifest(recordings):
    folder, files = recordings
    rows = ["path,label,subject", *(f"{p},{label},{s}" for p, label, s in files)]
    return write_manifest(folder, rows)


def test_finetune_writes_a_classifier_that_loads_back_with_the_same_logits(manifest, tmp_path):
    out = tmp_path / "run"
    result = finetune_recordings(manifest, ENCODER, out, epochs=2, **FAST)
    names = {p.name for p in result["files"]}
    assert {"classifier.safetensors", "metrics.json"} <= names
    assert names <= {"classifier.safetensors", "metrics.json", "curves.png"}
    assert all(p.exists() for p in result["files"]) and (out / "metrics.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == {"alpha": 0, "beta": 1}
    assert len(metrics["epochs"]) == 2 and metrics["best_epoch"] in (1, 2)
    for entry in metrics["epochs"]:
        assert set(METRICS) | {"epoch", "loss"} <= set(entry)
        assert np.isfinite(entry["loss"]) and 0 <= entry["balanced_accuracy"] <= 1
    assert metrics["best"] == metrics["epochs"][metrics["best_epoch"] - 1]
    split = metrics["split"]
    assert len(split["held_out"]) == 2 and len(split["train"]) == 6  # one file per class held
    assert not set(split["held_out"]) & set(split["train"])
    assert ("curves.png" in [p.name for p in result["files"]]) == (
        metrics["curves"] == "curves.png"
    )
    assert not list(tmp_path.glob(".run.*"))  # no temporary left beside it

    loaded = eegdino_tf.load_classifier(out / "classifier.safetensors", **OVERRIDES["tiny"])
    x = np.random.default_rng(1).normal(0, 20, (3, 19, 2000)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), result["model"].predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_split_by_subject_keeps_each_subject_on_one_side(manifest):
    rows = read_manifest(manifest)
    train, held = split_rows(rows, split_by="subject", val_fraction=0.25, seed=3)
    assert {r.subject for r in train}.isdisjoint({r.subject for r in held})
    assert {r.label for r in train} == {r.label for r in held} == {"alpha", "beta"}


def test_events_are_cut_into_the_windows_inside_them(recordings, tmp_path):
    folder, files = recordings
    lines = ["path,start_s,end_s,label", f"{files[0][0]},0,10,a", f"{files[0][0]},5,20,b"]
    rows = read_manifest(write_manifest(folder, lines, "events.csv"))
    plan = plan_windows(rows, label_mapping(rows), stride=5)
    assert plan.windows[rows[0].path] == [(0, 0), (1000, 1), (2000, 1)]


BAD = {
    "missing file": (["path,label", "{a},alpha", "nowhere.edf,beta"], "row 3: nowhere.edf"),
    "unknown column": (["path,label,colour", "{a},alpha,red"], "unknown column(s) 'colour'"),
    "missing column": (["path", "{a}"], "missing column(s) 'label'"),
    "half an event": (["path,start_s,label", "{a},0,alpha"], "missing column(s) 'end_s'"),
    "empty label": (["path,label", "{a},alpha", "{b},"], "row 3: empty label"),
    "start after end": (["path,start_s,end_s,label", "{a},8,3,alpha"], "start_s < end_s"),
    "short event": (
        ["path,start_s,end_s,label", "{a},0,10,alpha", "{b},2,9,beta"] + ["{c},0,20,alpha"] * 2,
        "holds no whole window",
    ),
    "one class": (["path,label", "{a},alpha", "{b},alpha"], "at least 2"),
    "empty split": (["path,label", "{a},alpha", "{b},beta"], "held-out split empty"),
    "no subjects": (["path,label", "{a},alpha", "{b},beta"], "split_by='subject' needs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_fails_before_training_and_writes_nothing(recordings, tmp_path, case):
    folder, files = recordings
    lines, message = BAD[case]
    names = {"a": files[0][0], "b": files[1][0], "c": files[2][0]}
    manifest = write_manifest(folder, [line.format(**names) for line in lines], f"{case}.csv")
    out = tmp_path / "run"
    split_by = "subject" if case == "no subjects" else "file"
    with pytest.raises(EEGDinoError) as caught:
        # weights that do not exist: the manifest must fail first
        finetune_recordings(manifest, tmp_path / "absent.safetensors", out, split_by=split_by)
    assert message in str(caught.value), str(caught.value)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_recording_shorter_than_a_window_is_named(recordings, tmp_path):
    folder, files = recordings
    short = folder / "short.edf"
    rng = np.random.default_rng(2)
    write_edf(short, rhythm_recording(rng, 10.0, 5, 256.0), list(STANDARD_CHANNELS), 256.0)
    lines = ["path,label", "short.edf,alpha", *(f"{p},{label}" for p, label, _ in files)]
    with pytest.raises(RecordingError, match=r"row 2 \(short.edf\).*shorter than one 10 s"):
        finetune_recordings(write_manifest(folder, lines, "short.csv"), ENCODER, tmp_path / "o")
    assert not list(tmp_path.iterdir())


def test_an_existing_output_is_an_error_unless_forced(manifest, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(EEGDinoError, match="force=True"):
        finetune_recordings(manifest, ENCODER, out)


def test_resume_continues_from_the_last_finished_epoch(manifest, tmp_path):
    out = tmp_path / "run"
    finetune_recordings(manifest, ENCODER, out, epochs=1, **FAST)
    first = json.loads((out / "metrics.json").read_text())["epochs"]
    result = finetune_recordings(manifest, ENCODER, out, epochs=2, resume=True, **FAST)
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[0] == first[0]
    assert result["metrics"]["epochs"] == epochs
    assert int(result["model"].optimizer.iterations) == 2 * 2  # 12 windows, batches of 8
    with pytest.raises(EEGDinoError, match="already run 2 epoch"):
        finetune_recordings(manifest, ENCODER, out, epochs=2, resume=True, **FAST)


def test_cli_finetunes_and_reports_a_bad_manifest_in_one_line(manifest, tmp_path, capsys):
    from eegdino_tf.cli import main

    out = tmp_path / "run"
    argv = ["finetune", str(manifest), "--weights", str(ENCODER), "--output", str(out)]
    code = main([*argv, "--epochs", "1", "--batch-size", "8", "--norm-groups", "4"])
    printed = capsys.readouterr().out
    assert code == 0 and "best epoch 1 of 1" in printed and "classifier.safetensors" in printed
    assert (out / "classifier.safetensors").exists()

    bad = write_manifest(manifest.parent, ["path,label", "missing.edf,alpha"], "bad.csv")
    code = main(["finetune", str(bad), "--weights", str(ENCODER), "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing.edf: no such file" in err
    code = main([*argv, "--split-by", "subject"])  # the output exists
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--force" in err and "--resume" in err


def test_an_interrupted_run_resumes_from_its_last_finished_epoch(manifest, tmp_path, monkeypatch):
    from eegdino_tf.finetune import run as finetune_run

    real, calls = finetune_run.heldout_metrics, []

    def interrupted_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(finetune_run, "heldout_metrics", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        finetune_recordings(manifest, ENCODER, out, epochs=3, **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint"]  # no half-written artifact
    monkeypatch.setattr(finetune_run, "heldout_metrics", real)
    finetune_recordings(manifest, ENCODER, out, epochs=2, resume=True, **FAST)
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing(manifest, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(EEGDinoError):
        finetune_recordings(manifest, tmp_path / "missing.safetensors", out, **FAST)
    assert not out.exists()


def test_mne_sources_from_python_fine_tune_like_files(recordings, tmp_path):
    import mne

    folder, files = recordings
    rows = []
    for name, label, subject in files:
        raw = mne.io.read_raw_edf(folder / name, preload=False, verbose="error")
        rows.append({"source": raw, "label": label, "subject": subject})
    rows[0] = {"source": folder / files[0][0], "label": files[0][1]}  # paths mix in
    result = finetune_recordings(rows, ENCODER, tmp_path / "run", epochs=1, **FAST)
    split = result["metrics"]["split"]
    assert split["windows"] == {"train": 12, "held_out": 4}
    assert any(name.startswith("RawEDF of row") for name in split["train"] + split["held_out"])
    with pytest.raises(RecordingError, match="wrap an array in mne.io.RawArray"):
        finetune_recordings(
            [{"source": np.zeros((19, 4000)), "label": "a"}], ENCODER, tmp_path / "x"
        )
