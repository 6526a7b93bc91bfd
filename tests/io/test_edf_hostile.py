"""Hostile and unusual EDF/BDF files: a correct result or one RecordingError, within bounds.

Each reported failure has its regression test; the EDFbrowser generator files (mixed rates,
0.5, 1 and 2 s records) are checked against edfio and ``scipy.signal.resample_poly`` per
channel; a seeded hypothesis fuzz test mutates the header fields and the length of a small
EDF and BDF.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from fractions import Fraction
from pathlib import Path

import edfio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from eegdino_tf import cli
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import edf, open_recording
from eegdino_tf.io.edf import (
    HEADER_FIELDS,
    MAX_ABS_MICROVOLTS,
    MAX_SAMPLING_RATE,
    SIGNAL_FIELDS,
    read_header,
)
from eegdino_tf.io.windows import MIN_SAMPLING_RATE
from tests.helpers import TINY, nrmse
from tests.helpers.hostile import outcome

GENERATOR = TINY / "edfbrowser"
EEG = ["C3", "Cz", "C4"]
RNG = np.random.default_rng(15)


def record_file(bdf: bool = False, *, ecg_rate: int = 128, seconds: int = 4) -> bytes:
    """A small EDF (or BDF): ECG at ``ecg_rate`` before three EEG channels at 256 Hz, an
    EOG at 512 Hz between them, and EDF+ annotations; 1 s records."""
    kind = edfio.BdfSignal if bdf else edfio.EdfSignal
    t = np.arange(256 * seconds) / 256
    eeg = [
        kind(40 * np.sin(2 * np.pi * (3 + 2 * i) * t) + RNG.normal(0, 5, t.size), 256,
             label=label, physical_dimension="uV", physical_range=(-500, 500))
        for i, label in enumerate(EEG)
    ]  # fmt: skip
    ecg = kind(RNG.uniform(-2, 2, ecg_rate * seconds), ecg_rate, label="ECG",
               physical_dimension="mV", physical_range=(-5, 5))  # fmt: skip
    eog = kind(RNG.uniform(-90, 90, 512 * seconds), 512, label="EOG", physical_dimension="uV")
    notes = [edfio.EdfAnnotation(1.0, None, "eyes closed")]
    buffer = io.BytesIO()
    signals = [ecg, eeg[0], eog, *eeg[1:]]
    (edfio.Bdf if bdf else edfio.Edf)(signals, annotations=notes, data_record_duration=1).write(
        buffer
    )
    return buffer.getvalue()


def edfio_uv(path: Path, labels: list[str], bdf: bool) -> np.ndarray:
    """The independent reading: edfio's physical values of ``labels`` (already microvolts)."""
    rec = edfio.read_bdf(path) if bdf else edfio.read_edf(path)
    return np.stack([rec.get_signal(label).data for label in labels])


def with_field(raw: bytes, field: str, value: str, signal: int | None = None) -> bytes:
    """``raw`` with one header field (of ``signal``, 0-based, for a signal field) set."""
    at = 0
    num_signals = 1 if signal is None else int(raw[252:256])
    for name, width in HEADER_FIELDS if signal is None else SIGNAL_FIELDS:
        if name == field:
            at += 0 if signal is None else 256 + signal * width
            return raw[:at] + value.ljust(width)[:width].encode("latin-1") + raw[at + width :]
        at += width * num_signals
    raise KeyError(field)


def write(tmp_path: Path, raw: bytes, name: str = "x.edf") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def all_windows(path: Path, channels=EEG, **kwargs) -> np.ndarray:
    """Every window of the file (``[W, C, T]``), read as encoding would."""
    rec = open_recording(path, channels=channels)
    return np.stack([x for _, x in rec.windows(**kwargs)])


# ---------------------------------------------------------------------------------------------
# Data records laid out by every signal's own samples per record
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bdf", [False, True])
@pytest.mark.parametrize("ecg_rate", [128, 256, 64])
def test_unpicked_channel_at_another_rate_does_not_misalign(tmp_path, bdf, ecg_rate):
    path = write(tmp_path, record_file(bdf, ecg_rate=ecg_rate), "x.bdf" if bdf else "x.edf")
    rec = open_recording(path, channels=EEG)
    expected = edfio_uv(path, EEG, bdf)
    np.testing.assert_array_equal(rec.read(0, rec.n_samples), expected)
    np.testing.assert_array_equal(rec.read(300, 700), expected[:, 300:700])
    ecg = open_recording(path, channels=["ECG"]).read(0, 4 * ecg_rate)
    np.testing.assert_array_equal(ecg, edfio_uv(path, ["ECG"], bdf) * 1000)


