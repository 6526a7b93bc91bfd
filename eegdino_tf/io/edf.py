"""The EDF/BDF reader: the header by its named fields, data records read on demand.

The header layout is the EDF specification's (BDF is the same with 24-bit samples): a fixed
256-byte part (:data:`HEADER_FIELDS`), then 256 bytes per signal (:data:`SIGNAL_FIELDS`),
stored field by field: all the labels, then all the transducers, and so on. ``edfio`` checks
and decodes the signal fields (units, ranges, sampling rates, EDF+ annotation signals); edfio
loads BDF data (and EDF read from a stream) into memory whole, so the data records are read
here instead, a chunk of records at a time, straight from the file.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from eegdino_tf.errors import RecordingError, require

#: The fixed part of the header: ``(field, width in bytes)`` in file order (256 bytes).
HEADER_FIELDS = (
    ("version", 8),
    ("patient", 80),
    ("recording", 80),
    ("startdate", 8),
    ("starttime", 8),
    ("header_bytes", 8),
    ("reserved", 44),
    ("num_records", 8),
    ("record_duration", 8),
    ("num_signals", 4),
)
#: The fields of each signal, in file order (256 bytes a signal); each field is stored for
#: every signal in turn before the next field starts.
SIGNAL_FIELDS = (
    ("label", 16),
    ("transducer", 80),
    ("physical_dimension", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefiltering", 80),
    ("samples_per_record", 8),
    ("reserved", 32),
)
FIXED_BYTES = sum(width for _, width in HEADER_FIELDS)
SIGNAL_BYTES = sum(width for _, width in SIGNAL_FIELDS)


def parse_fields(
    raw: bytes, fields: Sequence[tuple[str, int]], count: int = 1
) -> dict[str, list[str]]:
    """Split ``raw`` by a field table into ``{field: [count values]}`` of stripped text.

    Each field holds ``count`` consecutive values of its width (1 for the fixed header, one
    per signal for the signal header); text is latin-1. A ValueError if ``raw`` is short.
    """
    need = count * sum(width for _, width in fields)
    if len(raw) < need:
        raise ValueError(f"{len(raw)} of its {need} bytes")
    values, at = {}, 0
    for name, width in fields:
        values[name] = [
            raw[at + i * width : at + (i + 1) * width].decode("latin-1").strip()
            for i in range(count)
        ]
        at += count * width
    return values


@dataclasses.dataclass(frozen=True)
class EdfHeader:
    """An EDF/BDF header by name: ``fields`` (the fixed part, :data:`HEADER_FIELDS`),
    ``signals`` (``{field: [one value per signal]}``, :data:`SIGNAL_FIELDS`) and the bytes."""

    fields: dict[str, str]
    signals: dict[str, list[str]]
    raw: bytes = dataclasses.field(repr=False)

    @property
    def header_bytes(self) -> int:
        """The header's size: ``256 * (1 + number of signals)`` bytes."""
        return len(self.raw)


def read_header(path: str | Path, bdf: bool = False) -> EdfHeader:
    """The header of the EDF (or ``bdf``) file at ``path``, split into its named fields.

    Reads the fixed part, checks that the declared header size fits its signal count and the
    file, then reads the signal fields. A RecordingError for a truncated or corrupt header.
    """
    path = Path(path)
    invalid = f"{path} is not a valid {'BDF' if bdf else 'EDF'} file"
    size = path.stat().st_size
    with path.open("rb") as file:
        fixed = file.read(FIXED_BYTES)
        try:
            fields = {name: value for name, (value,) in parse_fields(fixed, HEADER_FIELDS).items()}
        except ValueError as err:
            raise RecordingError(f"{invalid}: truncated header ({err})") from None
        try:
            header_bytes, num_signals = int(fields["header_bytes"]), int(fields["num_signals"])
            int(fields["num_records"])
        except ValueError:
            raise RecordingError(f"{invalid}: corrupt header") from None
        expected = FIXED_BYTES + SIGNAL_BYTES * num_signals
        if header_bytes != expected or num_signals < 1 or header_bytes > size:
            raise RecordingError(
                f"{invalid}: its header declares {num_signals} signals in {header_bytes} bytes "
                f"(file size {size})"
            )
        raw = fixed + file.read(header_bytes - FIXED_BYTES)
    signals = parse_fields(raw[FIXED_BYTES:], SIGNAL_FIELDS, num_signals)
    return EdfHeader(fields, signals, raw)


