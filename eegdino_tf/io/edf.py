"""The EDF/BDF reader: the header validated field by field, data records read on demand.

The header layout is the EDF specification's (BDF is the same with 24-bit samples): a fixed
256-byte part (:data:`HEADER_FIELDS`), then 256 bytes per signal (:data:`SIGNAL_FIELDS`),
stored field by field: all the labels, then all the transducers, and so on.

:func:`open_edf` validates the header in one step before any data is read: every number the
reader uses is parsed and range-checked, and an error names the field (and the signal). From
the signals' own samples per record it lays out a data record (where each signal's samples
start and how wide they are, annotation signals included) and checks the file's size against
that layout. ``edfio`` decodes the labels and units and tells ordinary signals from EDF+
annotation signals. The data records are read here, a span of records at a time, straight
from the file.

The limits, each named in the error that enforces it: :data:`MAX_SAMPLING_RATE` (every
ordinary signal), :data:`MAX_ABS_MICROVOLTS` and :data:`MIN_STEP_MICROVOLTS` (the
calibration of each channel read); resampling adds
:data:`~eegdino_tf.io.windows.MIN_SAMPLING_RATE` and
:data:`~eegdino_tf.io.windows.MAX_RESAMPLE_FACTOR`. A file whose size is not the header's
(truncated, extended, or BDF data behind an EDF header) is an error; only an EDF+ header
without a record count (``num_records`` -1) takes the count from the size, reading the
complete records and warning about a partial one.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

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

#: The highest sampling rate (Hz) a signal may declare: ``samples_per_record /
#: record_duration``. With one sample a record it makes 1 / MAX_SAMPLING_RATE s the shortest
#: record duration.
MAX_SAMPLING_RATE = 100_000.0
#: The largest magnitude (µV) a read channel's physical range may reach (10 kV: generous for
#: writers that declare a wide range). It keeps every sample of the digital range finite in
#: float32 (below 1e18 µV), and the model's output finite.
MAX_ABS_MICROVOLTS = 1e10
#: Bytes of whole data records read at once; a record larger than this is read signal by
#: signal, just the samples asked for, so one huge record never loads the whole file.
READ_BYTES = 16 * 2**20
#: The smallest magnitude (µV) of one digital step: a calibration below it is degenerate.
MIN_STEP_MICROVOLTS = float(np.finfo(np.float32).tiny)

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclasses.dataclass(frozen=True)
class SampleFormat:
    """How one format stores samples: ``name``, ``width`` (bytes) and the digital range."""

    name: str
    width: int
    digital: tuple[int, int]
    magic: str

    @property
    def other(self) -> SampleFormat:
        """The other format (EDF for BDF and the reverse)."""
        return BDF if self is EDF else EDF


EDF = SampleFormat("EDF", 2, (-(2**15), 2**15 - 1), "0")
BDF = SampleFormat("BDF", 3, (-(2**23), 2**23 - 1), "\xffBIOSEMI")


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


def parse_number(text: str, field: str, where: str, *, integer: bool) -> int | float:
    """``text`` (the header ``field``) as an int, or a finite float; else a RecordingError.

    ``where`` starts the message (``"x.edf is not a valid EDF file: corrupt header (signal 2
    'C3': "``). Only plain decimal notation is accepted: no ``nan``, ``inf`` or underscores.
    """
    if (_INTEGER if integer else _DECIMAL).fullmatch(text):
        value = int(text) if integer else float(text)
        if integer or math.isfinite(value):
            return value
    expected = "a whole number" if integer else "a finite decimal number"
    raise RecordingError(f"{where}{field} is {text!r}; expected {expected})")


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
        corrupt = f"{invalid}: corrupt header ("
        header_bytes = parse_number(fields["header_bytes"], "header_bytes", corrupt, integer=True)
        num_signals = parse_number(fields["num_signals"], "num_signals", corrupt, integer=True)
        parse_number(fields["num_records"], "num_records", corrupt, integer=True)
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
class EdfSignal:
    """One ordinary signal of an EDF/BDF file: its validated header fields and its place in a
    data record (``offset``: the byte where its ``samples_per_record`` samples start)."""

    label: str
    unit: str
    samples_per_record: int
    sfreq: float
    digital: tuple[int, int]
    physical: tuple[float, float]
    offset: int

    def calibration(self, scale: float, path: Path) -> tuple[float, float]:
        """``(gain, offset)`` with microvolts ``= (digital + offset) * gain * scale`` (edfio's
        formula), ``scale`` being the unit's factor to µV.

        An error naming the channel and field unless every scaled sample of the format's
        digital range is finite in float32 (see :data:`MAX_ABS_MICROVOLTS`).
        """
        (dmin, dmax), (pmin, pmax) = self.digital, self.physical
        where = f"channel {self.label!r} of {path}"
        for field, value in (("physical_min", pmin), ("physical_max", pmax)):
            if not abs(value * scale) <= MAX_ABS_MICROVOLTS:
                raise RecordingError(
                    f"{where}: {field} is {value:g} {self.unit}"
                    + (f" ({value * scale:g} uV)" if scale != 1 else "")
                    + f"; expected at most {MAX_ABS_MICROVOLTS:g} uV in magnitude "
                    "(MAX_ABS_MICROVOLTS)"
                )
        if dmin == dmax or pmin == pmax:
            field = "digital" if dmin == dmax else "physical"
            raise RecordingError(
                f"{where} has a degenerate calibration ({field}_min == {field}_max == "
                f"{dmin if dmin == dmax else pmin:g})"
            )
        gain = (pmax - pmin) / (dmax - dmin)
        if abs(gain * scale) < MIN_STEP_MICROVOLTS:
            raise RecordingError(
                f"{where} has a degenerate calibration (physical_min {pmin:g} and physical_max "
                f"{pmax:g} make a digital step of {gain * scale:g} uV)"
            )
        return gain, pmax / gain - dmax


@dataclasses.dataclass(frozen=True)
class EdfFile:
    """An EDF/BDF file opened for reading: its ordinary signals (annotations left out).

    Make one with :func:`open_edf`. ``signals`` has one :class:`EdfSignal` per ordinary
    signal; a data record is ``record_bytes`` long (every signal's samples, annotation
    signals included); ``steps`` says what was read.
    """

    path: Path
    format: SampleFormat
    record_duration: float
    num_records: int
    signals: tuple[EdfSignal, ...]
    header_bytes: int
    record_bytes: int
    steps: tuple[str, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The ordinary signals' labels."""
        return tuple(signal.label for signal in self.signals)

    def reader(
        self, picks: Sequence[int], scales: Sequence[float]
    ) -> Callable[[int, int], np.ndarray]:
        """``reader(start, stop)`` -> samples ``[len(picks), stop - start]`` float64 of the
        signals ``picks`` (which share one samples per record), in physical units times
        ``scales``.

        An error now if a picked signal's calibration is degenerate or out of range.
        """
        signals = [self.signals[i] for i in picks]
        per_record = {signal.samples_per_record for signal in signals}
        if len(per_record) != 1:
            raise RecordingError(
                f"one reader of {self.path} reads signals with one samples_per_record, got "
                f"{sorted(per_record)}"
            )
        spr, width, record_bytes = per_record.pop(), self.format.width, self.record_bytes
        calibrations = [
            (*signal.calibration(scale, self.path), scale)
            for signal, scale in zip(signals, scales, strict=True)
        ]

        def exact(file: BinaryIO, at: int, size: int) -> bytes:
            file.seek(at)
            data = file.read(size)
            if len(data) != size:
                raise RecordingError(
                    f"{self.path} is shorter than when it was opened: {size} bytes at byte {at} "
                    "are not all there"
                )
            return data

        def read(start: int, stop: int) -> np.ndarray:
            out = np.empty((len(signals), stop - start))
            per_read = READ_BYTES // record_bytes  # whole records read at once (0: none)
            with self.path.open("rb") as file:
                at = start  # the next sample to read
                while at < stop:
                    first = at // spr
                    last = min(-(-stop // spr), first + max(1, per_read))
                    lo, hi = at - first * spr, min(stop, last * spr) - first * spr
                    where = self.header_bytes + first * record_bytes
                    if not per_read:  # a record larger than READ_BYTES: just the samples
                        raws = [
                            exact(file, where + s.offset + lo * width, (hi - lo) * width)
                            for s in signals
                        ]
                    else:
                        data = exact(file, where, (last - first) * record_bytes)
                        records = np.frombuffer(data, np.uint8).reshape(-1, record_bytes)
                        raws = [
                            records[:, s.offset : s.offset + spr * width].reshape(-1)[
                                lo * width : hi * width
                            ]
                            for s in signals
                        ]
                    for k, (raw, (gain, offset, scale)) in enumerate(
                        zip(raws, calibrations, strict=True)
                    ):
                        digital = _decode(np.frombuffer(raw, np.uint8), width)
                        out[k, at - start : at - start + hi - lo] = (
                            (digital + offset) * gain * scale
                        )
                    at += hi - lo
            return out

        return read


def _decode(raw: np.ndarray, width: int) -> np.ndarray:
    """Little-endian digital samples from their bytes: 16-bit (EDF) or 24-bit (BDF)."""
    if width == 2:
        return raw.view("<i2")
    b = raw.reshape(-1, 3).astype(np.int32)
    digital = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return (digital ^ 0x800000) - 0x800000  # sign-extend 24 bits


def _calibration_fields(
    header: EdfHeader, fmt: SampleFormat, index: int, where: str
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Signal ``index``'s digital and physical range, parsed and range-checked."""
    values = {name: header.signals[name][index] for name, _ in SIGNAL_FIELDS}
    low, high = fmt.digital
    digital = []
    for name in ("digital_min", "digital_max"):
        value = parse_number(values[name], name, where, integer=True)
        if not low <= value <= high:
            raise RecordingError(
                f"{where}{name} is {value}; expected {low}..{high} for {fmt.width * 8}-bit "
                f"{fmt.name} samples)"
            )
        digital.append(value)
    physical = [
        parse_number(values[name], name, where, integer=False)
        for name in ("physical_min", "physical_max")
    ]
    return (digital[0], digital[1]), (physical[0], physical[1])


def _check_size(
    path: Path, fmt: SampleFormat, header_bytes: int, num_records: int, per_record: int
) -> int:
    """The number of data records, from the header checked against the file's size.

    ``per_record``: samples in one data record, all signals together. With ``num_records``
    -1 (an EDF+ writer that never finished its header) the count is the complete records
    there are, with a warning if a partial record follows them.
    """
    size = path.stat().st_size
    record_bytes = per_record * fmt.width
    data_bytes = size - header_bytes
    if num_records == -1:
        count, left = divmod(data_bytes, record_bytes)
        if left:
            warnings.warn(
                f"{path}: the last {left} bytes are a partial data record of {record_bytes} "
                "bytes; read the complete records only",
                stacklevel=4,
            )
        if count:
            return count
    expected = header_bytes + num_records * record_bytes
    if num_records >= 1 and size == expected:
        return num_records
    if num_records < 1:
        raise RecordingError(
            f"{path} holds no complete data record: num_records is {num_records}, and "
            f"{data_bytes} bytes follow the {header_bytes}-byte header (one record is "
            f"{record_bytes} bytes)"
        )
    if data_bytes == num_records * per_record * fmt.other.width:
        other = fmt.other
        cause = (
            f"; that is the size with {other.width * 8}-bit samples: {other.name} data in a file "
            f"marked {fmt.name}?"
        )
    elif size < expected:
        cause = f"; the file is cut short after {data_bytes // record_bytes} complete data records"
    else:
        cause = f"; {size - expected} bytes follow the last data record"
    raise RecordingError(
        f"{path} is truncated or corrupt: its header declares {num_records} data records of "
        f"{record_bytes} bytes ({expected} bytes with the {header_bytes}-byte header), but the "
        f"file is {size} bytes{cause}"
    )


def open_edf(path: str | Path, bdf: bool = False) -> EdfFile:
    """Open the EDF (or ``bdf``) file at ``path``: header validated, no data read yet.

    A RecordingError naming the field if the header is truncated or corrupt, if the
    recording is discontinuous (EDF+D/BDF+D), or if the file's size differs from the one its
    header declares.
    """
    edfio = require("edfio", "edf")
    path = Path(path)
    fmt = BDF if bdf else EDF
    header = read_header(path, bdf)
    corrupt = f"{path} is not a valid {fmt.name} file: corrupt header ("
    fields = header.fields
    if fields["version"] != fmt.magic:
        raise RecordingError(f"{corrupt}version is {fields['version']!r}; expected {fmt.magic!r})")
    if fields["reserved"].startswith(("EDF+D", "BDF+D")):
        raise RecordingError(
            f"{path} is a discontinuous {fmt.name}+D recording (gaps between data records), "
            "which cannot be cut into evenly timed windows"
        )
    num_records = int(fields["num_records"])  # a whole number: checked by read_header
    if num_records < -1:
        raise RecordingError(f"{corrupt}num_records is {num_records}; expected >= 1, or -1)")
    duration = parse_number(fields["record_duration"], "record_duration", corrupt, integer=False)
    if not duration > 0:
        raise RecordingError(f"{corrupt}record_duration is {duration:g}; expected > 0 s)")
    labels = header.signals["label"]
    ordinary = {i for i, label in enumerate(labels) if label != f"{fmt.name} Annotations"}
    per_record, numbers = [], []
    for i, label in enumerate(labels):
        where = f"{corrupt}signal {i + 1} {label!r}: "
        text = header.signals["samples_per_record"][i]
        spr = parse_number(text, "samples_per_record", where, integer=True)
        if spr < 1:
            problem = "negative samples per record" if spr < 0 else "no samples per record"
            raise RecordingError(f"{where}samples_per_record is {spr} ({problem}); expected >= 1)")
        if i in ordinary and not spr / duration <= MAX_SAMPLING_RATE:
            raise RecordingError(
                f"{where}samples_per_record {spr} in a record_duration of {duration:g} s is "
                f"{spr / duration:g} Hz; expected at most {MAX_SAMPLING_RATE:g} Hz "
                "(MAX_SAMPLING_RATE))"
            )
        per_record.append(spr)
    num_records = _check_size(path, fmt, header.header_bytes, num_records, sum(per_record))
    starts = [0, *itertools.accumulate(per_record)]  # in samples, from the record's start
    for i in sorted(ordinary):
        where = f"{corrupt}signal {i + 1} {labels[i]!r}: "
        fields_i = _calibration_fields(header, fmt, i, where)
        numbers.append((per_record[i], per_record[i] / duration, *fields_i, starts[i] * fmt.width))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "file contains 0 records": we pass the header only
            read = edfio.read_bdf if bdf else edfio.read_edf
            parsed = read(header.raw, header_encoding="latin-1")
        decoded = [(s.label, s.physical_dimension) for s in parsed.signals]
    except (ValueError, IndexError, ArithmeticError, NameError) as err:
        raise RecordingError(f"{corrupt}edfio: {err})") from None
    if len(decoded) != len(ordinary) or not ordinary:
        raise RecordingError(f"{path} holds no signals edfio can read ({fmt.name} header)")
    notes = []
    if int(fields["num_records"]) == -1:
        notes.append(f"header has no record count: using the {num_records} complete records")
    signals = tuple(
        EdfSignal(label, unit, *values)
        for (label, unit), values in zip(decoded, numbers, strict=True)
    )
    steps = (
        f"read {fmt.name} {path.name}: {len(signals)} signal(s), {num_records} record(s) of "
        f"{duration:g} s ({num_records * duration:g} s)",
        *notes,
    )
    return EdfFile(
        path=path,
        format=fmt,
        record_duration=duration,
        num_records=num_records,
        signals=signals,
        header_bytes=header.header_bytes,
        record_bytes=sum(per_record) * fmt.width,
        steps=steps,
    )