@pytest.mark.parametrize("read_bytes", [1000, 6000, edf.READ_BYTES])
def test_reads_by_record_span_or_signal_by_signal_agree(tmp_path, monkeypatch, read_bytes):
    """Records larger than READ_BYTES are read signal by signal; smaller ones in spans."""
    monkeypatch.setattr(edf, "READ_BYTES", read_bytes)
    path = write(tmp_path, record_file(bdf=True), "x.bdf")
    rec = open_recording(path, channels=["C4", "C3"])
    expected = edfio_uv(path, ["C4", "C3"], True)
    for start, stop in ((0, rec.n_samples), (100, 900), (255, 257), (1000, 1024), (7, 7)):
        np.testing.assert_array_equal(rec.read(start, stop), expected[:, start:stop])


def test_one_huge_record_is_not_read_whole(tmp_path, monkeypatch):
    """A writer that puts the whole recording in one data record: reading 1 s reads 1 s."""
    data = RNG.normal(0, 30, (3, 256 * 60))
    signals = [
        edfio.EdfSignal(row, 256, label=label, physical_dimension="uV", physical_range=(-200, 200))
        for row, label in zip(data, EEG, strict=True)
    ]
    path = tmp_path / "one_record.edf"
    edfio.Edf(signals, data_record_duration=60).write(path)
    monkeypatch.setattr(edf, "READ_BYTES", 4096)  # the record is 92160 bytes
    rec = open_recording(path, channels=EEG)
    second = outcome(lambda: rec.read(256 * 30, 256 * 31), max_bytes=48 * 2**10)
    np.testing.assert_array_equal(second, edfio_uv(path, EEG, False)[:, 256 * 30 : 256 * 31])


# ---------------------------------------------------------------------------------------------
# File size against the header
# ---------------------------------------------------------------------------------------------


def test_bdf_data_behind_an_edf_header_is_named(tmp_path):
    """A BDF whose magic bytes say EDF: 24-bit data where 16-bit is declared."""
    bdf = record_file(bdf=True)
    path = write(tmp_path, b"0       " + bdf[8:])
    with pytest.raises(RecordingError) as err:
        open_recording(path, channels=EEG)
    message = str(err.value)
    assert "\n" not in message and f"file is {len(bdf)} bytes" in message
    assert "24-bit samples: BDF data in a file marked EDF?" in message

    edf = record_file()
    path = write(tmp_path, b"\xffBIOSEMI" + edf[8:], "e.bdf")
    with pytest.raises(RecordingError, match="16-bit samples: EDF data in a file marked BDF"):
        open_recording(path, channels=EEG)


