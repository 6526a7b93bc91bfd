"""Recordings in, embeddings out: EDF/BDF/MNE reading, channels, units, resampling, windows."""

from __future__ import annotations

import io
import re
import sys
import tracemalloc
import warnings
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest
from scipy.signal import resample_poly

import eegdino_tf
from eegdino_tf import cli
from eegdino_tf.errors import MissingExtraError, RecordingError
from eegdino_tf.io import (
    STANDARD_CHANNELS,
    canonical_channel_name,
    encode_recording,
    open_recording,
)
from eegdino_tf.io.edf import FIXED_BYTES, SIGNAL_BYTES, SIGNAL_FIELDS, read_header
from tests.helpers import TINY, nrmse
from tests.helpers.recordings import (
    NEW_NAMES,
    RNG,
    TUH_LABELS,
    eeg_like,
    read_back_uv,
    windows_of,
    write_edf,
)


@pytest.fixture(scope="module")
def encoder():
    return eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)


@pytest.fixture(scope="module")
def classifier():
    return eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)


# ---------------------------------------------------------------------------------------------
# End to end: EDF -> CLI -> .npz equals the model on the hand-built microvolt array
# ---------------------------------------------------------------------------------------------


def test_cli_encodes_edf_like_the_model_on_the_microvolt_array(tmp_path, encoder, capsys):
    path = tmp_path / "tuh.edf"
    data_mv = eeg_like(19, 200 * 35, 200.0) / 1000  # 35 s in millivolts
    write_edf(path, data_mv, TUH_LABELS, 200.0, unit="mV", bound=0.5, extra=True)
    expected_uv = read_back_uv(path, TUH_LABELS, 1000.0)
    step = 1000.0 / 65535  # one 16-bit step of the [-0.5, 0.5] mV range, in uV
    assert np.abs(expected_uv - data_mv * 1000).max() <= step  # the file holds our signal

    out = tmp_path / "emb.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(path), "--weights", weights, "--output", str(out), "--norm-groups", "4"]
    assert cli.main([*argv, "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert (
        "from 'mV' to uV (x1000)" in printed
        and "skipped non-EEG signal(s): EOG LOC, ECG" in printed
    )
    assert "already at 200 Hz" in printed and "cut 3 window(s) of 10 s" in printed

    result = np.load(out)
    windows = windows_of(expected_uv)
    tokens = encoder.predict(windows, verbose=0)
    error = nrmse(result["global_token"], tokens[:, 0])
    with capsys.disabled():
        print(f"global_token NRMSE, CLI on the EDF vs the model on the array: {error:.2e}")
    assert error <= 2e-6
    assert nrmse(result["mean_token"], tokens[:, 1:].mean(axis=1)) <= 2e-6
    np.testing.assert_array_equal(result["window_start_s"], [0.0, 10.0, 20.0])
    assert list(result["channels"]) == list(STANDARD_CHANNELS)
    assert list(result["source_channels"]) == TUH_LABELS
    assert float(result["sfreq"]) == 200.0 and "tokens" not in result

    # The output exists now: refused without --force, rewritten with it (and --tokens).
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*argv, "--force", "--tokens", "--pad-tail"]) == 0
    result = np.load(out)
    assert result["tokens"].shape == (4, 1 + 19 * 10, 64)
    np.testing.assert_allclose(result["tokens"][:3], tokens, rtol=0, atol=1e-5)


def test_classifier_gives_logits_and_probabilities(tmp_path, classifier):
    path = tmp_path / "c.edf"
    write_edf(path, eeg_like(19, 200 * 20, 200.0), TUH_LABELS, 200.0)
    result = encode_recording(classifier, path, progress=False)
    logits = classifier.predict(windows_of(read_back_uv(path, TUH_LABELS, 1.0)), verbose=0)
    assert nrmse(result["logits"], logits) <= 2e-6
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(result["probabilities"].argmax(1), logits.argmax(1))
    with pytest.raises(RecordingError, match="tokens=True needs an encoder"):
        encode_recording(classifier, path, tokens=True, progress=False)


