"""The EDF/BDF reader: headers parsed to named fields, corrupt and hostile files refused."""

from __future__ import annotations

import edfio
import numpy as np
import pytest

from eegdino_tf.errors import RecordingError
from eegdino_tf.io import (
    open_recording,
)
from eegdino_tf.io.edf import FIXED_BYTES, SIGNAL_BYTES, SIGNAL_FIELDS, read_header
from tests.helpers.recordings import (
    RNG,
    TUH_LABELS,
    eeg_like,
    write_edf,
)


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