def test_file_longer_or_shorter_than_its_header_is_an_error(tmp_path):
    raw = record_file()
    header_bytes = int(raw[184:192])
    record_bytes = (len(raw) - header_bytes) // 4
    longer = write(
        tmp_path, raw + raw[header_bytes : header_bytes + (len(raw) - header_bytes) // 2]
    )
    with pytest.raises(RecordingError, match=rf"declares 4 data records of {record_bytes} bytes "):
        open_recording(longer, channels=EEG)
    shorter = write(tmp_path, raw[:-100], "short.edf")
    with pytest.raises(RecordingError, match="cut short after 3 complete data records"):
        open_recording(shorter, channels=EEG)


def test_unknown_record_count_reads_the_complete_records(tmp_path):
    """EDF+ ``num_records`` -1: the count comes from the size; a partial record is dropped."""
    original = record_file()
    raw = with_field(original, "num_records", "-1")
    expected = edfio_uv(write(tmp_path, original, "ref.edf"), EEG, False)
    rec = open_recording(write(tmp_path, raw), channels=EEG)
    assert rec.n_samples == 4 * 256 and "using the 4 complete records" in rec.steps[1]
    partial = write(tmp_path, raw[:-100], "partial.edf")
    with pytest.warns(UserWarning, match="partial data record"):
        rec = open_recording(partial, channels=EEG)
    assert rec.n_samples == 3 * 256
    np.testing.assert_array_equal(rec.read(0, rec.n_samples), expected[:, : 3 * 256])
    with pytest.raises(RecordingError, match="holds no complete data record"):
        with pytest.warns(UserWarning, match="the last 10 bytes are a partial data record"):
            open_recording(write(tmp_path, raw[: int(raw[184:192]) + 10], "none.edf"))


# ---------------------------------------------------------------------------------------------
# Header fields: each validated, one line naming it
# ---------------------------------------------------------------------------------------------

SPR_C3 = {"field": "samples_per_record", "signal": 1}  # C3, the second signal


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({**SPR_C3, "value": "-256"}, r"signal 2 'C3': samples_per_record is -256 \(negative"),
        ({**SPR_C3, "value": "0"}, "samples_per_record is 0 \\(no samples per record"),
        ({**SPR_C3, "value": "2.5"}, "samples_per_record is '2.5'; expected a whole number"),
        ({"field": "record_duration", "value": "nan"}, "record_duration is 'nan'; expected a"),
        ({"field": "record_duration", "value": "inf"}, "record_duration is 'inf'"),
        ({"field": "record_duration", "value": "1E-300"}, "record_duration of 1e-300 s is"),
        ({"field": "record_duration", "value": "0"}, r"record_duration is 0; expected > 0"),
        ({"field": "record_duration", "value": "-1"}, "record_duration is -1"),
        ({"field": "num_records", "value": "-5"}, "num_records is -5; expected >= 1, or -1"),
        ({"field": "num_records", "value": "0"}, "num_records is 0"),
        ({"field": "version", "value": "1"}, "it starts with b'1       ', not an EDF"),
        (
            {"field": "digital_min", "signal": 1, "value": "-40000"},
            "'C3': digital_min is -40000; expected -32768..32767 for 16-bit EDF",
        ),
        (
            {"field": "physical_max", "signal": 1, "value": "1e999"},
            "'C3': physical_max is '1e999'; expected a finite decimal number",
        ),
        (
            {"field": "physical_min", "signal": 1, "value": "-1e30"},
            "'C3' of .*: physical_min is -1e\\+30 uV; expected at most "
            + re.escape(f"{MAX_ABS_MICROVOLTS:g} uV"),
        ),
        (
            {"field": "physical_max", "signal": 1, "value": "-500"},
            r"'C3' of .* degenerate calibration \(physical_min == physical_max == -500\)",
        ),
        (
            {"field": "digital_max", "signal": 1, "value": "-32768"},
            r"'C3' of .* degenerate calibration \(digital_min == digital_max",
        ),
    ],
)
def test_header_fields_are_validated(tmp_path, change, message):
    raw = record_file()
    raw = with_field(raw, change["field"], change["value"], change.get("signal"))
    result = outcome(lambda: all_windows(write(tmp_path, raw), window=1, pad_tail=True))
    assert isinstance(result, RecordingError), result.shape
    assert re.search(message, str(result)) and "\n" not in str(result), str(result)


def test_physical_range_too_wide_for_float32_is_refused_not_nan(tmp_path):
    """+-1e30 once gave an all-NaN output; the limit itself stays finite through the model."""
    raw = record_file()
    huge = with_field(with_field(raw, "physical_min", "-1e30", 1), "physical_max", "1e30", 1)
    with pytest.raises(RecordingError, match=r"'C3' .*physical_min is -1e\+30 uV"):
        open_recording(write(tmp_path, huge), channels=EEG)
    limit = f"{MAX_ABS_MICROVOLTS:.0e}"
    wide = with_field(with_field(raw, "physical_min", f"-{limit}", 1), "physical_max", limit, 1)
    windows = all_windows(write(tmp_path, wide, "wide.edf"), window=1)
    assert windows.dtype == np.float32 and np.isfinite(windows).all()
    assert np.abs(windows).max() <= MAX_ABS_MICROVOLTS
    # Not picked: its calibration is never used, so it does not stop the other channels.
    assert np.isfinite(all_windows(write(tmp_path, huge), channels=["Cz", "C4"], window=1)).all()


