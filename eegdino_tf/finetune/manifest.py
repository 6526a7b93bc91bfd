"""Manifests of labelled recordings: parsing, class names, the split, and the windows.

The manifest has a header ``path,label`` (one label per whole recording) or
``path,start_s,end_s,label`` (labelled events), and optionally a ``subject`` column; paths are
relative to the manifest's folder. Labels are any strings, mapped to class indices in sorted
order. Windows come from the recording pipeline (:func:`eegdino_tf.io.open_recording`: the
same channel matching, units and resampling as ``encode``): every window of a whole recording,
or the windows lying inside an event. Recordings are split into training and held-out sets by
file or by subject, stratified by label, seeded.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import MAX_CLASSES
from eegdino_tf.errors import ConfigError, RecordingError
from eegdino_tf.io import Recording, open_recording
from eegdino_tf.io.windows import CHUNK_SECONDS, event_window_starts, window_samples


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One manifest line: a recording (or an event in it) and its label.

    Attributes:
        row: the line's number in the CSV (the header is line 1), or the item's index + 1
            for rows given from Python.
        path: the recording, resolved against the manifest's folder; from Python also an
            :class:`InMemorySource` holding an ``mne.io.Raw``.
        label: the class name.
        start_s, end_s: the event's span in seconds (``None`` for a whole recording).
        subject: the subject id, if the manifest has a ``subject`` column.
    """

    row: int
    path: Path | InMemorySource
    label: str
    start_s: float | None = None
    end_s: float | None = None
    subject: str | None = None

    def where(self) -> str:
        return f"manifest row {self.row} ({self.name})"

    @property
    def identity(self) -> Any:
        """The recording itself: the file's ``(device, inode)`` (so a symlink, a hard link or
        another spelling of the path is the same file), or the in-memory source."""
        if isinstance(self.path, Path):
            stat = self.path.stat()
            return (stat.st_dev, stat.st_ino)
        return self.path

    @property
    def name(self) -> str:
        """The file name, or for an in-memory recording its type and row."""
        if isinstance(self.path, Path):
            return self.path.name
        return f"{type(self.path.raw).__name__} of row {self.row}"


@dataclasses.dataclass(eq=False)
class InMemorySource:
    """An ``mne.io.Raw`` given from Python, hashed by identity (Raw's own hash reads data)."""

    raw: Any


def opened(source: Path | InMemorySource, channels: Any) -> Recording:
    """The recording a row names, opened (headers only) with ``channels`` picked."""
    return open_recording(getattr(source, "raw", source), channels=channels)


