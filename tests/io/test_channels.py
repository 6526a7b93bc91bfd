"""Channel names (10-20, old and new), picking, and units to microvolts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from eegdino_tf.errors import RecordingError
from eegdino_tf.io import (
    STANDARD_CHANNELS,
    canonical_channel_name,
    open_recording,
)
from tests.helpers.recordings import (
    NEW_NAMES,
    TUH_LABELS,
    eeg_like,
    read_back_uv,
    write_edf,
)


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