def test_cli_refuses_a_huge_physical_range_in_one_line(tmp_path, capsys):
    """+-1e30 once gave exit 0 and an all-NaN .npz: now exit 2, one line, no output."""
    raw = record_file()
    huge = with_field(with_field(raw, "physical_min", "-1e30", 1), "physical_max", "1e30", 1)
    out = tmp_path / "emb.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(write(tmp_path, huge)), "--weights", weights, "-o", str(out)]
    assert cli.main([*argv, "--norm-groups", "4", "--channels", "C3,Cz,C4"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("eegdino-tf encode: error: channel 'C3' of ") and "\n" not in error
    assert "physical_min is -1e+30 uV" in error and not out.exists()


def high_rate_file(record_duration: str) -> bytes:
    """The reported file: 3000 samples a record, 60 records (365 KB), ``record_duration``."""
    buffer = io.BytesIO()
    cz = edfio.EdfSignal(
        RNG.normal(0, 20, 3000 * 60),
        3000,
        label="Cz",
        physical_range=(-200, 200),
        physical_dimension="uV",
    )
    edfio.Edf([cz], data_record_duration=1).write(buffer)
    return with_field(buffer.getvalue(), "record_duration", record_duration)


def test_tiny_record_duration_with_pad_tail_is_bounded(tmp_path):
    """1e-6 s records of 3000 samples (3 GHz) once took 3-4.7 GB; MAX_SAMPLING_RATE refuses
    them, and a file at the limit (0.03 s records) resamples within bounded memory."""
    path = write(tmp_path, high_rate_file("1e-6"))
    result = outcome(lambda: all_windows(path, ["Cz"], pad_tail=True), max_bytes=16 * 2**20)
    assert isinstance(result, RecordingError) and "MAX_SAMPLING_RATE" in str(result)
    assert "record_duration of 1e-06 s is 3e+09 Hz" in str(result)

    at_limit = write(tmp_path, high_rate_file(f"{3000 / MAX_SAMPLING_RATE:g}"), "limit.edf")
    windows = outcome(lambda: all_windows(at_limit, ["Cz"], pad_tail=True), max_bytes=32 * 2**20)
    assert windows.shape == (1, 1, 2000)  # 1.8 s, zero-padded to one 10 s window
    data = edfio_uv(at_limit, ["Cz"], False)[0]
    np.testing.assert_allclose(windows[0, 0, :360], resample_poly(data, 1, 500), atol=1e-4)
    assert not windows[0, 0, 360:].any()


def test_rates_beyond_the_resampling_limits_name_the_channels(tmp_path):
    slow = write(tmp_path, with_field(record_file(), "record_duration", "30"))
    with pytest.raises(RecordingError) as err:
        open_recording(slow, channels=EEG)
    assert "channel(s) 'C3', 'Cz', 'C4' of " in str(err.value)
    assert f"8.53333 Hz is below {MIN_SAMPLING_RATE:g} Hz (MIN_SAMPLING_RATE)" in str(err.value)
    with pytest.raises(RecordingError, match="up 200000 / down 99991 .*MAX_RESAMPLE_FACTOR"):
        open_recording(np.zeros((1, 400)), sfreq=99.991, ch_names=["Cz"], channels=["Cz"])


# ---------------------------------------------------------------------------------------------
# Mixed rates: EDFbrowser's generator files, and one whose length at 200 Hz is fractional
# ---------------------------------------------------------------------------------------------


def independent_200hz(path: Path, bdf: bool) -> tuple[list[str], np.ndarray]:
    """Each ordinary signal read by edfio and resampled by itself to 200 Hz with
    ``resample_poly``, its factors from the header's exact decimal fields."""
    header = read_header(path, bdf)
    duration = Fraction(header.fields["record_duration"])
    rec = edfio.read_bdf(path) if bdf else edfio.read_edf(path)
    labels, rows = [], []
    for signal in rec.signals:
        spr = int(header.signals["samples_per_record"][header.signals["label"].index(signal.label)])
        ratio = Fraction(200) * duration / spr
        labels.append(signal.label)
        rows.append(resample_poly(signal.data, ratio.numerator, ratio.denominator))
    length = min(len(row) for row in rows)
    return labels, np.stack([row[:length] for row in rows])


@pytest.mark.parametrize(
    ("name", "rates"),
    [
        ("generator_0_5s.bdf", (2000, 1600, 1000, 1950, 1998)),
        ("generator_1s.bdf", (1000, 800, 500, 975, 999)),
        ("generator_2s.bdf", (500, 400, 250, 487.5, 499.5)),
    ],
)
def test_edfbrowser_mixed_rates_equal_an_independent_reader(name, rates):
    path = GENERATOR / name
    labels, expected = independent_200hz(path, bdf=True)
    rec = open_recording(path, channels=labels)
    assert sorted(stream.sfreq for stream in rec.streams) == sorted(rates)
    assert expected.shape == (5, 800) and rec.n_resampled == 800  # 4 s at 200 Hz
    for chunk_seconds in (60, 0.37):  # one block, and many with edges between the records
        ours = np.concatenate(list(rec.resampled(chunk_seconds)), axis=1)
        error = np.abs(ours - expected).max()
        assert error <= 1e-9 * np.abs(expected).max(), error
        assert nrmse(ours, expected) <= 1e-12
    windows = np.stack([x for _, x in rec.windows(window=2)])
    assert windows.shape == (2, 5, 400)
    by_window = expected.reshape(5, 2, 400).transpose(1, 0, 2)
    np.testing.assert_allclose(windows, by_window, rtol=1e-6, atol=1e-4)
    assert "from its own rate" in rec.steps[-1] and f"pink noise {rates[3]:g} Hz" in rec.steps[-1]


def test_mixed_rate_edf_with_a_fractional_length_at_200_hz(tmp_path):
    """250 and 256 samples a 0.999 s record: 3 records are 599.4 samples at 200 Hz; every
    channel gets resample_poly's ceil (600), the last sample lying inside the recording."""
    a = edfio.EdfSignal(
        RNG.normal(0, 30, 750), 250, label="C3", physical_range=(-200, 200), physical_dimension="uV"
    )
    b = edfio.EdfSignal(
        RNG.normal(0, 30, 768), 256, label="Cz", physical_range=(-200, 200), physical_dimension="uV"
    )
    buffer = io.BytesIO()
    edfio.Edf([a, b], data_record_duration=1).write(buffer)
    raw = with_field(buffer.getvalue(), "record_duration", "0.999")
    path = write(tmp_path, raw)
    labels, expected = independent_200hz(path, bdf=False)
    rec = open_recording(path, channels=labels)
    assert [(s.up, s.down) for s in rec.streams] == [(999, 1250), (999, 1280)]
    assert rec.n_resampled == expected.shape[1] == 600
    ours = np.concatenate(list(rec.resampled(0.5)), axis=1)
    assert np.abs(ours - expected).max() <= 1e-9 * np.abs(expected).max()


# ---------------------------------------------------------------------------------------------
# Fuzz: mutated header fields, truncated and extended copies; only the two outcomes
# ---------------------------------------------------------------------------------------------

FIELD_VALUES = st.sampled_from(
    ["-1", "0", "1", "2", "-256", "3000", "99999999", "nan", "inf", "-inf", "1e-300", "1E-6",
     "1e308", "0.5", "0.001", "-0", "+1", "1_0", "abc", "", " 1 2", "1e30", "-1e30", "32767",
     "-32768", "8388607", "-8388608", "EDF+D", "EDF+C", "BDF Annotations", "EDF Annotations"]
)  # fmt: skip
NUMERIC_FIELDS = [name for name, _ in SIGNAL_FIELDS if name != "label"]


@st.composite
def mutations(draw) -> list[tuple]:
    """One to three changes: a header field, a length change, or a random header byte."""
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "signal", "length", "byte"]))
        value = draw(FIELD_VALUES | st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                            max_size=8))  # fmt: skip
        if kind == "field":
            field = draw(st.sampled_from([name for name, _ in HEADER_FIELDS][5:]))
            changes.append(("field", field, value))
        elif kind == "signal":
            signal = draw(st.integers(0, 5))
            changes.append(("signal", draw(st.sampled_from(NUMERIC_FIELDS)), value, signal))
        elif kind == "length":
            changes.append(("length", draw(st.floats(0, 2.5))))
        else:
            changes.append(("byte", draw(st.integers(0, 255 * 7)), draw(st.integers(0, 255))))
    return changes


