"""Recordings to embeddings (``io.encode_recording``): the model on the microvolt array, logits
and probabilities, memory flat over long recordings."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

import eegdino_tf
from eegdino_tf import cli
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import (
    STANDARD_CHANNELS,
    encode_recording,
    open_recording,
)
from tests.helpers import TINY, nrmse
from tests.helpers.recordings import (
    TUH_LABELS,
    eeg_like,
    read_back_uv,
    windows_of,
    write_edf,
)


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


def test_a_window_too_long_for_memory_is_refused_before_reading(encoder, monkeypatch):
    """A 10 h window over 35 s with pad_tail: 684,001 tokens (13,943 GiB of attention weights);
    the error comes before the recording is read or a window is allocated."""
    rec = open_recording(eeg_like(19, 200 * 35, 200.0), sfreq=200, ch_names=STANDARD_CHANNELS)
    monkeypatch.setattr(type(rec), "windows", lambda *a, **k: pytest.fail("a window was read"))
    message = r"684001 tokens an example: .* of one example alone would take 13,943\.2 GiB"
    with pytest.raises(eegdino_tf.InputError, match=message):
        encode_recording(encoder, rec, window=36000, pad_tail=True, progress=False)


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