# ---------------------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("EEG FP1-REF", "FP1"),
        ("Fp1", "FP1"),
        ("FP1-LE", "FP1"),
        ("EEG Fp1", "FP1"),
        ("Fp1-A1", "FP1"),
        ("fp1.", "FP1"),
        ("EEG T7-REF", "T3"),
        ("T8", "T4"),
        ("P7-A1", "T5"),
        ("EEG P8-LE", "T6"),
        ("FP1-F7", "FP1-F7"),  # bipolar: keeps both electrodes
    ],
)
def test_canonical_channel_names(label, key):
    assert canonical_channel_name(label) == key


def test_new_names_bdf_and_order(tmp_path):
    """A BDF in new 10-20 names (T7, P8, ...) serves the default TUH-ordered list."""
    file_order = [f"{NEW_NAMES.get(name, name)}-A1" for name in reversed(STANDARD_CHANNELS)]
    data = eeg_like(19, 256 * 12, 256.0)
    path = tmp_path / "new.bdf"
    write_edf(path, data, file_order, 256.0, bdf=True)
    rec = open_recording(path)
    assert rec.channels == STANDARD_CHANNELS
    assert rec.source_channels == tuple(reversed(file_order))
    expected = read_back_uv(path, list(reversed(file_order)), 1.0, bdf=True)
    np.testing.assert_array_equal(rec.read(0, rec.n_samples), expected)
    np.testing.assert_array_equal(rec.read(300, 1000), expected[:, 300:1000])
    assert np.abs(expected - data[::-1]).max() <= 1000 / (2**24 - 1)  # 24-bit steps

    picked = open_recording(path, channels="o2, T7 ,fp1")
    assert picked.channels == ("o2", "T7", "fp1")
    assert picked.source_channels == ("O2-A1", "T7-A1", "Fp1-A1")


def test_unknown_channel_lists_what_the_file_has(tmp_path):
    path = tmp_path / "x.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0, extra=True)
    with pytest.raises(RecordingError) as err:
        open_recording(path, channels=["Fp1", "Xy9", "ECG1"])
    message = str(err.value)
    assert "'Xy9', 'ECG1'" in message and "not found" in message
    assert "'EEG FP1-REF'" in message and "'EEG O2-REF'" in message
    assert "non-EEG signals ['EOG LOC', 'ECG'] (skipped)" in message
    # A non-EEG signal is never matched by a spelling variant, only by its exact label.
    with pytest.raises(RecordingError, match="not found"):
        open_recording(path, channels=["EOG"])
    assert open_recording(path, channels=["ecg"]).source_channels == ("ECG",)


def test_default_channels_need_all_19(tmp_path):
    path = tmp_path / "four.edf"
    write_edf(path, eeg_like(4, 2000, 200.0), ["Fp1", "Fp2", "C3", "C4"], 200.0)
    with pytest.raises(RecordingError, match=r"lacks standard 10-20 channel\(s\) \['F7'") as err:
        open_recording(path)
    assert "pass channels=[...]" in str(err.value) and "'C4'" in str(err.value)
    assert open_recording(path, channels=["C4", "Fp1"]).source_channels == ("C4", "Fp1")


def test_too_many_and_duplicate_channels(tmp_path):
    labels = [*TUH_LABELS, "EEG FZ2-REF"]
    path = tmp_path / "twenty.edf"
    write_edf(path, eeg_like(20, 2000, 200.0), labels, 200.0)
    with pytest.raises(RecordingError, match="20 channels requested; the model takes at most 19"):
        open_recording(path, channels=[label.split()[1] for label in labels])
    with pytest.raises(RecordingError, match="requested more than once"):
        open_recording(path, channels=["T3", "T7"])


