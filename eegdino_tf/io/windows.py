"""Streaming resampling to 200 Hz and cutting into windows, with bounded memory.

:class:`Stream` is some channels at one native rate; :class:`Windowing` gives
:class:`~eegdino_tf.io.sources.Recording` (one stream per native rate) its ``resampled``,
``window_starts``, ``describe_windows`` and ``windows`` methods.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import RecordingError, require

#: Seconds of 200 Hz output resampled per chunk when streaming.
CHUNK_SECONDS = 60.0
#: The largest resampling factor (up or down) accepted: ``resample_poly``'s filter has
#: ``20 * max(up, down) + 1`` taps (8 MB of float64 at this limit); 173.61 Hz, for one, is
#: up 20000 / down 17361.
MAX_RESAMPLE_FACTOR = 50_000
#: The lowest native sampling rate (Hz) resampled to 200 Hz: it bounds the 200 Hz signal at
#: 20 samples per native sample.
MIN_SAMPLING_RATE = 10.0


def resample_factors(sfreq: float) -> tuple[int, int]:
    """``(up, down)`` with ``sfreq * up / down == 200`` exactly (coprime integers).

    An error for a rate below :data:`MIN_SAMPLING_RATE`, or unless both factors are at most
    :data:`MAX_RESAMPLE_FACTOR`.
    """
    if not (math.isfinite(sfreq) and sfreq > 0):
        raise RecordingError(f"invalid sampling rate {sfreq!r} Hz")
    if sfreq < MIN_SAMPLING_RATE:
        raise RecordingError(
            f"sampling rate {sfreq:g} Hz is below {MIN_SAMPLING_RATE:g} Hz (MIN_SAMPLING_RATE)"
        )
    rate = Fraction(sfreq).limit_denominator(1000)
    if abs(float(rate) - sfreq) > 1e-9 * sfreq:
        raise RecordingError(f"sampling rate {sfreq!r} Hz is not a ratio of small integers")
    ratio = Fraction(int(SAMPLING_RATE)) / rate
    if max(ratio.numerator, ratio.denominator) > MAX_RESAMPLE_FACTOR:
        raise RecordingError(
            f"sampling rate {sfreq!r} Hz needs resampling by up {ratio.numerator} / down "
            f"{ratio.denominator} to reach {SAMPLING_RATE:g} Hz; expected factors of at most "
            f"{MAX_RESAMPLE_FACTOR} (MAX_RESAMPLE_FACTOR)"
        )
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


def window_samples(window: float) -> int:
    """A window of ``window`` seconds as its count of 200 Hz samples: the one place a window's
    length is computed (an error unless it is a positive whole number of seconds)."""
    return seconds_to_samples(window, "window", whole_seconds=True)


def event_window_starts(
    starts: np.ndarray, start_s: float, end_s: float, window: float = 10
) -> np.ndarray:
    """The window starts (200 Hz samples, ``[W]`` int64) among ``starts`` whose whole window lies
    inside the event ``[start_s, end_s]`` seconds; an error if none does."""
    size = window_samples(window)
    first, last = round(start_s * SAMPLING_RATE), round(end_s * SAMPLING_RATE)
    inside = starts[(starts >= first) & (starts + size <= last)]
    if not len(inside):
        raise RecordingError(
            f"the event [{start_s:g}, {end_s:g}] s holds no whole window of window={window:g} s; "
            "use a shorter window"
        )
    return inside


@dataclasses.dataclass(frozen=True)
class Stream:
    """Channels of a recording that share one native rate, read and resampled together.

    ``rows`` are their places in the recording's channel order; ``read(start, stop)`` gives
    native samples ``[len(rows), stop - start]`` in microvolts; ``up``/``down`` are the
    factors to 200 Hz (:func:`resample_factors`).
    """

    rows: tuple[int, ...]
    sfreq: float
    n_samples: int
    read: Callable[[int, int], np.ndarray] = dataclasses.field(repr=False)
    up: int = dataclasses.field(init=False)
    down: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        up, down = resample_factors(self.sfreq)
        object.__setattr__(self, "up", up)
        object.__setattr__(self, "down", down)

    @functools.cached_property
    def _filter(self) -> np.ndarray:
        """``resample_poly``'s own anti-aliasing filter for ``up``/``down``, designed once."""
        signal = require("scipy.signal", "edf")
        half = 10 * max(self.up, self.down)
        return signal.firwin(2 * half + 1, 1 / max(self.up, self.down), window=("kaiser", 5.0))

    @property
    def margin(self) -> int:
        """Native samples read beyond each end of a span (more than the anti-aliasing filter's
        half-length; 0 at 200 Hz): 200 Hz samples ``[start, stop)`` are final once the first
        ``ceil(stop * down / up) + margin`` native samples are in."""
        return 0 if (self.up, self.down) == (1, 1) else 10 * max(self.up, self.down) // self.up + 2

    @property
    def n_resampled(self) -> int:
        """Samples at 200 Hz (``ceil(n_samples * up / down)``, ``resample_poly``'s length)."""
        return -(-self.n_samples * self.up // self.down)

    def resampled(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` at 200 Hz, float64 ``[len(rows), stop - start]``: equal to
        the same part of ``resample_poly`` over the whole stream.

        Reads only the native span plus a margin on both sides wider than the anti-aliasing
        filter, beginning on a sample where the input and output grids coincide.
        """
        up, down = self.up, self.down
        if (up, down) == (1, 1):
            return self.read(start, stop)
        signal = require("scipy.signal", "edf")
        margin = self.margin
        first = max(0, start * down // up - margin) // down * down  # on the common grid
        last = min(self.n_samples, -(-stop * down // up) + margin)
        y = signal.resample_poly(self.read(first, last), up, down, axis=-1, window=self._filter)
        offset = first * up // down  # the 200 Hz index of y[:, 0]
        return y[:, start - offset : stop - offset]


class Windowing:
    """Resampling and windowing over ``streams`` (:class:`Stream`, together all channels).

    A mixin: the class using it provides ``channels`` and ``streams``. Each stream is
    resampled from its own rate to 200 Hz; the streams span the same time, and the recording
    at 200 Hz is as long as the shortest of them (one that rounds up to one more sample has
    that sample dropped).
    """

    channels: tuple[str, ...]
    streams: tuple[Stream, ...]

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return min(stream.n_samples / stream.sfreq for stream in self.streams)

    @property
    def n_resampled(self) -> int:
        """Samples per channel at 200 Hz."""
        return min(stream.n_resampled for stream in self.streams)

    def resampled(self, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
        """The whole recording at 200 Hz, as consecutive float64 blocks ``[C, n]`` of microvolts.

        The concatenation equals ``resample_poly`` of each stream's whole signal.
        """
        block = max(1, round(chunk_seconds * SAMPLING_RATE))
        total = self.n_resampled
        for start in range(0, total, block):
            stop = min(start + block, total)
            out = np.empty((len(self.channels), stop - start))
            for stream in self.streams:
                out[list(stream.rows)] = stream.resampled(start, stop)
            yield out

    def window_starts(
        self, window: float = 10, stride: float | None = None, pad_tail: bool = False
    ) -> np.ndarray:
        """Start samples (at 200 Hz) of the windows :meth:`windows` yields; ``[W]`` int64.

        An error if the recording is shorter than one window (unless ``pad_tail``).
        """
        size = window_samples(window)
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
        size = window_samples(window)
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
        size = window_samples(window)
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
