"""Streaming resampling to 200 Hz and cutting into windows, with bounded memory.

:class:`Windowing` gives :class:`~eegdino_tf.io.sources.Recording` its ``resampled``,
``window_starts``, ``describe_windows`` and ``windows`` methods.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import RecordingError, require

#: Seconds of 200 Hz output resampled per chunk when streaming.
CHUNK_SECONDS = 60.0


def resample_factors(sfreq: float) -> tuple[int, int]:
    """``(up, down)`` with ``sfreq * up / down == 200`` exactly (coprime integers)."""
    if not (math.isfinite(sfreq) and sfreq > 0):
        raise RecordingError(f"invalid sampling rate {sfreq!r} Hz")
    rate = Fraction(sfreq).limit_denominator(1000)
    if abs(float(rate) - sfreq) > 1e-9 * sfreq:
        raise RecordingError(f"sampling rate {sfreq!r} Hz is not a ratio of small integers")
    ratio = Fraction(int(SAMPLING_RATE)) / rate
    return ratio.numerator, ratio.denominator


def seconds_to_samples(seconds: float, what: str, *, whole_seconds: bool) -> int:
    """``seconds`` as a count of 200 Hz samples; an error unless it is whole (and positive).

    ``what`` is the argument's name in the error message.
    """
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


class Windowing:
    """Resampling and windowing over ``read(start, stop)`` (native samples ``[C, n]`` µV).

    A mixin: the class using it provides ``channels``, ``sfreq``, ``n_samples``, ``up``,
    ``down`` (from :func:`resample_factors`) and ``read``.
    """

    channels: tuple[str, ...]
    sfreq: float
    n_samples: int
    up: int
    down: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sfreq

    @property
    def n_resampled(self) -> int:
        """Samples per channel at 200 Hz (``ceil(n_samples * up / down)``)."""
        return -(-self.n_samples * self.up // self.down)

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
        size = seconds_to_samples(window, "window", whole_seconds=True)
        step = size if stride is None else seconds_to_samples(stride, "stride", whole_seconds=False)
        total = self.n_resampled
        starts = list(range(0, total - size + 1, step)) if total >= size else []
        if pad_tail:
            covered, following = (starts[-1] + size, starts[-1] + step) if starts else (0, 0)
            if covered < total and following < total:
                starts.append(following)
        if not starts:
            raise RecordingError(
                f"the recording is {self.duration_s:g} s long, shorter than one {window:g} s "
                f"window; use a shorter window, or pad_tail=True to zero-pad it"
            )
        return np.asarray(starts, dtype=np.int64)

    def describe_windows(
        self, window: float = 10, stride: float | None = None, pad_tail: bool = False
    ) -> str:
        """One line saying how :meth:`windows` cuts this recording."""
        starts = self.window_starts(window, stride, pad_tail)
        size = seconds_to_samples(window, "window", whole_seconds=True)
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
        size = seconds_to_samples(window, "window", whole_seconds=True)
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
