"""Windows for a calibrated full-integer int8 export, cut from the user's own recordings.

:func:`calibration_set` opens recordings as ``encode`` does (:func:`eegdino_tf.io.open_recording`:
the same channel matching and units), takes them at the export's rate (a recording at another
rate is resampled with ``scipy.signal.resample_poly``, the filter ``encode`` uses, over the whole
recording) and cuts non-overlapping windows of the export's length from 0 s, the tail dropped.
At most :data:`MAX_WINDOWS` windows are kept, spread evenly over all recordings; every
:data:`HELD_OUT_EVERY`-th is held out (never calibrated on) to check the export. Both sets are
also used with a blink added (:func:`with_blink`): calibrating on them keeps the int8 ranges wide
enough for artifacts, and the export is checked on them too.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.errors import ExportError, RecordingError, require

#: Windows taken at most, spread evenly over all recordings (a fifth of them held out).
MAX_WINDOWS = 250
#: Every ``HELD_OUT_EVERY``-th window (the 5th, 10th, ...) is held out.
HELD_OUT_EVERY = 5
#: The fewest calibration and held-out windows an export accepts.
MIN_CALIBRATION = 8
MIN_HELD_OUT = 2
#: The artifact added to windows: a blink, a half-sine of this peak (uV) and length (s) on
#: every channel.
BLINK_UV = 300.0
BLINK_S = 0.3
#: Every ``BLINK_EVERY``-th calibration window is calibrated on with a blink as well.
BLINK_EVERY = 4
#: A manifest file (a finetune manifest CSV, or a plain list of paths, one a line) rather than
#: a glob pattern of recordings.
MANIFEST_SUFFIXES = (".csv", ".txt")


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Windows ``[N, C, T]`` float32 microvolts at the export's rate, split in two.

    Attributes:
        calibration: the windows the int8 ranges are calibrated on.
        held_out: the windows the export is checked on (never calibrated on).
        held_out_where: where each held-out window comes from (``"rec.edf at 12 s"``).
        recordings: how many recordings (or arrays) the windows come from.
        steps: what was done to the recordings, one line each.
    """

    calibration: np.ndarray
    held_out: np.ndarray
    held_out_where: tuple[str, ...]
    recordings: int
    steps: tuple[str, ...] = ()

    def representative(self, sfreq: float) -> np.ndarray:
        """What the converter calibrates on ``[N + N / BLINK_EVERY, C, T]``: every calibration
        window, and every :data:`BLINK_EVERY`-th again with a blink at a place that varies."""
        blinks = [
            with_blink(x, sfreq, at=(i * 0.37) % 1.0)
            for i, x in enumerate(self.calibration[::BLINK_EVERY])
        ]
        return np.concatenate([self.calibration, np.stack(blinks)]).astype(np.float32)


def with_blink(x: np.ndarray, sfreq: float, at: float = 0.5) -> np.ndarray:
    """``x`` (``[..., C, T]`` microvolts at ``sfreq``) plus a blink: a :data:`BLINK_UV` half-sine
    of :data:`BLINK_S` on every channel, starting at fraction ``at`` of the window's free span."""
    samples = x.shape[-1]
    length = min(samples, round(BLINK_S * sfreq))
    start = round(at * (samples - length))
    blink = np.zeros(samples, np.float32)
    blink[start : start + length] = BLINK_UV * np.sin(np.pi * (np.arange(length) + 0.5) / length)
    return (x + blink).astype(np.float32)