def test_mixed_sampling_rates_among_picked_channels(tmp_path):
    """Picked channels at different rates are each resampled from their own rate to 200 Hz."""
    path = tmp_path / "mixed.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0, extra=True)
    rec = open_recording(path, channels=["Fp1", "EOG LOC"])
    assert [(s.sfreq, s.up, s.down) for s in rec.streams] == [(200.0, 1, 1), (400.0, 1, 2)]
    assert "EOG LOC 400 Hz (up 1, down 2)" in rec.steps[-1]
    fp1 = read_back_uv(path, ["EEG FP1-REF"], 1.0)[0]
    eog = resample_poly(read_back_uv(path, ["EOG LOC"], 1.0)[0], 1, 2)
    np.testing.assert_allclose(next(rec.resampled()), np.stack([fp1, eog]), rtol=0, atol=1e-9)
    with pytest.raises(RecordingError, match=r"different native rates \(200 Hz, 400 Hz\)"):
        rec.read(0, 10)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "factor"), [("V", 1e6), ("mV", 1e3), ("uV", 1.0), (b"\xb5V", 1.0), ("nV", 1e-3)]
)
def test_units_become_microvolts(tmp_path, unit, factor):
    path = tmp_path / "u.edf"
    if isinstance(unit, bytes):  # edfio writes ASCII only; other writers store latin-1 "µV"
        write_edf(path, eeg_like(2, 400, 200.0), ["C3", "C4"], 200.0, unit="uV")
        raw = path.read_bytes()
        path.write_bytes(raw[:768].replace(b"uV      ", unit.ljust(8)) + raw[768:])
    else:
        write_edf(path, eeg_like(2, 400, 200.0), ["C3", "C4"], 200.0, unit=unit)
    rec = open_recording(path, channels=["C3", "C4"])
    expected = read_back_uv(path, ["C3", "C4"], factor)
    np.testing.assert_allclose(rec.read(0, 400), expected, rtol=1e-12)


def test_unsupported_unit_is_an_error_unless_overridden(tmp_path):
    path = tmp_path / "deg.edf"
    write_edf(path, eeg_like(2, 400, 200.0), ["C3", "C4"], 200.0, unit="degC")
    with pytest.raises(RecordingError, match=r"'C3' has physical unit 'degC'.*unit='uV'"):
        open_recording(path, channels=["C3", "C4"])
    rec = open_recording(path, channels=["C3", "C4"], unit="mV")
    np.testing.assert_allclose(rec.read(0, 400), read_back_uv(path, ["C3", "C4"], 1e3))


def test_cli_encode_through_litert_matches_keras(tmp_path, encoder):
    path = tmp_path / "rec.edf"
    write_edf(path, eeg_like(19, 200 * 20, 200.0), TUH_LABELS, 200.0, unit="uV")
    weights = str(TINY / "tiny_encoder.safetensors")
    outputs = {}
    for runtime in ("keras", "litert"):
        out = tmp_path / f"{runtime}.npz"
        argv = ["encode", str(path), "--weights", weights, "--output", str(out)]
        assert cli.main([*argv, "--norm-groups", "4", "--runtime", runtime]) == 0
        outputs[runtime] = np.load(out)
    for key in ("global_token", "mean_token"):
        assert outputs["litert"][key].shape == (2, 64)
        assert nrmse(outputs["litert"][key], outputs["keras"][key]) <= 2e-6


