"""Recordings opened for streaming: :class:`Recording` and :func:`open_recording`, with the
EDF/BDF, MNE ``Raw`` and array adapters.

An adapter picks the channels (:func:`~eegdino_tf.io.channels.pick`), finds the factor to
microvolts and returns a :class:`Recording` around ``reader(start, stop)``, which reads native
samples ``[C, stop - start]`` in microvolts on demand.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import RecordingError, require
from eegdino_tf.io.channels import (
    check_unit,
    describe_pick,
    describe_units,
    is_eeg_label,
    pick,
    unit_to_uv,
)
from eegdino_tf.io.edf import open_edf
from eegdino_tf.io.windows import Stream, Windowing

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Recording(Windowing):
    """An EEG recording opened for streaming: picked channels, microvolts, native rates.

    Make one with :func:`open_recording`. Nothing but the header is read until data is asked
    for; :meth:`windows` streams model-ready windows in chunks of bounded size (the
    resampling and windowing methods are :class:`~eegdino_tf.io.windows.Windowing`'s).

    Attributes:
        channels: the channel names in model order (as requested, or
            :data:`~eegdino_tf.io.channels.STANDARD_CHANNELS`).
        source_channels: the matching labels in the source.
        steps: what was done to the data, one line per step.
        streams: the channels by native rate (:class:`~eegdino_tf.io.windows.Stream`, one
            for each rate among the picked channels), each resampled to 200 Hz on its own.
    """

    channels: tuple[str, ...]
    source_channels: tuple[str, ...]
    steps: list[str]
    streams: tuple[Stream, ...]

    def __post_init__(self) -> None:
        if len(self.streams) > 1:
            self.steps.append(
                f"resampled each channel from its own rate to {SAMPLING_RATE:g} Hz with "
                "scipy.signal.resample_poly (anti-aliased, streamed in chunks): "
                + ", ".join(
                    f"{self.source_channels[row]} {stream.sfreq:g} Hz (up {stream.up}, "
                    f"down {stream.down})"
                    for stream in self.streams
                    for row in stream.rows
                )
            )
        elif (self.stream.up, self.stream.down) == (1, 1):
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
    def stream(self) -> Stream:
        """The one stream of a recording whose channels share a native rate."""
        if len(self.streams) > 1:
            raise RecordingError(
                "the channels have different native rates ("
                + ", ".join(f"{s.sfreq:g} Hz" for s in self.streams)
                + "): read them by native rate through recording.streams"
            )
        return self.streams[0]

    @property
    def sfreq(self) -> float:
        """The native sampling rate in Hz (channels at one rate only)."""
        return self.stream.sfreq

    @property
    def n_samples(self) -> int:
        """Native samples per channel (channels at one rate only)."""
        return self.stream.n_samples

    @property
    def up(self) -> int:
        """The upsampling factor to 200 Hz (channels at one rate only)."""
        return self.stream.up

    @property
    def down(self) -> int:
        """The downsampling factor to 200 Hz (channels at one rate only)."""
        return self.stream.down

    def read(self, start: int, stop: int) -> np.ndarray:
        """Native samples ``[start, stop)`` of the picked channels: ``[C, stop - start]`` µV
        (channels at one rate only)."""
        if not 0 <= start <= stop <= self.n_samples:
            raise RecordingError(
                f"samples [{start}, {stop}) are outside the recording (0..{self.n_samples})"
            )
        return self.stream.read(start, stop)


def _one_stream(channels: int, sfreq: float, n_samples: int, reader: Callable) -> tuple[Stream]:
    """The streams of a source whose ``channels`` all run at ``sfreq``."""
    return (Stream(tuple(range(channels)), float(sfreq), n_samples, reader),)


def _open_edf(
    path: Path, bdf: bool, channels: Sequence[str] | str | None, unit: str | None
) -> Recording:
    """A :class:`Recording` over an EDF/BDF file: header now, data records on demand.

    The picked channels are grouped by samples per record, one stream each.
    """
    edf = open_edf(path, bdf)
    labels = edf.labels
    eeg = [is_eeg_label(label) for label in labels]
    picked, names = pick(labels, eeg, channels, str(path))
    units = [edf.signals[i].unit if unit is None else unit for i in picked]
    scales = [unit_to_uv(u, labels[i]) for u, i in zip(units, picked, strict=True)]
    groups: dict[int, list[int]] = {}
    for row, i in enumerate(picked):
        groups.setdefault(edf.signals[i].samples_per_record, []).append(row)
    streams = []
    for spr, rows in groups.items():
        reader = edf.reader([picked[row] for row in rows], [scales[row] for row in rows])
        try:
            streams.append(
                Stream(
                    tuple(rows), edf.signals[picked[rows[0]]].sfreq, edf.num_records * spr, reader
                )
            )
        except RecordingError as err:
            where = ", ".join(repr(labels[picked[row]]) for row in rows)
            raise RecordingError(f"channel(s) {where} of {path}: {err}") from None
    steps = [
        *edf.steps,
        *describe_pick(labels, picked, names, eeg),
        *describe_units(units, scales),
    ]
    return Recording(names, tuple(labels[i] for i in picked), steps, tuple(streams))


def _open_mne(raw: Any, channels: Sequence[str] | str | None) -> Recording:
    """A :class:`Recording` over an ``mne.io.Raw``, read through ``raw.get_data``."""
    mne = require("mne", "mne")
    where = f"MNE {type(raw).__name__}" + (
        f" {Path(raw.filenames[0]).name}" if raw.filenames and raw.filenames[0] else ""
    )
    labels = list(raw.ch_names)
    kinds = raw.get_channel_types()
    eeg = [kinds[i] == "eeg" and is_eeg_label(label) for i, label in enumerate(labels)]
    picked, names = pick(labels, eeg, channels, where)
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
        *describe_pick(labels, picked, names, eeg),
        f"converted {len(picked)} channel(s) from 'V' (MNE's unit) to uV (x1e+06)",
    ]
    source_channels = tuple(labels[i] for i in picked)
    streams = _one_stream(len(picked), raw.info["sfreq"], int(raw.n_times), reader)
    return Recording(names, source_channels, steps, streams)


def _open_array(
    data: np.ndarray,
    sfreq: float | None,
    ch_names: Sequence[str] | None,
    channels: Sequence[str] | str | None,
    unit: str | None,
) -> Recording:
    """A :class:`Recording` over an array ``[channels, samples]`` in ``unit`` (default uV)."""
    if sfreq is None or ch_names is None:
        raise RecordingError("an array source needs sfreq=... and ch_names=[...]")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or data.shape[1] == 0:
        raise RecordingError(
            f"an array source must be [channels, samples] with one row per name in ch_names "
            f"({len(ch_names)}); got shape {data.shape}"
        )
    labels = [str(name) for name in ch_names]
    eeg = [is_eeg_label(label) for label in labels]
    picked, names = pick(labels, eeg, channels, "the array")
    unit = "uV" if unit is None else unit
    scale = unit_to_uv(unit, labels[picked[0]])
    rows = data[picked]

    def reader(start: int, stop: int) -> np.ndarray:
        return rows[:, start:stop].astype(np.float64) * scale

    steps = [
        f"read array: {len(labels)} channel(s) at {float(sfreq):g} Hz, "
        f"{data.shape[1] / float(sfreq):g} s",
        *describe_pick(labels, picked, names, eeg),
        *describe_units([unit] * len(picked), [scale] * len(picked)),
    ]
    streams = _one_stream(len(picked), sfreq, data.shape[1], reader)
    return Recording(names, tuple(labels[i] for i in picked), steps, streams)


def open_recording(
    source: str | os.PathLike | Any,
    *,
    channels: Sequence[str] | str | None = None,
    unit: str | None = None,
    sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
) -> Recording:
    """Open an EEG source for streaming, with its channels picked (see :mod:`eegdino_tf.io`).

    ``source`` is a path (EDF/BDF, read with edfio; any other file is read with
    ``mne.io.read_raw``), an ``mne.io.Raw`` (``preload=False`` is fine: data are read a chunk
    at a time), or an array ``[channels, samples]`` with ``sfreq`` and ``ch_names``.
    ``channels`` lists the channels in model order (a list, or one comma-separated string);
    default: :data:`~eegdino_tf.io.channels.STANDARD_CHANNELS`. ``unit`` overrides the unit an
    EDF/BDF file declares, or gives an array's unit (default ``"uV"``); MNE data are always
    volts.
    """
    check_unit(unit)
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