def calibration_set(
    source: str | os.PathLike | np.ndarray,
    *,
    sfreq: float,
    samples: int,
    channels: Sequence[str],
) -> CalibrationSet:
    """The calibration and held-out windows ``[N, len(channels), samples]`` at ``sfreq`` Hz.

    ``source`` is a glob pattern of recordings (anything :func:`~eegdino_tf.io.open_recording`
    reads), a manifest (``.csv``: a finetune manifest, whose paths are used; ``.txt``: one path
    a line; both relative to the manifest's folder), or an array of windows ``[N, C, T]``.
    ``channels`` are picked by name from recordings. An :class:`ExportError` when there are
    fewer than :data:`MIN_CALIBRATION` + :data:`MIN_HELD_OUT` windows.
    """
    if isinstance(source, np.ndarray):
        expected = (len(channels), samples)
        if source.ndim != 3 or source.shape[1:] != expected:
            raise ExportError(
                f"calibration windows have shape {source.shape}; expected [N, {expected[0]}, "
                f"{expected[1]}] (the export's channels and samples)"
            )
        if not np.all(np.isfinite(source)):
            raise ExportError("calibration windows hold NaN or Inf; expected finite microvolts")
        windows = list(source.astype(np.float32))
        where = [f"window {i}" for i in range(len(windows))]
        return _split(windows, where, 1, ())
    paths = recordings_of(source)
    plan = []  # (path, start sample at sfreq) for every window of every recording
    opened = []
    for path in paths:
        recording, factors = _opened(path, channels, sfreq)
        length = -(-recording.n_samples * factors[0] // factors[1])
        plan += [(len(opened), start) for start in range(0, length - samples + 1, samples)]
        opened.append((path, recording, factors))
    keep = _spread(len(plan))
    by_recording: dict[int, list[int]] = {}
    for i in keep:
        by_recording.setdefault(plan[i][0], []).append(plan[i][1])
    windows, where, steps = [], [], []
    for index, starts in by_recording.items():
        path, recording, (up, down) = opened[index]
        data = recording.read(0, recording.n_samples)
        if (up, down) != (1, 1):
            signal = require("scipy.signal", "edf")
            data = signal.resample_poly(data, up, down, axis=-1)
            steps.append(
                f"{path.name}: resampled {recording.sfreq:g} Hz -> {sfreq:g} Hz with "
                f"scipy.signal.resample_poly (up {up}, down {down})"
            )
        for start in starts:
            windows.append(data[:, start : start + samples].astype(np.float32))
            where.append(f"{path.name} at {start / sfreq:g} s")
    return _split(windows, where, len(paths), tuple(steps))


def recordings_of(source: str | os.PathLike) -> list[Path]:
    """The recordings a glob pattern or a manifest file names, in a stable order."""
    path = Path(source)
    if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        if path.suffix.lower() == ".csv":
            from eegdino_tf.finetune.manifest import read_manifest

            found = [row.path for row in read_manifest(path)]
        else:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            found = [path.parent / line.strip() for line in lines if line.strip()]
        missing = [str(p) for p in found if not Path(p).is_file()]
        if missing:
            raise ExportError(f"{path} names recordings that do not exist: {missing[:3]}")
        return [Path(p) for p in found]
    found = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
    if not found:
        raise ExportError(
            f"calibration {str(source)!r} matches no file; expected a glob pattern of recordings "
            f"or a manifest ({', '.join(MANIFEST_SUFFIXES)})"
        )
    return found


def _opened(path: Path, channels: Sequence[str], sfreq: float) -> tuple[Any, tuple[int, int]]:
    """The recording with ``channels`` picked, and the factors from its rate to ``sfreq``."""
    from eegdino_tf.io import open_recording

    try:
        recording = open_recording(path, channels=list(channels))
        ratio = Fraction(sfreq).limit_denominator(1000) / Fraction(
            recording.sfreq
        ).limit_denominator(1000)
    except RecordingError as err:
        raise ExportError(f"calibration recording {path}: {err}") from None
    return recording, (ratio.numerator, ratio.denominator)


def _spread(count: int) -> list[int]:
    """Indices of at most :data:`MAX_WINDOWS` of ``count`` windows, evenly spread."""
    if count <= MAX_WINDOWS:
        return list(range(count))
    return sorted({round(i) for i in np.linspace(0, count - 1, MAX_WINDOWS)})


def _split(
    windows: list[np.ndarray], where: list[str], recordings: int, steps: tuple[str, ...]
) -> CalibrationSet:
    """Every :data:`HELD_OUT_EVERY`-th window held out, the rest calibrated on."""
    held = [i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for i in range(len(windows))]
    calibration = [w for w, h in zip(windows, held, strict=True) if not h]
    held_out = [w for w, h in zip(windows, held, strict=True) if h]
    if len(calibration) < MIN_CALIBRATION or len(held_out) < MIN_HELD_OUT:
        need = MIN_HELD_OUT * HELD_OUT_EVERY
        raise ExportError(
            f"calibration gives {len(windows)} window(s) from {recordings} recording(s); "
            f"expected at least {need} (every {HELD_OUT_EVERY}th held out to check the export): "
            "give longer or more recordings"
        )
    return CalibrationSet(
        calibration=np.stack(calibration),
        held_out=np.stack(held_out),
        held_out_where=tuple(w for w, h in zip(where, held, strict=True) if h),
        recordings=recordings,
        steps=steps,
    )