@dataclasses.dataclass(frozen=True)
class EdfFile:
    """An EDF/BDF file opened for reading: its ordinary signals (annotations left out).

    Make one with :func:`open_edf`. ``labels``, ``units``, ``sfreqs``,
    ``samples_per_record``, ``ranges`` (``((digital min, max), (physical min, max))``) and
    ``offsets`` (where a signal's samples start in a data record) have one entry per ordinary
    signal; ``steps`` says what was read.
    """

    path: Path
    bdf: bool
    labels: tuple[str, ...]
    units: tuple[str, ...]
    sfreqs: tuple[float, ...]
    samples_per_record: tuple[int, ...]
    num_records: int
    ranges: tuple[tuple[tuple[float, float], tuple[float, float]], ...]
    offsets: tuple[int, ...]
    header_bytes: int
    record_bytes: int
    steps: tuple[str, ...]

    def reader(
        self, picks: Sequence[int], scales: Sequence[float]
    ) -> Callable[[int, int], np.ndarray]:
        """``reader(start, stop)`` -> samples ``[len(picks), stop - start]`` float64 of the
        signals ``picks`` (which share one sampling rate), in physical units times ``scales``.

        An error now if a picked signal's calibration is degenerate.
        """
        gains = []
        for i in picks:
            (dmin, dmax), (pmin, pmax) = self.ranges[i]
            if dmax == dmin or pmax == pmin:
                raise RecordingError(
                    f"channel {self.labels[i]!r} of {self.path} has a degenerate calibration"
                )
            gain = (pmax - pmin) / (dmax - dmin)
            gains.append((gain, pmax / gain - dmax))  # physical = (digital + offset) * gain
        spr, scales = self.samples_per_record[picks[0]], tuple(scales)
        offsets = [self.offsets[i] for i in picks]
        width, record_bytes = (3 if self.bdf else 2), self.record_bytes

        def read(start: int, stop: int) -> np.ndarray:
            first, last = start // spr, -(-stop // spr)
            with self.path.open("rb") as file:
                file.seek(self.header_bytes + first * record_bytes)
                data = file.read((last - first) * record_bytes)
            records = np.frombuffer(data, dtype=np.uint8).reshape(last - first, record_bytes)
            out = np.empty((len(offsets), stop - start))
            for k, offset in enumerate(offsets):
                raw = records[:, offset * width : (offset + spr) * width].reshape(-1)
                raw = raw[(start - first * spr) * width : (stop - first * spr) * width]
                if self.bdf:
                    b = raw.reshape(-1, 3).astype(np.int32)
                    digital = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                    digital = (digital ^ 0x800000) - 0x800000  # sign-extend 24 bits
                else:
                    digital = raw.view("<i2")
                gain, shift = gains[k]
                out[k] = (digital + shift) * gain * scales[k]
            return out

        return read


def open_edf(path: str | Path, bdf: bool = False) -> EdfFile:
    """Open the EDF (or ``bdf``) file at ``path``: header checked, no data read yet.

    A RecordingError if the header is truncated or corrupt, the recording discontinuous
    (EDF+D/BDF+D), or the file shorter than its header says.
    """
    edfio = require("edfio", "edf")
    path = Path(path)
    fmt = "BDF" if bdf else "EDF"
    header = read_header(path, bdf)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "file contains 0 records": we pass the header only
            read = edfio.read_bdf if bdf else edfio.read_edf
            parsed = read(header.raw, header_encoding="latin-1")
        # edfio parses fields when they are read: read them all here.
        record_duration = parsed.data_record_duration
        signals = [
            (s.label, s.physical_dimension, s.sampling_frequency, s.digital_range, s.physical_range)
            for s in parsed.signals
        ]
        # Samples per record of every signal, annotation signals included.
        per_record = [int(n) for n in header.signals["samples_per_record"]]
    except (ValueError, IndexError, ArithmeticError, NameError) as err:
        raise RecordingError(f"{path} is not a valid {fmt} file: corrupt header ({err})") from None
    if any(n < 0 for n in per_record):
        raise RecordingError(
            f"{path} is not a valid {fmt} file: corrupt header (negative samples per record)"
        )
    if header.fields["reserved"].startswith(("EDF+D", "BDF+D")):
        raise RecordingError(
            f"{path} is a discontinuous {fmt}+D recording (gaps between data records), which "
            "cannot be cut into evenly timed windows"
        )
    ordinary = [
        i for i, label in enumerate(header.signals["label"]) if label != f"{fmt} Annotations"
    ]
    width = 3 if bdf else 2
    record_bytes = sum(per_record) * width
    if len(ordinary) != len(signals) or not signals or record_bytes <= 0:
        raise RecordingError(f"{path} holds no signals edfio can read ({fmt} header)")
    data_bytes = path.stat().st_size - header.header_bytes
    available = data_bytes // record_bytes
    num_records = int(header.fields["num_records"])  # checked by read_header
    notes = []
    if num_records < 0:  # -1: the writer never finished the header; use what is there
        num_records = available
        notes.append(f"header has no record count: using the {available} complete records")
    elif available < num_records:
        raise RecordingError(
            f"{path} is truncated or corrupt: its header declares {num_records} data records of "
            f"{record_bytes} bytes, but the file holds {data_bytes} bytes of data"
        )
    steps = (
        f"read {fmt} {path.name}: {len(signals)} signal(s), {num_records} record(s) of "
        f"{record_duration:g} s ({num_records * record_duration:g} s)",
        *notes,
    )
    return EdfFile(
        path=path,
        bdf=bdf,
        labels=tuple(label for label, *_ in signals),
        units=tuple(unit for _, unit, *_ in signals),
        sfreqs=tuple(sfreq for _, _, sfreq, *_ in signals),
        samples_per_record=tuple(per_record[i] for i in ordinary),
        num_records=num_records,
        ranges=tuple((digital, physical) for *_, digital, physical in signals),
        offsets=tuple(sum(per_record[:i]) for i in ordinary),
        header_bytes=header.header_bytes,
        record_bytes=record_bytes,
        steps=steps,
    )