def test_unknown_unit_argument_names_the_keyword(tmp_path, encoder, capsys):
    """A bad ``unit`` blames the argument (in Python words; the CLI's in flags), not the file."""
    path = tmp_path / "u.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0)
    expected = r"^unit='furlong' is not a unit we know; use one of uV, mV, V"
    for source in (path, tmp_path / "missing.edf", np.zeros((1, 400))):
        with pytest.raises(RecordingError, match=expected):
            open_recording(source, unit="furlong")
    with pytest.raises(RecordingError, match=expected) as err:
        encode_recording(encoder, path, unit="furlong", progress=False)
    assert "EEG FP1-REF" not in str(err.value) and "--" not in str(err.value)
    assert open_recording(path, unit="microvolts").source_channels == tuple(TUH_LABELS)

    out = tmp_path / "o.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(path), "--weights", weights, "-o", str(out), "--norm-groups", "4"]
    assert cli.main([*argv, "--unit", "furlong"]) == 2
    stderr = capsys.readouterr().err
    assert "error: --unit furlong is not a unit we know" in stderr, stderr
    assert "unit=" not in stderr and not out.exists()


def test_library_messages_speak_python_not_flags():
    """Messages name keywords (``pad_tail=True``); only the CLI turns them into ``--flags``."""
    folder = Path(eegdino_tf.__file__).parent / "io"
    for module in sorted(folder.glob("*.py")):
        flags = re.findall(r"--[a-z][a-z-]*", module.read_text(encoding="utf-8"))
        assert not flags, f"{module.name} mentions command-line flags {flags}"


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sfreq", "up_down"), [(256, (25, 32)), (500, (2, 5))])
def test_resampling_length_frequency_and_amplitude(tmp_path, sfreq, up_down):
    seconds, amplitude = 60, 50.0
    t = np.arange(sfreq * seconds) / sfreq
    sine = amplitude * np.sin(2 * np.pi * 10.0 * t)
    path = tmp_path / f"sine{sfreq}.edf"
    write_edf(path, np.stack([sine, sine]), ["Cz", "Pz"], sfreq, bound=100.0)
    rec = open_recording(path, channels=["Cz", "Pz"])
    assert (rec.up, rec.down) == up_down
    assert f"up {up_down[0]}, down {up_down[1]}" in rec.steps[-1]
    resampled = np.concatenate(list(rec.resampled()), axis=1)
    assert resampled.shape == (2, 200 * seconds) == (2, rec.n_resampled)
    assert len(rec.window_starts()) == 6

    middle = resampled[0, 1000:-1000]  # away from the zero-padded edges
    spectrum = np.abs(np.fft.rfft(middle)) / len(middle) * 2
    freqs = np.fft.rfftfreq(len(middle), d=1 / 200)
    assert freqs[spectrum.argmax()] == pytest.approx(10.0, abs=freqs[1])
    peak = np.sqrt(2) * np.sqrt(np.mean(middle**2))
    assert peak == pytest.approx(amplitude, rel=0.01)
    np.testing.assert_allclose(
        middle,
        amplitude * np.sin(2 * np.pi * 10 * (np.arange(1000, 11000) / 200)),
        atol=0.01 * amplitude,
    )


@pytest.mark.parametrize("sfreq", [256.0, 500.0, 1000.0, 128.0, 173.61])
def test_chunked_resampling_equals_whole_signal(sfreq):
    n = int(sfreq * 230) + 7  # not a whole number of chunks or of resampling periods
    data = eeg_like(3, n, sfreq)
    rec = open_recording(
        data, sfreq=sfreq, ch_names=["C3", "Cz", "C4"], channels=["C3", "Cz", "C4"]
    )
    whole = resample_poly(data, rec.up, rec.down, axis=-1)
    chunked = np.concatenate(list(rec.resampled(chunk_seconds=7)), axis=1)
    assert chunked.shape == whole.shape
    assert np.abs(chunked - whole).max() <= 1e-9 * np.abs(whole).max()

    # Windows (overlapping, tail padded) are cut from that same signal.
    for start, x in rec.windows(window=10, stride=4, pad_tail=True, chunk_seconds=3):
        begin = round(start * 200)
        expected = np.zeros((3, 2000), np.float32)
        segment = whole[:, begin : begin + 2000]
        expected[:, : segment.shape[1]] = segment
        np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def test_a_window_too_long_for_memory_is_refused_before_reading(encoder, monkeypatch):
    """A 10 h window over 35 s with pad_tail: 684,001 tokens (13,943 GiB of attention weights);
    the error comes before the recording is read or a window is allocated."""
    rec = open_recording(eeg_like(19, 200 * 35, 200.0), sfreq=200, ch_names=STANDARD_CHANNELS)
    monkeypatch.setattr(type(rec), "windows", lambda *a, **k: pytest.fail("a window was read"))
    message = r"684001 tokens an example: .* of one example alone would take 13,943\.2 GiB"
    with pytest.raises(eegdino_tf.InputError, match=message):
        encode_recording(encoder, rec, window=36000, pad_tail=True, progress=False)


