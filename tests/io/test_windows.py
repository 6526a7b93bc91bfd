"""Windows and resampling to 200 Hz: plans, lengths, frequency and amplitude, chunked equals
whole."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from eegdino_tf.errors import RecordingError
from eegdino_tf.io import (
    open_recording,
)
from tests.helpers.recordings import (
    eeg_like,
    write_edf,
)


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