def rows_from_python(items: Sequence[dict[str, Any]]) -> list[ManifestRow]:
    """Manifest rows given in Python: dicts with ``source`` (a path or an ``mne.io.Raw``) and
    ``label``, optionally ``start_s`` / ``end_s`` (an event) and ``subject``; checked like a
    CSV's rows."""
    rows, held = [], {}
    for number, item in enumerate(items, start=1):
        where = f"row {number}"
        unknown = set(item) - {"source", "label", "start_s", "end_s", "subject"}
        if unknown or "source" not in item or not str(item.get("label", "")).strip():
            raise RecordingError(
                f"{where}: needs source= and a non-empty label= (and optionally start_s=, "
                f"end_s=, subject=), got keys {sorted(item)}"
            )
        source = item["source"]
        if isinstance(source, (str, os.PathLike)):
            source = Path(source)
            if not source.is_file():
                raise RecordingError(f"{where}: {source}: no such file")
        elif isinstance(source, np.ndarray):
            raise RecordingError(f"{where}: wrap an array in mne.io.RawArray (with its sfreq)")
        else:
            source = held.setdefault(id(source), InMemorySource(source))
        start, end = item.get("start_s"), item.get("end_s")
        if (start is None) != (end is None):
            raise RecordingError(f"{where}: an event needs both start_s= and end_s=")
        if start is not None and not (0 <= float(start) < float(end)):
            raise RecordingError(f"{where}: needs 0 <= start_s < end_s, got {start} and {end}")
        subject = item.get("subject")
        rows.append(
            ManifestRow(
                number,
                source,
                str(item["label"]).strip(),
                None if start is None else float(start),
                None if end is None else float(end),
                None if subject is None else str(subject),
            )
        )
    if not rows:
        raise RecordingError("no recordings given")
    return rows


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """The rows of a manifest CSV, checked: encoding, fields, columns, files, labels, event
    spans, and no recording listed twice."""
    manifest = Path(path)
    if not manifest.is_file():
        raise RecordingError(f"{manifest}: no such manifest file")
    data = manifest.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RecordingError(
            f"{manifest} line {line}: not UTF-8 text (byte {data[err.start]:#04x}); a manifest "
            "is a CSV file saved as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=_EXTRA)
    try:
        rows = _parse_rows(manifest, reader)
    except csv.Error as err:
        line = reader.line_num + 1  # the line being read when it failed
        raise RecordingError(f"{manifest} line {line}: not a valid CSV ({err})") from None
    if not rows:
        raise RecordingError(f"{manifest} lists no recordings")
    _refuse_duplicates(manifest, rows)
    return rows


#: Where ``csv.DictReader`` puts the fields of a line beyond the header's.
_EXTRA = "\0extra"
_HEADER = "the header is path,label or path,start_s,end_s,label (plus an optional subject)"


def _parse_rows(manifest: Path, reader: csv.DictReader) -> list[ManifestRow]:
    columns = [c.strip() for c in reader.fieldnames or []]
    allowed = {"path", "label", "start_s", "end_s", "subject"}
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        shown = ", ".join(repr(c[:40]) for c in unknown[:5])
        raise RecordingError(f"{manifest}: unknown column(s) {shown}; {_HEADER}")
    missing = [c for c in ("path", "label") if c not in columns]
    events = "start_s" in columns or "end_s" in columns
    if events:
        missing += [c for c in ("start_s", "end_s") if c not in columns]
    if missing:
        raise RecordingError(
            f"{manifest}: missing column(s) {', '.join(map(repr, missing))}; {_HEADER}"
        )
    rows = []
    for raw in reader:
        number = reader.line_num
        if _EXTRA in raw:
            raise RecordingError(
                f"{manifest} line {number}: {len(columns) + len(raw[_EXTRA])} fields for the "
                f'header\'s {len(columns)}; quote a value that holds a comma ("a,b")'
            )
        values = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(values.values()):
            continue  # a blank line
        rows.append(_parse_row(manifest, number, values, events, "subject" in columns))
    return rows


def _refuse_duplicates(manifest: Path, rows: Sequence[ManifestRow]) -> None:
    """An error if one recording (by identity: a symlink or a second path to the same file
    counts) is listed whole twice."""
    first: dict[Any, ManifestRow] = {}
    for row in rows:
        if row.start_s is not None:
            continue  # events: one recording on many lines
        seen = first.setdefault(row.identity, row)
        if seen is not row:
            raise RecordingError(
                f"{manifest} lines {seen.row} and {row.row} list the same recording "
                f"({seen.name}, {row.name}); list each recording once"
            )


def _parse_row(
    manifest: Path, number: int, values: dict[str, str], events: bool, subjects: bool
) -> ManifestRow:
    where = f"{manifest} line {number}"
    if not values.get("path"):
        raise RecordingError(f"{where}: empty path")
    path = Path(values["path"])
    path = path if path.is_absolute() else manifest.parent / path
    if not path.is_file():
        raise RecordingError(f"{where}: {values['path']}: no such file ({path})")
    label = values.get("label", "")
    if not label:
        raise RecordingError(f"{where}: empty label")
    start = end = None
    if events:
        try:
            start, end = float(values["start_s"]), float(values["end_s"])
        except ValueError:
            raise RecordingError(
                f"{where}: start_s and end_s must be numbers of seconds, got "
                f"{values['start_s']!r} and {values['end_s']!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise RecordingError(f"{where}: needs 0 <= start_s < end_s, got {start:g} and {end:g}")
    subject = values.get("subject") if subjects else None
    if subjects and not subject:
        raise RecordingError(f"{where}: empty subject")
    return ManifestRow(number, path, label, start, end, subject)


def label_mapping(rows: Sequence[ManifestRow]) -> dict[str, int]:
    """Class name -> index, in sorted order; an error for fewer than 2 classes or more than
    :data:`~eegdino_tf.config.MAX_CLASSES`."""
    names = sorted({row.label for row in rows})
    if len(names) < 2:
        raise RecordingError(
            f"the manifest has {len(names)} class(es) ({', '.join(names)}); a classifier needs "
            "at least 2"
        )
    if len(names) > MAX_CLASSES:
        raise RecordingError(
            f"the manifest has {len(names)} classes; a classifier has at most {MAX_CLASSES} "
            "(MAX_CLASSES)"
        )
    return {name: index for index, name in enumerate(names)}


@dataclasses.dataclass
class WindowPlan:
    """Where each window comes from: ``windows[path] = [(start sample, class), ...]``."""

    windows: dict[Path, list[tuple[int, int]]]
    n_channels: int

    @property
    def count(self) -> int:
        return sum(len(w) for w in self.windows.values())

    def labels(self) -> np.ndarray:
        return np.array([c for w in self.windows.values() for _, c in w], dtype=np.int32)


def plan_windows(
    rows: Sequence[ManifestRow],
    classes: dict[str, int],
    *,
    channels: Sequence[str] | str | None = None,
    window: float = 10.0,
    stride: float | None = None,
) -> WindowPlan:
    """Open every recording and list its windows; an error for a row that gives no whole
    window, or whose recording holds a NaN or infinite sample (each recording is read once
    here, so that this is found before training)."""
    size = window_samples(window)

    windows: dict[Path, list[tuple[int, int]]] = defaultdict(list)
    n_channels = None
    starts_of: dict[Path, np.ndarray] = {}
    for row in rows:
        try:
            if row.path not in starts_of:
                recording = opened(row.path, channels)
                if recording.n_resampled < size:
                    raise RecordingError(
                        f"the recording is {recording.duration_s:g} s long, shorter than one "
                        f"window={window:g} s; use a shorter window or leave it out"
                    )
                _check_finite(recording)
                starts_of[row.path] = recording.window_starts(window, stride)
                n_channels = n_channels or len(recording.channels)
                if len(recording.channels) != n_channels:
                    raise RecordingError("channel count differs from the others")
            starts = starts_of[row.path]
            if row.start_s is not None:
                starts = event_window_starts(starts, row.start_s, row.end_s, window)
        except RecordingError as err:
            raise RecordingError(f"{row.where()}: {err}") from None
        windows[row.path].extend((int(s), classes[row.label]) for s in starts)
    for path in windows:
        windows[path].sort()
    return WindowPlan(dict(windows), int(n_channels or 0))


def _check_finite(recording: Recording) -> None:
    """An error naming the channel and time of the first NaN or infinite sample."""
    for stream in recording.streams:
        block = max(1, round(CHUNK_SECONDS * stream.sfreq))
        for start in range(0, stream.n_samples, block):
            finite = np.isfinite(stream.read(start, min(start + block, stream.n_samples)))
            if not finite.all():
                column = np.flatnonzero(~finite.all(axis=0))[0]
                row = np.flatnonzero(~finite[:, column])[0]
                raise RecordingError(
                    f"channel {recording.channels[stream.rows[row]]} holds a NaN or infinite "
                    f"sample at {(start + column) / stream.sfreq:.3f} s; fine-tuning needs "
                    "finite samples (interpolate or crop the recording)"
                )


def split_rows(
    rows: Sequence[ManifestRow],
    *,
    split_by: str = "file",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """``(train, held_out)`` rows: whole files (or subjects) go to one side, stratified by each
    group's most common label, so both sides get every class that has groups enough."""
    if split_by not in ("file", "subject"):
        raise ConfigError(f"split_by={split_by!r} must be 'file' or 'subject'")
    if not 0 < float(val_fraction) < 1:
        raise ConfigError(f"val_fraction={val_fraction!r} must be between 0 and 1")
    if split_by == "subject" and any(row.subject is None for row in rows):
        raise RecordingError("split_by='subject' needs a 'subject' column in the manifest")
    groups: dict[str, list[ManifestRow]] = defaultdict(list)
    first_row: dict[Any, int] = {}  # each recording: named by the first row with it
    for row in rows:
        file_key = f"recording of row {first_row.setdefault(row.identity, row.row):06d}"
        groups[file_key if split_by == "file" else str(row.subject)].append(row)
    by_label: dict[str, list[str]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        by_label[Counter(r.label for r in members).most_common(1)[0][0]].append(key)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_label):
        keys = list(by_label[label])
        rng.shuffle(keys)
        if len(keys) >= 2:
            held.update(keys[: min(len(keys) - 1, max(1, round(val_fraction * len(keys))))])
    what = "files" if split_by == "file" else "subjects"
    if not held:
        raise RecordingError(
            f"split_by={split_by!r} with val_fraction={val_fraction:g} leaves the held-out split "
            f"empty ({len(groups)} {what}, no class with 2 or more); add recordings"
        )
    train = [r for k, members in groups.items() if k not in held for r in members]
    val = [r for k, members in groups.items() if k in held for r in members]
    if len({r.label for r in train}) < 2:
        raise RecordingError(
            f"split_by={split_by!r} leaves fewer than 2 classes to train on; add {what}"
        )
    return train, val