def test_window_plans():
    rec = open_recording(np.zeros((1, 200 * 25)), sfreq=200, ch_names=["Cz"], channels=["Cz"])
    assert rec.window_starts(10).tolist() == [0, 2000]
    assert rec.window_starts(10, pad_tail=True).tolist() == [0, 2000, 4000]
    assert rec.window_starts(10, stride=5).tolist() == [0, 1000, 2000, 3000]
    assert rec.window_starts(10, stride=5, pad_tail=True).tolist() == [0, 1000, 2000, 3000]
    assert rec.window_starts(5, stride=0.5).tolist()[:3] == [0, 100, 200]
    assert "5 s tail dropped" in rec.describe_windows(10)
    assert "zero-padded by 5 s" in rec.describe_windows(10, pad_tail=True)
    for bad in (2.5, 0, -10, float("nan")):
        with pytest.raises(RecordingError, match="window must be a"):
            rec.window_starts(bad)
    with pytest.raises(RecordingError, match="whole number of 200 Hz samples"):
        rec.window_starts(10, stride=0.0025)


def test_short_recording_and_bad_window_errors(tmp_path, encoder, capsys):
    path = tmp_path / "short.edf"
    write_edf(path, eeg_like(19, 200 * 6, 200.0), TUH_LABELS, 200.0)
    with pytest.raises(RecordingError, match=r"6 s long, shorter than one 10 s window"):
        encode_recording(encoder, path, progress=False)
    padded = encode_recording(encoder, path, pad_tail=True, progress=False)
    assert padded["global_token"].shape == (1, 64)
    assert encode_recording(encoder, path, window=3, progress=False)["global_token"].shape == (
        2,
        64,
    )

    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(path), "--weights", weights, "-o", str(tmp_path / "o.npz")]
    assert cli.main([*argv, "--norm-groups", "4", "--window", "2.5"]) == 2
    assert "window must be a whole number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


# ---------------------------------------------------------------------------------------------
# Corrupt files and missing extras
# ---------------------------------------------------------------------------------------------


