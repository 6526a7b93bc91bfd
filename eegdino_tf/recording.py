"""Real EEG in, embeddings out: EDF/BDF files, MNE ``Raw`` objects and arrays.

What happens to a recording (each step is written to :attr:`Recording.steps` and logged):

1. **Open** an EDF/BDF file (header parsed with ``edfio``; data records are read on demand, a
   chunk at a time), an ``mne.io.Raw`` (any format MNE reads; ``preload=False`` works) or a
   NumPy array with its sampling rate and channel names.
2. **Pick channels** by name, in the order given (that order is the model's channel-slot
   order: it must match the order the weights were trained or finetuned with). Matching is
   case-insensitive and tolerant of the usual spellings (``EEG FP1-REF``, ``FP1-LE``,
   ``EEG Fp1``, ``Fp1-A1``; ``T3``/``T7``, ``T4``/``T8``, ``T5``/``P7``, ``T6``/``P8``).
   Non-EEG signals (ECG, EOG, EMG, annotations, ...) are never matched by such spellings.
   Without ``channels`` the 19 standard 10-20 channels are used, in TUH order
   (:data:`STANDARD_CHANNELS`); if the source lacks any of them that is an error asking for
   an explicit list, because guessing a channel order would silently feed the wrong
   channel-embedding slots.
3. **Convert to microvolts** from the physical unit (V, mV, uV/µV, nV).
4. **Resample to 200 Hz** with ``scipy.signal.resample_poly`` (anti-aliasing polyphase FIR,
   exact rational factors, e.g. 256 -> 200 Hz is up 25 / down 32). Long recordings stream
   through in chunks; each chunk is resampled with enough neighbouring input on both sides
   that the result equals resampling the whole signal (to float64 rounding).
5. **Cut windows** of ``window`` whole seconds every ``stride`` seconds (default: no
   overlap). A tail shorter than a window is dropped, or zero-padded with ``pad_tail``.
6. **Encode** the windows in batches with :func:`encode_recording`.

No filtering or re-referencing is done: apply those (e.g. with MNE) before encoding if the
weights expect them. Recordings with large DC offsets (BioSemi BDF files, for one) need a
high-pass filter first: the model sees the microvolts as they are.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eegdino_tf.config import MAX_CHANNELS, SAMPLING_RATE
from eegdino_tf.errors import RecordingError, require

_log = logging.getLogger(__name__)

#: The 19 standard 10-20 channels in TUH order: the default channel list.
STANDARD_CHANNELS = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz",
    "C4", "T4", "T5", "P3", "Pz", "P4", "T6", "O1", "O2",
)  # fmt: skip

#: Seconds of 200 Hz output resampled per chunk when streaming.
CHUNK_SECONDS = 60.0

# New 10-20 names -> old ones (the canonical form used for matching).
_ALIASES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
# Reference suffixes stripped from monopolar labels ("FP1-REF", "FP1-LE", "FP1-A1").
_REFERENCE = re.compile(r"[\s_]*-[\s_]*(REF|LE|RE|AR|AVG|AV|CAR|LINKED|A1A2|A12|A1|A2|M1|M2)$")
# Labels that are never EEG (matched at the start of a word, anywhere in the label).
_NON_EEG = re.compile(
    r"(?<![A-Z])(ECG|EKG|EOG|EMG|RESP|PHOTIC|SPO2|SAO2|PULSE|PLETH|TRIG|STATUS|STI|STIM|EVENT"
    r"|ANNOTATION|MARKER|IBI|BURSTS|SUPPR|LOC|ROC)"
)
# Physical units -> factor to microvolts.
_UNIT_TO_UV = {"v": 1e6, "mv": 1e3, "uv": 1.0, "nv": 1e-3}
_UNIT_WORDS = {"volt": "v", "millivolt": "mv", "microvolt": "uv", "nanovolt": "nv"}


def canonical_channel_name(label: str) -> str:
    """The matching key of a channel label: ``"EEG FP1-REF"``, ``"Fp1"``, ``"fp1-le"`` -> ``"FP1"``.

    Upper-cases, drops an ``EEG`` prefix, a monopolar reference suffix (``-REF``, ``-LE``,
    ``-A1``, ...) and trailing dots, and maps new 10-20 names to old ones (``T7`` -> ``T3``).
    Bipolar labels such as ``"FP1-F7"`` keep their second electrode.
    """
    key = label.strip().upper().rstrip(".")
    key = re.sub(r"^EEG[\s_:-]*", "", key)
    key = re.sub(r"\s+", "", _REFERENCE.sub("", key))
    return _ALIASES.get(key, key)


def _is_eeg_label(label: str) -> bool:
    return not _NON_EEG.search(label.upper())


def _unit_to_uv(unit: str, channel: str) -> float:
    key = unit.strip().replace("µ", "u").replace("μ", "u").lower()
    key = _UNIT_WORDS.get(key.rstrip("s"), key)
    if key not in _UNIT_TO_UV:
        raise RecordingError(
            f"channel {channel!r} has physical unit {unit!r}, which is not a voltage this reader "
            f"knows (V, mV, uV/µV, nV); if the values are EEG in a known unit, pass unit='uV' "
            f"(--unit) naming it"
        )
    return _UNIT_TO_UV[key]


def _format_names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _pick(
    labels: Sequence[str], eeg: Sequence[bool], channels: Sequence[str] | str | None, where: str
) -> tuple[list[int], tuple[str, ...]]:
    """Indices into ``labels`` of the requested channels, and the names to report them by.

    A requested name matches a label exactly (case-insensitive, any signal), or else by
    :func:`canonical_channel_name` among the EEG signals (``eeg[i]`` true).
    """
    eeg_labels = [label for label, ok in zip(labels, eeg, strict=True) if ok]
    other = [label for label, ok in zip(labels, eeg, strict=True) if not ok]
    has = f"{where} has EEG channels [{_format_names(eeg_labels)}]"
    if other:
        has += f" and non-EEG signals [{_format_names(other)}] (skipped)"
    if channels is None:
        wanted: tuple[str, ...] = STANDARD_CHANNELS
    elif isinstance(channels, str):
        wanted = tuple(name.strip() for name in channels.split(",") if name.strip())
    else:
        wanted = tuple(str(name) for name in channels)
    if not wanted:
        raise RecordingError(f"no channels requested; {has}")
    if len(wanted) > MAX_CHANNELS:
        raise RecordingError(
            f"{len(wanted)} channels requested; the model takes at most {MAX_CHANNELS} "
            f"(one channel-embedding slot each); {has}"
        )
    keys = [canonical_channel_name(label) for label in labels]
    picked, missing = [], []
    for name in wanted:
        exact = [i for i, label in enumerate(labels) if label.strip().lower() == name.lower()]
        hits = exact or [
            i for i, key in enumerate(keys) if eeg[i] and key == canonical_channel_name(name)
        ]
        if not hits:
            missing.append(name)
        elif len(hits) > 1:
            raise RecordingError(
                f"channel {name!r} is ambiguous in {where}: it matches "
                f"[{_format_names([labels[i] for i in hits])}]; pass the exact label"
            )
        else:
            picked.append(hits[0])
    if missing and channels is None:
        raise RecordingError(
            f"{where} lacks standard 10-20 channel(s) [{_format_names(missing)}], so the default "
            f"19-channel list cannot be used; pass channels=[...] (--channels) naming the "
            f"channels to encode, in the order the model's weights expect; {has}"
        )
    if missing:
        raise RecordingError(f"channel(s) [{_format_names(missing)}] not found; {has}")
    if len(set(picked)) < len(picked):
        doubled = sorted({labels[i] for i in picked if picked.count(i) > 1})
        raise RecordingError(f"channel(s) [{_format_names(doubled)}] requested more than once")
    return picked, wanted


def _resample_factors(sfreq: float) -> tuple[int, int]:
    """``(up, down)`` with ``sfreq * up / down == 200`` exactly (coprime integers)."""
    if not (math.isfinite(sfreq) and sfreq > 0):
        raise RecordingError(f"invalid sampling rate {sfreq!r} Hz")
    rate = Fraction(sfreq).limit_denominator(1000)
    if abs(float(rate) - sfreq) > 1e-9 * sfreq:
        raise RecordingError(f"sampling rate {sfreq!r} Hz is not a ratio of small integers")
    ratio = Fraction(int(SAMPLING_RATE)) / rate
    return ratio.numerator, ratio.denominator


def _samples(seconds: float, what: str, *, whole_seconds: bool) -> int:
    """``seconds`` as a count of 200 Hz samples; an error unless it is whole (and positive)."""
    value = float(seconds)
    count = value * SAMPLING_RATE
    if isinstance(seconds, bool) or not (value > 0 and math.isfinite(value)):
        raise RecordingError(f"{what} must be a positive number of seconds, got {seconds!r}")
    if whole_seconds and not value.is_integer():
        raise RecordingError(
            f"{what} must be a whole number of seconds (the model cuts 1 s patches), "
            f"got {seconds!r}"
        )
    if abs(count - round(count)) > 1e-6:
        raise RecordingError(
            f"{what} must be a whole number of {SAMPLING_RATE:g} Hz samples, got {seconds!r} s"
        )
    return round(count)


@dataclasses.dataclass
class Recording:
    """An EEG recording opened for streaming: picked channels, microvolts, native rate.

    Make one with :func:`open_recording`. Nothing but the header is read until data is asked
    for; :meth:`windows` streams model-ready windows in chunks of bounded size.

    Attributes:
        channels: the channel names in model order (as requested, or
            :data:`STANDARD_CHANNELS`).
        source_channels: the matching labels in the source.
        sfreq: the native sampling rate in Hz.
        n_samples: native samples per channel.
        steps: what was done to the data, one line per step.
        reader: ``reader(start, stop)`` -> native samples ``[C, stop - start]`` in microvolts.
    """

    channels: tuple[str, ...]
    source_channels: tuple[str, ...]
    sfreq: float
    n_samples: int
    steps: list[str]
    reader: Callable[[int, int], np.ndarray] = dataclasses.field(repr=False)
    up: int = dataclasses.field(init=False)
    down: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.up, self.down = _resample_factors(self.sfreq)
        if (self.up, self.down) == (1, 1):
            self.steps.append(f"already at {SAMPLING_RATE:g} Hz: not resampled")
        else:
            self.steps.append(
                f"resampled {self.sfreq:g} Hz -> {SAMPLING_RATE:g} Hz with "
                f"scipy.signal.resample_poly (up {self.up}, down {self.down}; anti-aliased, "
                "streamed in chunks)"
            )
        for line in self.steps:
            _log.info("%s", line)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sfreq

    @property
    def n_resampled(self) -> int:
        """Samples per channel at 200 Hz (``ceil(n_samples * up / down)``)."""
        return -(-self.n_samples * self.up // self.down)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Native samples ``[start, stop)`` of the picked channels: ``[C, stop - start]`` µV."""
        if not 0 <= start <= stop <= self.n_samples:
            raise RecordingError(
                f"samples [{start}, {stop}) are outside the recording (0..{self.n_samples})"
            )
        return self.reader(start, stop)

    def resampled(self, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
        """The whole recording at 200 Hz, as consecutive float64 blocks ``[C, n]`` of microvolts.

        Each block is resampled from its native span plus a margin on both sides wider than
        the anti-aliasing filter, and block edges fall on exact sample-grid coincidences, so
        the concatenation equals ``resample_poly`` of the whole signal.
        """
        up, down = self.up, self.down
        block = up * max(1, round(chunk_seconds * SAMPLING_RATE / up))  # output samples
        if (up, down) == (1, 1):
            for start in range(0, self.n_samples, block):
                yield self.read(start, min(start + block, self.n_samples))
            return
        signal = require("scipy.signal", "edf")
        half = 10 * max(up, down)  # resample_poly's filter half-length, in upsampled samples
        margin = down * -(-(half // up + 2) // down)  # native samples, a multiple of down
        for out_start in range(0, self.n_resampled, block):
            out_stop = min(out_start + block, self.n_resampled)
            begin = out_start * down // up  # exact: out_start is a multiple of up
            first = max(0, begin - margin)
            last = min(self.n_samples, begin + block * down // up + margin)
            y = signal.resample_poly(self.read(first, last), up, down, axis=-1)
            offset = (begin - first) * up // down
            yield y[:, offset : offset + out_stop - out_start]

    def window_starts(
        self, window: float = 10, stride: float | None = None, pad_tail: bool = False
    ) -> np.ndarray:
        """Start samples (at 200 Hz) of the windows :meth:`windows` yields; ``[W]`` int64.

        An error if the recording is shorter than one window (unless ``pad_tail``).
        """
        size = _samples(window, "window", whole_seconds=True)
        step = size if stride is None else _samples(stride, "stride", whole_seconds=False)
        total = self.n_resampled
        starts = list(range(0, total - size + 1, step)) if total >= size else []
        if pad_tail:
            covered, following = (starts[-1] + size, starts[-1] + step) if starts else (0, 0)
            if covered < total and following < total:
                starts.append(following)
        if not starts:
            raise RecordingError(
                f"the recording is {self.duration_s:g} s long, shorter than one {window:g} s "
                f"window; use a shorter window, or pad_tail=True (--pad-tail) to zero-pad it"
            )
        return np.asarray(starts, dtype=np.int64)

    def describe_windows(
        self, window: float = 10, stride: float | None = None, pad_tail: bool = False
    ) -> str:
        """One line saying how :meth:`windows` cuts this recording."""
        starts = self.window_starts(window, stride, pad_tail)
        size = _samples(window, "window", whole_seconds=True)
        end = int(starts[-1]) + size
        if end > self.n_resampled:
            tail = f"last window zero-padded by {(end - self.n_resampled) / SAMPLING_RATE:g} s"
        elif end < self.n_resampled:
            tail = f"{(self.n_resampled - end) / SAMPLING_RATE:g} s tail dropped"
        else:
            tail = "no tail left over"
        return (
            f"cut {len(starts)} window(s) of {window:g} s every "
            f"{window if stride is None else stride:g} s; {tail}"
        )

    def windows(
        self,
        window: float = 10,
        stride: float | None = None,
        pad_tail: bool = False,
        chunk_seconds: float = CHUNK_SECONDS,
    ) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(start_s, x)``: model-ready float32 microvolts ``x``, ``[C, window * 200]``.

        Memory stays bounded by one chunk plus one window, whatever the recording's length.
        """
        starts = self.window_starts(window, stride, pad_tail)
        size = _samples(window, "window", whole_seconds=True)
        blocks = self.resampled(chunk_seconds)
        buffer = np.zeros((len(self.channels), 0))
        buffer_start = 0  # 200 Hz sample index of buffer[:, 0]
        for start in starts:
            stop = min(int(start) + size, self.n_resampled)
            while buffer_start + buffer.shape[1] < stop:
                buffer = np.concatenate([buffer, next(blocks)], axis=1)
                cut = min(int(start), buffer_start + buffer.shape[1]) - buffer_start
                buffer, buffer_start = buffer[:, cut:], buffer_start + cut
            x = np.zeros((len(self.channels), size), dtype=np.float32)
            x[:, : stop - start] = buffer[:, start - buffer_start : stop - buffer_start]
            yield float(start) / SAMPLING_RATE, x


def _open_edf(path: Path, bdf: bool, channels: Sequence[str] | str | None, unit: str | None):
    """A :class:`Recording` over an EDF/BDF file: header via edfio, data records on demand.

    edfio loads BDF data (and EDF read from a stream) into memory whole, so the data records
    are read here, a chunk of records at a time, straight from the file.
    """
    edfio = require("edfio", "edf")
    fmt = "BDF" if bdf else "EDF"
    size = path.stat().st_size
    with path.open("rb") as file:
        fixed = file.read(256)
        try:
            header_bytes, num_signals = int(fixed[184:192]), int(fixed[252:256])
            num_records = int(fixed[236:244])
        except ValueError:
            raise RecordingError(f"{path} is not a valid {fmt} file: corrupt header") from None
        if header_bytes != 256 * (num_signals + 1) or num_signals < 1 or header_bytes > size:
            raise RecordingError(
                f"{path} is not a valid {fmt} file: its header declares {num_signals} signals in "
                f"{header_bytes} bytes (file size {size})"
            )
        header = fixed + file.read(header_bytes - 256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "file contains 0 records": we pass the header only
            parsed = (edfio.read_bdf if bdf else edfio.read_edf)(header, header_encoding="latin-1")
        # edfio parses fields when they are read: read them all here.
        record_duration, reserved = parsed.data_record_duration, parsed.reserved
        signals = [
            (s.label, s.physical_dimension, s.sampling_frequency, s.digital_range, s.physical_range)
            for s in parsed.signals
        ]
        # Samples per record of every signal, annotation signals included (fixed header layout).
        spr_at = 256 + num_signals * 216
        per_record = [int(header[spr_at + 8 * i : spr_at + 8 * i + 8]) for i in range(num_signals)]
        raw_labels = [
            header[256 + 16 * i : 272 + 16 * i].decode("latin-1").strip()
            for i in range(num_signals)
        ]
    except (ValueError, IndexError, ArithmeticError, NameError) as err:
        raise RecordingError(f"{path} is not a valid {fmt} file: corrupt header ({err})") from None
    if reserved.startswith(("EDF+D", "BDF+D")):
        raise RecordingError(
            f"{path} is a discontinuous {fmt}+D recording (gaps between data records), which "
            "cannot be cut into evenly timed windows"
        )
    ordinary = [i for i, label in enumerate(raw_labels) if label != f"{fmt} Annotations"]
    width = 3 if bdf else 2
    record_bytes = sum(per_record) * width
    if len(ordinary) != len(signals) or not signals or record_bytes <= 0:
        raise RecordingError(f"{path} holds no signals edfio can read ({fmt} header)")
    available = (size - header_bytes) // record_bytes
    steps = []
    if num_records < 0:  # -1: the writer never finished the header; use what is there
        num_records = available
        steps.append(f"header has no record count: using the {available} complete records")
    elif available < num_records:
        raise RecordingError(
            f"{path} is truncated or corrupt: its header declares {num_records} data records of "
            f"{record_bytes} bytes, but the file holds {size - header_bytes} bytes of data"
        )
    labels = [label for label, *_ in signals]
    eeg = [_is_eeg_label(label) for label in labels]
    picked, names = _pick(labels, eeg, channels, str(path))
    rates = {signals[i][2] for i in picked}
    if len(rates) > 1:
        raise RecordingError(
            f"the picked channels of {path} have different sampling rates "
            f"({', '.join(f'{labels[i]}: {signals[i][2]:g} Hz' for i in picked)})"
        )
    spr = per_record[ordinary[picked[0]]]
    offsets = [sum(per_record[: ordinary[i]]) for i in picked]  # in samples within a record
    units = [signals[i][1] if unit is None else unit for i in picked]
    scales = [_unit_to_uv(u, labels[i]) for u, i in zip(units, picked, strict=True)]
    gains = []
    for i in picked:
        (dmin, dmax), (pmin, pmax) = signals[i][3], signals[i][4]
        if dmax == dmin or pmax == pmin:
            raise RecordingError(f"channel {labels[i]!r} of {path} has a degenerate calibration")
        gain = (pmax - pmin) / (dmax - dmin)
        gains.append((gain, pmax / gain - dmax))  # physical = (digital + offset) * gain

    def reader(start: int, stop: int) -> np.ndarray:
        first, last = start // spr, -(-stop // spr)
        with path.open("rb") as file:
            file.seek(header_bytes + first * record_bytes)
            data = file.read((last - first) * record_bytes)
        records = np.frombuffer(data, dtype=np.uint8).reshape(last - first, record_bytes)
        out = np.empty((len(picked), stop - start))
        for k, offset in enumerate(offsets):
            raw = records[:, offset * width : (offset + spr) * width].reshape(-1)
            raw = raw[(start - first * spr) * width : (stop - first * spr) * width]
            if bdf:
                b = raw.reshape(-1, 3).astype(np.int32)
                digital = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                digital = (digital ^ 0x800000) - 0x800000  # sign-extend 24 bits
            else:
                digital = raw.view("<i2")
            gain, shift = gains[k]
            out[k] = (digital + shift) * gain * scales[k]
        return out

    steps = [
        f"read {fmt} {path.name}: {len(signals)} signal(s), {num_records} record(s) of "
        f"{record_duration:g} s ({num_records * record_duration:g} s)",
        *steps,
        *_describe_pick(labels, picked, names, eeg),
        *_describe_units(units, scales),
    ]
    source_channels = tuple(labels[i] for i in picked)
    return Recording(names, source_channels, rates.pop(), num_records * spr, steps, reader)


def _describe_pick(
    labels: Sequence[str], picked: Sequence[int], names: Sequence[str], eeg: Sequence[bool]
) -> list[str]:
    pairs = ", ".join(
        name if name == labels[i] else f"{name}={labels[i]}"
        for name, i in zip(names, picked, strict=True)
    )
    lines = [f"picked {len(picked)} channel(s) in model order: {pairs}"]
    skipped = [label for label, ok in zip(labels, eeg, strict=True) if not ok]
    if skipped:
        lines.append(f"skipped non-EEG signal(s): {', '.join(skipped)}")
    return lines


def _describe_units(units: Sequence[str], scales: Sequence[float]) -> list[str]:
    lines = []
    counts = collections.Counter(zip(units, scales, strict=True))
    for (unit, scale), count in sorted(counts.items(), key=lambda item: item[0][1]):
        if scale == 1.0:
            lines.append(f"{count} channel(s) already in microvolts ({unit!r})")
        else:
            lines.append(f"converted {count} channel(s) from {unit!r} to uV (x{scale:g})")
    return lines


def _open_mne(raw: Any, channels: Sequence[str] | str | None) -> Recording:
    mne = require("mne", "mne")
    where = f"MNE {type(raw).__name__}" + (
        f" {Path(raw.filenames[0]).name}" if raw.filenames and raw.filenames[0] else ""
    )
    labels = list(raw.ch_names)
    kinds = raw.get_channel_types()
    eeg = [kinds[i] == "eeg" and _is_eeg_label(label) for i, label in enumerate(labels)]
    picked, names = _pick(labels, eeg, channels, where)
    for i in picked:
        if raw.info["chs"][i]["unit"] != mne.io.constants.FIFF.FIFF_UNIT_V:
            raise RecordingError(
                f"channel {labels[i]!r} of the {where} is not a voltage channel (type {kinds[i]!r})"
            )
    picks = np.asarray(picked)

    def reader(start: int, stop: int) -> np.ndarray:
        return raw.get_data(picks=picks, start=start, stop=stop) * 1e6

    steps = [
        f"read {where}: {len(labels)} channel(s) at {raw.info['sfreq']:g} Hz, "
        f"{raw.n_times / raw.info['sfreq']:g} s",
        *_describe_pick(labels, picked, names, eeg),
        f"converted {len(picked)} channel(s) from 'V' (MNE's unit) to uV (x1e+06)",
    ]
    source_channels = tuple(labels[i] for i in picked)
    return Recording(
        names, source_channels, float(raw.info["sfreq"]), int(raw.n_times), steps, reader
    )


def _open_array(
    data: np.ndarray,
    sfreq: float | None,
    ch_names: Sequence[str] | None,
    channels: Sequence[str] | str | None,
    unit: str | None,
) -> Recording:
    if sfreq is None or ch_names is None:
        raise RecordingError("an array source needs sfreq=... and ch_names=[...]")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or data.shape[1] == 0:
        raise RecordingError(
            f"an array source must be [channels, samples] with one row per name in ch_names "
            f"({len(ch_names)}); got shape {data.shape}"
        )
    labels = [str(name) for name in ch_names]
    eeg = [_is_eeg_label(label) for label in labels]
    picked, names = _pick(labels, eeg, channels, "the array")
    unit = "uV" if unit is None else unit
    scale = _unit_to_uv(unit, labels[picked[0]])
    rows = data[picked]

    def reader(start: int, stop: int) -> np.ndarray:
        return rows[:, start:stop].astype(np.float64) * scale

    steps = [
        f"read array: {len(labels)} channel(s) at {float(sfreq):g} Hz, "
        f"{data.shape[1] / float(sfreq):g} s",
        *_describe_pick(labels, picked, names, eeg),
        *_describe_units([unit] * len(picked), [scale] * len(picked)),
    ]
    return Recording(
        names, tuple(labels[i] for i in picked), float(sfreq), data.shape[1], steps, reader
    )


def open_recording(
    source: str | os.PathLike | Any,
    *,
    channels: Sequence[str] | str | None = None,
    unit: str | None = None,
    sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
) -> Recording:
    """Open an EEG source for streaming, with its channels picked (see the module docstring).

    ``source`` is a path (EDF/BDF, read with edfio; any other file is read with
    ``mne.io.read_raw``), an ``mne.io.Raw`` (``preload=False`` is fine: data are read a chunk
    at a time), or an array ``[channels, samples]`` with ``sfreq`` and ``ch_names``.
    ``channels`` lists the channels in model order (a list, or one comma-separated string);
    default: :data:`STANDARD_CHANNELS`. ``unit`` overrides the unit an EDF/BDF file declares,
    or gives an array's unit (default ``"uV"``); MNE data are always volts.
    """
    if isinstance(source, np.ndarray):
        return _open_array(source, sfreq, ch_names, channels, unit)
    if sfreq is not None or ch_names is not None:
        raise RecordingError("sfreq and ch_names only apply to an array source")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise RecordingError(f"{path}: no such file")
        with path.open("rb") as file:
            magic = file.read(8)
        if magic in (b"0       ", b"\xffBIOSEMI"):
            return _open_edf(path, magic != b"0       ", channels, unit)
        if path.suffix.lower() in (".edf", ".bdf", ".rec"):
            raise RecordingError(
                f"{path} is not a valid EDF/BDF file: it starts with {magic!r}, not an EDF "
                f"('0       ') or BDF ('\\xffBIOSEMI') header"
            )
        mne = require("mne", "mne")
        try:
            source = mne.io.read_raw(path, preload=False, verbose="error")
        except Exception as err:  # MNE raises many types for unreadable files
            raise RecordingError(f"MNE cannot read {path}: {err}") from None
    mne = sys.modules.get("mne")  # an mne.io.Raw exists only if mne was imported
    if mne is not None and isinstance(source, mne.io.BaseRaw):
        if unit is not None:
            raise RecordingError("unit does not apply to an MNE Raw: MNE stores EEG in volts")
        return _open_mne(source, channels)
    raise RecordingError(
        f"cannot read EEG from a {type(source).__name__}; pass a file path, an mne.io.Raw, or "
        "an array with sfreq and ch_names"
    )


def encode_recording(
    model: Any,
    source: str | os.PathLike | Recording | Any,
    *,
    channels: Sequence[str] | str | None = None,
    unit: str | None = None,
    window: float = 10,
    stride: float | None = None,
    batch_size: int = 8,
    tokens: bool = False,
    pad_tail: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Encode a whole recording, window by window, with an EEG-DINO encoder or classifier.

    ``model`` is from :func:`eegdino_tf.load_encoder` (output ``[B, 1 + C*P, D]``) or
    :func:`eegdino_tf.load_classifier` (output ``[B, n_classes]``); it is fed raw microvolts
    ``[batch_size, C, window*200]``. ``source`` is anything :func:`open_recording` takes (then
    ``channels`` and ``unit`` go to it) or an opened :class:`Recording`.

    Returns, for W windows: ``window_start_s`` ``[W]``, ``channels`` and ``source_channels``
    ``[C]``, ``sfreq`` (200.0), ``steps`` (what was done, one line each) and, for an encoder,
    ``global_token`` ``[W, D]`` (token 0), ``mean_token`` ``[W, D]`` (mean of the C*P patch
    tokens) and with ``tokens=True`` ``tokens`` ``[W, 1 + C*P, D]`` (kept in memory: it grows
    with the recording's length, unlike everything else here); for a classifier,
    ``logits`` and ``probabilities`` (softmax) ``[W, n_classes]``.
    """
    if isinstance(source, Recording):
        if channels is not None or unit is not None:
            raise RecordingError("channels and unit apply when opening; this Recording is open")
        recording = source
    else:
        recording = open_recording(source, channels=channels, unit=unit)
    integer = isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool)
    if not integer or batch_size < 1:
        raise RecordingError(f"batch_size must be a positive integer, got {batch_size!r}")
    starts = recording.window_starts(window, stride, pad_tail)
    steps = [*recording.steps, recording.describe_windows(window, stride, pad_tail)]
    _log.info("%s", steps[-1])
    parts: dict[str, list[np.ndarray]] = {}

    def run(batch: list[np.ndarray]) -> None:
        out = np.asarray(model.predict(np.stack(batch), batch_size=batch_size, verbose=0))
        if out.ndim == 3:
            found = {"global_token": out[:, 0].copy(), "mean_token": out[:, 1:].mean(axis=1)}
            if tokens:
                found["tokens"] = out
        elif out.ndim == 2 and not tokens:
            found = {"logits": out}
        else:
            raise RecordingError(
                f"the model returned shape {out.shape}; expected encoder tokens [B, 1 + C*P, D]"
                + ("" if out.ndim != 2 else " (tokens=True needs an encoder, not a classifier)")
            )
        for key, value in found.items():
            parts.setdefault(key, []).append(value)

    with tqdm(total=len(starts), unit="window", desc="encoding", disable=not progress) as bar:
        batch: list[np.ndarray] = []
        for _, x in recording.windows(window, stride, pad_tail):
            batch.append(x)
            if len(batch) == batch_size:
                run(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            run(batch)
            bar.update(len(batch))
    result = {key: np.concatenate(values).astype(np.float32) for key, values in parts.items()}
    if "logits" in result:
        shifted = result["logits"].astype(np.float64)
        shifted = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        result["probabilities"] = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    result.update(
        window_start_s=starts / SAMPLING_RATE,
        channels=np.asarray(recording.channels),
        source_channels=np.asarray(recording.source_channels),
        sfreq=np.asarray(SAMPLING_RATE),
        steps=np.asarray(steps),
    )
    return result


# ---------------------------------------------------------------------------------------------
# Command line: eegdino-tf encode
# ---------------------------------------------------------------------------------------------


def configure_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``encode`` sub-command."""
    parser = subparsers.add_parser(
        "encode",
        help="encode an EEG recording (EDF/BDF, or any file MNE reads) into embeddings (.npz)",
        description=(
            "Pick channels, convert to microvolts, resample to 200 Hz, cut windows and encode "
            "them; write the per-window embeddings (or a classifier's logits) to an .npz file."
        ),
    )
    parser.add_argument("input", help="EDF/BDF file, or any recording mne.io.read_raw reads")
    parser.add_argument("--weights", required=True, help="weight file (.safetensors or .pt)")
    parser.add_argument("--output", "-o", required=True, help="the .npz file to write")
    parser.add_argument(
        "--channels",
        help="comma-separated channels in the order the weights expect (default: the 19 "
        "standard 10-20 channels in TUH order: " + ",".join(STANDARD_CHANNELS) + ")",
    )
    parser.add_argument("--unit", help="unit of the data if the file's is missing or wrong")
    parser.add_argument("--window", type=float, default=10.0, help="seconds (whole; default 10)")
    parser.add_argument("--stride", type=float, help="seconds between windows (default: window)")
    parser.add_argument("--pad-tail", action="store_true", help="zero-pad the last window")
    parser.add_argument("--tokens", action="store_true", help="also save all tokens")
    parser.add_argument(
        "--classifier", action="store_true", help="the weights are a finetuned classifier"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch")
    parser.add_argument(
        "--norm-groups",
        type=int,
        help="GroupNorm groups of a custom-size model (released sizes need none)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.set_defaults(func=_run_encode)


def _run_encode(args: argparse.Namespace) -> int:
    import eegdino_tf
    from eegdino_tf.files import atomic_output

    overrides = {} if args.norm_groups is None else {"norm_groups": args.norm_groups}
    load = eegdino_tf.load_classifier if args.classifier else eegdino_tf.load_encoder
    with atomic_output(args.output, force=args.force) as tmp:
        model = load(args.weights, **overrides)
        result = encode_recording(
            model,
            args.input,
            channels=args.channels,
            unit=args.unit,
            window=args.window,
            stride=args.stride,
            batch_size=args.batch_size,
            tokens=args.tokens,
            pad_tail=args.pad_tail,
            progress=sys.stderr.isatty(),
        )
        with open(tmp, "wb") as file:
            np.savez(file, **result)
    for line in result["steps"]:
        print(f"- {line}")
    arrays = ", ".join(
        f"{key} {list(value.shape)}"
        for key, value in result.items()
        if key not in ("channels", "source_channels", "steps", "sfreq")
    )
    print(f"wrote {args.output}: {arrays}")
    return 0
