"""Manifests: hostile CSVs fail in one line naming the line, a recording under two names is one
recording for the split, events are cut into the windows inside them, a NaN sample or a
recording shorter than a window is found while planning (before training)."""

from __future__ import annotations

import numpy as np
import pytest

from eegdino_tf.config import MAX_CLASSES
from eegdino_tf.errors import RecordingError
from eegdino_tf.finetune import label_mapping, plan_windows, read_manifest, split_rows
from eegdino_tf.io import STANDARD_CHANNELS
from tests.helpers.finetune import rhythm_files, write_manifest


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Eight 20 s EDF files (256 Hz): four alpha, four beta, subjects s0..s3."""
    folder = tmp_path_factory.mktemp("edf")
    return folder, rhythm_files(folder, per_class=4, seconds=20)


def whole(files):
    return ["path,label,subject", *(f"{p},{label},{s}" for p, label, s in files)]


def test_split_by_subject_keeps_each_subject_on_one_side(recordings):
    folder, files = recordings
    rows = read_manifest(write_manifest(folder, whole(files)))
    train, held = split_rows(rows, split_by="subject", val_fraction=0.25, seed=3)
    assert {r.subject for r in train}.isdisjoint({r.subject for r in held})
    assert {r.label for r in train} == {r.label for r in held} == {"alpha", "beta"}


def test_events_are_cut_into_the_windows_inside_them(recordings):
    folder, files = recordings
    lines = ["path,start_s,end_s,label", f"{files[0][0]},0,10,a", f"{files[0][0]},5,20,b"]
    rows = read_manifest(write_manifest(folder, lines, "events.csv"))
    plan = plan_windows(rows, label_mapping(rows), stride=5)
    assert plan.windows[rows[0].path] == [(0, 0), (1000, 1), (2000, 1)]


def hostile_manifests(folder, a):
    return {
        "unquoted comma": (f"path,label\n{a},alpha, beta\n".encode(), "line 2: 3 fields"),
        "latin-1": (f"path,label\n{a},caf\xe9\n".encode("latin-1"), "line 2: not UTF-8"),
        "binary": (b"path,label\n\x00\x01\n\xff\xfe\x80", "line 3: not UTF-8"),
        "huge field": (
            f"path,label\n{a},{'x' * 200_000}\n".encode(),
            "line 2: not a valid CSV (field larger than field limit",
        ),
        "an EDF": ((folder / a).read_bytes(), "line 1: not UTF-8"),
    }


@pytest.mark.parametrize("case", ["unquoted comma", "latin-1", "binary", "huge field", "an EDF"])
def test_a_hostile_manifest_is_one_line_naming_the_manifest_and_line(recordings, case):
    folder, files = recordings
    data, message = hostile_manifests(folder, files[0][0])[case]
    manifest = folder / f"{case}.csv"
    manifest.write_bytes(data)
    with pytest.raises(RecordingError) as caught:
        read_manifest(manifest)
    text = str(caught.value)
    assert text.startswith(f"{manifest} line ") and message in text, text
    assert len(text.splitlines()) == 1 and len(text) < 300


def test_a_recording_under_two_names_is_one_recording(recordings):
    folder, files = recordings
    alias = folder / "alias.edf"
    alias.unlink(missing_ok=True)
    alias.symlink_to(folder / files[0][0])
    twice = write_manifest(folder, [*whole(files), f"alias.edf,{files[0][1]},s9"], "twice.csv")
    with pytest.raises(RecordingError, match=r"lines 2 and 10 list the same recording"):
        read_manifest(twice)

    # Events of one recording under two names: always on one side of the split.
    events = ["path,start_s,end_s,label"]
    events += [f"{p},0,20,{label}" for p, label, _ in files[1:]]
    events += [f"{files[0][0]},0,10,alpha", "alias.edf,10,20,alpha"]
    rows = read_manifest(write_manifest(folder, events, "aliased_events.csv"))
    for seed in range(8):
        train, held = split_rows(rows, val_fraction=0.5, seed=seed)
        sides = {
            side
            for side, part in (("train", train), ("held", held))
            for r in part
            if r.path.resolve() == (folder / files[0][0]).resolve()
        }
        assert len(sides) == 1, (seed, sides)


def test_nan_samples_are_found_before_training_and_named(recordings, tmp_path):
    mne = pytest.importorskip("mne")

    folder, files = recordings
    data = np.random.default_rng(0).normal(0, 2e-5, (19, 200 * 30))
    cz = list(STANDARD_CHANNELS).index("Cz")
    data[cz, 2500] = np.nan  # 12.5 s
    info = mne.create_info(list(STANDARD_CHANNELS), 200.0, "eeg")
    mne.io.RawArray(data, info, verbose="error").save(tmp_path / "nan_raw.fif", verbose="error")
    lines = ["path,label", *(f"{folder / p},{label}" for p, label, _ in files), "nan_raw.fif,beta"]
    rows = read_manifest(write_manifest(tmp_path, lines))
    with pytest.raises(RecordingError) as caught:
        plan_windows(rows, label_mapping(rows))
    assert str(caught.value) == (
        "manifest row 10 (nan_raw.fif): channel Cz holds a NaN or infinite sample at 12.500 s; "
        "fine-tuning needs finite samples (interpolate or crop the recording)"
    )


def test_a_recording_shorter_than_a_window_is_advised_in_the_runs_own_terms(recordings):
    folder, files = recordings
    rows = read_manifest(write_manifest(folder, whole(files)))
    with pytest.raises(RecordingError) as caught:
        plan_windows(rows, label_mapping(rows), window=30)
    assert "shorter than one window=30 s; use a shorter window" in str(caught.value)
    assert "pad_tail" not in str(caught.value)


def test_more_classes_than_a_classifier_holds_are_refused(recordings):
    folder, files = recordings
    rows = read_manifest(write_manifest(folder, whole(files)))
    many = [rows[0].__class__(i + 2, rows[0].path, f"c{i}") for i in range(MAX_CLASSES + 1)]
    with pytest.raises(RecordingError, match=f"at most {MAX_CLASSES} \\(MAX_CLASSES\\)"):
        label_mapping(many)