def test_corrupt_files(tmp_path):
    good = tmp_path / "good.edf"
    write_edf(good, eeg_like(19, 200 * 20, 200.0), TUH_LABELS, 200.0)
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.edf"
    truncated.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(RecordingError, match="truncated or corrupt: its header declares 20 data"):
        open_recording(truncated)

    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(RNG.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(RecordingError, match="not a valid EDF/BDF file"):
        open_recording(garbage)

    bad_header = tmp_path / "bad_header.edf"
    bad_header.write_bytes(raw[:184] + b"garbage!" + raw[192:])
    with pytest.raises(RecordingError, match="corrupt header"):
        open_recording(bad_header)

    header_only = tmp_path / "header_only.edf"
    header_only.write_bytes(raw[:1000])
    with pytest.raises(RecordingError, match="not a valid EDF file"):
        open_recording(header_only)

    discontinuous = tmp_path / "edfd.edf"
    discontinuous.write_bytes(raw[:192] + b"EDF+D".ljust(44) + raw[236:])
    with pytest.raises(RecordingError, match="discontinuous EDF"):
        open_recording(discontinuous)

    with pytest.raises(RecordingError, match="no such file"):
        open_recording(tmp_path / "missing.edf")


def test_edf_header_parses_to_named_fields(tmp_path):
    assert FIXED_BYTES == SIGNAL_BYTES == 256  # the EDF specification's layout
    path = tmp_path / "h.edf"
    c3 = edfio.EdfSignal(np.zeros(400), 200, label="C3", physical_dimension="uV")
    eog = edfio.EdfSignal(np.zeros(800), 400, label="EOG", physical_dimension="mV")
    annotations = [edfio.EdfAnnotation(0.5, None, "eyes closed")]
    edfio.Edf([c3, eog], annotations=annotations).write(path)
    header = read_header(path)
    assert header.header_bytes == 4 * 256 == len(header.raw)
    fields = header.fields
    assert (fields["version"], fields["header_bytes"], fields["reserved"]) == ("0", "1024", "EDF+C")
    assert (fields["num_records"], fields["record_duration"], fields["num_signals"]) == (
        "2",
        "1",
        "3",
    )
    assert header.signals["label"] == ["C3", "EOG", "EDF Annotations"]
    assert header.signals["physical_dimension"] == ["uV", "mV", ""]
    assert header.signals["samples_per_record"][:2] == ["200", "400"]
    assert set(header.signals) == {name for name, _ in SIGNAL_FIELDS}
    assert all(len(values) == 3 for values in header.signals.values())

    bdf = tmp_path / "h.bdf"
    edfio.Bdf([edfio.BdfSignal(np.zeros(400), 200, label="Cz")]).write(bdf)
    header = read_header(bdf, bdf=True)
    assert header.fields["version"] == "\xffBIOSEMI" and header.signals["label"] == ["Cz"]


def test_truncated_and_hostile_headers_are_clear_errors(tmp_path):
    good = tmp_path / "good.edf"
    write_edf(good, eeg_like(3, 400, 200.0), ["C3", "Cz", "C4"], 200.0)
    raw = good.read_bytes()
    spr_at = 256 + 3 * 216  # the first signal's samples per record
    cases = {
        raw[:8]: r"not a valid EDF file: truncated header \(8 of its 256 bytes\)",
        raw[:200]: r"not a valid EDF file: truncated header \(200 of its 256 bytes\)",
        raw[:600]: r"its header declares 3 signals in 1024 bytes \(file size 600\)",
        raw[:252] + b"9999" + raw[256:]: "its header declares 9999 signals in 1024 bytes",
        raw[:236] + b"x".ljust(8) + raw[244:]: "not a valid EDF file: corrupt header",
        raw[:spr_at] + b"-200".ljust(8) + raw[spr_at + 8 :]: "negative samples per record",
    }
    for i, (data, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.edf"
        path.write_bytes(data)
        with pytest.raises(RecordingError, match=message):
            open_recording(path, channels=["C3"])
    with pytest.raises(RecordingError, match="truncated header"):
        read_header(tmp_path / "bad0.edf")


def test_missing_extra_names_it(tmp_path, monkeypatch):
    path = tmp_path / "x.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0)
    monkeypatch.setitem(sys.modules, "edfio", None)  # import edfio now fails
    with pytest.raises(MissingExtraError, match=r'pip install "eegdino-tf\[edf\]"'):
        open_recording(path)


# ---------------------------------------------------------------------------------------------
# MNE
# ---------------------------------------------------------------------------------------------


def test_mne_raw_and_edf_reader_agree(tmp_path):
    path = tmp_path / "m.edf"
    write_edf(path, eeg_like(19, 250 * 30, 250.0), TUH_LABELS, 250.0)  # MNE would upsample EOG
    ours = open_recording(path)
    raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    theirs = open_recording(raw)
    assert theirs.source_channels == ours.source_channels and theirs.sfreq == 250.0
    assert any("from 'V' (MNE's unit)" in step for step in theirs.steps)
    a = np.stack([x for _, x in ours.windows(10)])
    b = np.stack([x for _, x in theirs.windows(10)])
    assert a.shape == b.shape == (3, 19, 2000)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)


def test_mne_raw_array_types_and_fif_via_cli(tmp_path, encoder, capsys):
    names = [NEW_NAMES.get(name, name) for name in STANDARD_CHANNELS]
    data_uv = eeg_like(19, 500 * 21, 500.0)
    info = mne.create_info([*names, "ECG", "HEOG"], 500.0, ["eeg"] * 19 + ["ecg", "eog"])
    extra = RNG.standard_normal((2, data_uv.shape[1])) * 1e-4
    raw = mne.io.RawArray(np.concatenate([data_uv * 1e-6, extra]), info, verbose="error")
    from_raw = encode_recording(encoder, raw, progress=False)
    array = open_recording(data_uv, sfreq=500.0, ch_names=names)
    from_array = encode_recording(encoder, array, progress=False)
    assert nrmse(from_raw["global_token"], from_array["global_token"]) <= 2e-6
    with pytest.raises(RecordingError, match="unit does not apply to an MNE Raw"):
        open_recording(raw, unit="uV")
    with pytest.raises(RecordingError, match="not found"):
        open_recording(raw, channels=["HEOG2"])

    fif = tmp_path / "rec_raw.fif"
    raw.save(fif, verbose="error")
    out = tmp_path / "fif.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(fif), "--weights", weights, "-o", str(out), "--norm-groups", "4"]
    assert cli.main(argv) == 0
    assert "read MNE Raw rec_raw.fif" in capsys.readouterr().out
    assert nrmse(np.load(out)["global_token"], from_array["global_token"]) <= 2e-6


# ---------------------------------------------------------------------------------------------
# Long recordings: memory does not grow with length
# ---------------------------------------------------------------------------------------------


def write_long_edf(path, minutes: int, sfreq: int = 256) -> None:
    """A ``minutes``-long 19-channel EDF: one edfio-written minute, its records repeated."""
    data = eeg_like(19, sfreq * 60, float(sfreq))
    buffer = io.BytesIO()
    write_edf(buffer, data, TUH_LABELS, float(sfreq))
    raw = buffer.getvalue()
    header_bytes = int(raw[184:192])
    header = bytearray(raw[:header_bytes])
    header[236:244] = str(60 * minutes).ljust(8).encode()  # number of 1 s data records
    with open(path, "wb") as file:
        file.write(header)
        for _ in range(minutes):
            file.write(raw[header_bytes:])


def test_long_recording_memory_does_not_grow(tmp_path, encoder):
    batch = 60
    encoder.predict(np.zeros((batch, 19, 2000), np.float32), batch_size=batch, verbose=0)
    peaks = {}
    for minutes in (30, 120):
        path = tmp_path / f"long{minutes}.edf"
        write_long_edf(path, minutes)
        tracemalloc.start()
        try:
            result = encode_recording(encoder, path, batch_size=batch, progress=False)
            peaks[minutes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result["global_token"].shape == (minutes * 6, 64)
        assert np.isfinite(result["global_token"]).all()
    whole_signal = 19 * 256 * 7200 * 8  # the 2 h recording as float64: 280 MB
    print(f"peak traced memory: 30 min {peaks[30] / 1e6:.1f} MB, 2 h {peaks[120] / 1e6:.1f} MB")
    assert peaks[120] < 1.5 * peaks[30]
    assert peaks[120] < whole_signal / 2


# ---------------------------------------------------------------------------------------------
# The old import path
# ---------------------------------------------------------------------------------------------


def test_old_import_path_still_works_and_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from eegdino_tf.recording import encode_recording as old_encode_recording
    assert old_encode_recording is encode_recording
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "eegdino_tf.io" in str(caught[0].message) and caught[0].filename == __file__