def mutate(raw: bytes, changes: list[tuple]) -> bytes:
    """``raw`` with ``changes`` made: signal fields first (while the signal count is the
    original's), then the fixed fields, the bytes and the length."""
    order = ["signal", "field", "byte", "length"]
    for change in sorted(changes, key=lambda change: order.index(change[0])):
        if change[0] == "field":
            raw = with_field(raw, change[1], change[2])
        elif change[0] == "signal":
            raw = with_field(raw, change[1], change[2], change[3])
        elif change[0] == "length":
            size = int(len(raw) * change[1])
            raw = (raw * 3)[:size]
        elif change[1] < len(raw):
            raw = raw[: change[1]] + bytes([change[2]]) + raw[change[1] + 1 :]
    return raw


@functools.cache
def original(bdf: bool) -> bytes:
    """The file the fuzz test mutates: 3 s of :func:`record_file`."""
    return record_file(bdf, seconds=3)


@pytest.mark.parametrize("bdf", [False, True])
@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=mutations())
def test_fuzzed_files_give_windows_or_one_recording_error(tmp_path, bdf, changes):
    path = write(tmp_path, mutate(original(bdf), changes), "f.bdf" if bdf else "f.edf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a partial final record (num_records -1)
        result = outcome(
            lambda: all_windows(path, ["C3", "ECG"], window=1, pad_tail=True),
            max_bytes=32 * 2**20,
            max_seconds=5,
        )
    if isinstance(result, RecordingError):
        assert "\n" not in str(result) and str(result)
    else:
        assert result.dtype == np.float32 and result.shape[1:] == (2, 200)
        assert np.isfinite(result).all()
