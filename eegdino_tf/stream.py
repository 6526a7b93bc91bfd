"""A live recording in, tokens out every hop: :class:`StreamEncoder`.

Chunks of microvolts ``[C, n]`` at the headset's own rate, of any size, go in through
:meth:`StreamEncoder.push`; each is resampled to 200 Hz by :class:`~eegdino_tf.io.windows.Stream`,
the machinery ``encode`` uses (``scipy.signal.resample_poly`` of the whole signal, computed a
span at a time), and a window of ``window`` seconds starting every ``hop`` seconds (the first at
0 s) is encoded as soon as its samples are final: its own and :attr:`~StreamEncoder.lookahead_s`
after it (the anti-aliasing filter's reach: 0 at 200 Hz, 56 ms at 250 Hz). The tokens equal
``encode_recording(model, samples, window=window, stride=hop)`` over everything pushed;
:meth:`~StreamEncoder.flush` ends the recording as ``encode`` sees its end (the windows that
the last samples complete, resampled with nothing after them) and starts over.

The model is a Keras encoder (:func:`eegdino_tf.load_encoder`) or an exported encoder
``.tflite`` file (run by LiteRT through :class:`TFLiteEncoder`; it fixes the channels and the
window). Memory stays bounded by one window and one chunk, however long the stream runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import MAX_CHANNELS, SAMPLING_RATE
from eegdino_tf.errors import ConfigError, ExportError, InputError, require
from eegdino_tf.io.encode import summarize
from eegdino_tf.io.windows import Stream, seconds_to_samples, window_samples

#: The input types a ``.tflite`` encoder may take: float32 microvolts, or int8 (full-integer
#: int8 with ``int8_io``: :class:`TFLiteEncoder` quantizes with the file's scale/zero point).
INPUTS = (np.float32, np.int8)


@dataclasses.dataclass(frozen=True)
class StreamItem:
    """One encoded window.

    Attributes:
        start_s: its start, in seconds from the first sample pushed (since the last reset).
        global_token: token 0, float32 ``[D]``.
        mean_token: the mean of the patch tokens, float32 ``[D]``.
        latency_s: wall time from the start of the :meth:`~StreamEncoder.push` (or
            :meth:`~StreamEncoder.flush`) call that completed the window to its tokens.
    """

    start_s: float
    global_token: np.ndarray
    mean_token: np.ndarray
    latency_s: float


class TFLiteEncoder:
    """An exported encoder ``.tflite`` file (``eegdino-tf export tflite``) run by LiteRT, with
    Keras' ``predict(x, batch_size, verbose)``: ``x [N, C, T]`` -> tokens ``[N, 1 + C*P, D]``,
    so :func:`~eegdino_tf.io.encode_recording` runs it too.

    The file fixes the input ``[batch, channels, samples]`` (read from the interpreter);
    ``channel_names`` are those of its export record (:mod:`eegdino_tf.artifact`), if it has one.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from eegdino_tf import artifact, hardware

        litert = require("ai_edge_litert.interpreter", "export")
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such .tflite file")
        try:
            interpreter = litert.Interpreter(
                model_path=str(self.path), num_threads=threads or hardware.cpu_threads()
            )
        except (ValueError, RuntimeError) as err:
            raise ConfigError(f"{self.path} is not a readable .tflite file: {err}") from None
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        shapes = [tuple(int(d) for d in o["shape"]) for o in outputs]
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 3 or inputs[0]["dtype"] not in INPUTS:
            raise ConfigError(
                f"{self.path} takes {[(tuple(i['shape']), i['dtype'].__name__) for i in inputs]}; "
                "expected one float32 (or int8) input [batch, channels, samples]"
            )
        if len(shapes) != 1 or len(shapes[0]) != 3:
            raise ConfigError(
                f"{self.path} outputs {shapes}; expected an encoder's tokens [batch, 1 + C*P, D]"
            )
        try:
            record = artifact.read_record(self.path)
        except ExportError:  # a file exported before records, or by other means
            record = {}
        if record.get("sfreq", SAMPLING_RATE) != SAMPLING_RATE:
            raise ConfigError(
                f"{self.path} takes input at {record['sfreq']:g} Hz; expected a file that takes "
                f"{SAMPLING_RATE:g} Hz (this stream resamples to {SAMPLING_RATE:g} Hz itself)"
            )
        self.batch, self.channels, self.samples = (int(d) for d in inputs[0]["shape"])
        names = record.get("channels")
        self.channel_names = tuple(names) if names and len(names) == self.channels else None
        self._interpreter = interpreter
        self._input, self._output = inputs[0]["index"], outputs[0]["index"]
        #: An int8-io file's input quantization ``(scale, zero_point)``, else ``None``.
        self.int8_input = inputs[0]["quantization"] if inputs[0]["dtype"] == np.int8 else None
        self._output_quantization = outputs[0]["quantization"]
        interpreter.allocate_tensors()

    def predict(self, x: np.ndarray, batch_size: int | None = None, verbose: Any = 0) -> np.ndarray:
        """Tokens ``[N, 1 + C*P, D]`` float32 of ``x`` ``[N, C, T]`` microvolts (the file's C
        and T), run :attr:`batch` examples at a time (the file's batch; the last part padded).
        An int8-io file's input is quantized with its scale and zero point (an
        :class:`InputError` for NaN or Inf, which int8 cannot hold) and its tokens dequantized.
        ``batch_size`` and ``verbose`` are accepted for Keras' signature and not used."""
        from eegdino_tf.tracing import from_int8, to_int8

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.channels, self.samples):
            raise InputError(
                f"{self.path} takes [N, {self.channels}, {self.samples}]; got shape {x.shape}"
            )
        parts = []
        for start in range(0, len(x), self.batch):
            part = x[start : start + self.batch]
            padded = np.concatenate([part, np.repeat(part[-1:], self.batch - len(part), axis=0)])
            if self.int8_input is not None:
                padded = to_int8(padded, *self.int8_input)
            self._interpreter.set_tensor(self._input, padded)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output)[: len(part)]
            parts.append(from_int8(out, *self._output_quantization))
        return np.concatenate(parts)


class StreamEncoder:
    """Encode a live recording window by window as its chunks arrive.

    Args:
        model: a Keras encoder (:func:`eegdino_tf.load_encoder`), a :class:`TFLiteEncoder`,
            or the path of an exported encoder ``.tflite`` file.
        sfreq: the chunks' sampling rate in Hz (resampled to 200 Hz as ``encode`` does).
        window: window length in whole seconds; default 10, or the ``.tflite`` file's.
        hop: seconds between window starts (a whole number of 200 Hz samples); default
            ``window`` (no overlap).
        channels: the chunks' rows, in the model's channel-slot order: a count, or names
            (a list or one comma-separated string); default the ``.tflite`` file's.
    """

    def __init__(
        self,
        model: Any,
        *,
        sfreq: float,
        window: float | None = None,
        hop: float | None = None,
        channels: int | Sequence[str] | str | None = None,
    ):
        if isinstance(model, (str, os.PathLike)):
            if Path(model).suffix != ".tflite":
                raise ConfigError(
                    f"model={str(model)!r}: expected a Keras encoder or an exported .tflite file"
                )
            model = TFLiteEncoder(model)
        if getattr(model, "num_classes", None) is not None or not hasattr(model, "predict"):
            raise ConfigError(
                f"model: got {type(model).__name__}; expected an encoder (load_encoder) or an "
                "exported encoder .tflite file"
            )
        fixed = model if isinstance(model, TFLiteEncoder) else None
        if fixed is not None and window is None:
            window = fixed.samples / SAMPLING_RATE
        self.window_s = 10.0 if window is None else float(window)
        self._size = window_samples(self.window_s)
        self.hop_s = self.window_s if hop is None else float(hop)
        self._step = seconds_to_samples(self.hop_s, "hop", whole_seconds=False)
        if fixed is not None and self._size != fixed.samples:
            raise ConfigError(
                f"window={window!r} s, but {fixed.path} takes {fixed.samples} samples "
                f"({fixed.samples / SAMPLING_RATE:g} s at {SAMPLING_RATE:g} Hz)"
            )
        self.channels = _channel_names(channels, fixed)
        self.model = model
        count = len(self.channels)
        # Open-ended (no length yet): only spans whose filter input has all arrived are read.
        self._stream = Stream(tuple(range(count)), float(sfreq), sys.maxsize, self._read)
        self.sfreq = self._stream.sfreq
        self.reset()

    @property
    def lookahead_s(self) -> float:
        """Seconds of input after a window's end needed before it is encoded (the resampling
        filter's reach; 0 at 200 Hz)."""
        return self._stream.margin / self.sfreq

    def reset(self) -> None:
        """Forget everything pushed: the next sample pushed is at 0 s."""
        count = len(self.channels)
        self._native = np.zeros((count, 0))
        self._native_start = 0  # native index of self._native[:, 0]
        self._received = 0  # native samples pushed
        self._resampled = np.zeros((count, 0))
        self._resampled_start = 0  # 200 Hz index of self._resampled[:, 0]
        self._final = 0  # 200 Hz samples resampled (final) so far
        self._next = 0  # 200 Hz start of the next window

    def push(self, chunk: np.ndarray) -> list[StreamItem]:
        """Take microvolts ``[C, n]`` (any ``n``, 0 too) and return the windows they complete,
        in order (often none; several when a chunk spans several hops)."""
        began = time.perf_counter()
        data = self._checked(chunk)
        self._native = np.concatenate([self._native, data], axis=1)
        self._received += data.shape[1]
        up, down, margin = self._stream.up, self._stream.down, self._stream.margin
        return self._advance(max(0, (self._received - margin) * up // down), began)

    def flush(self) -> list[StreamItem]:
        """End the recording: return the windows its last samples complete (resampled as
        ``encode`` resamples a recording that ends there), then :meth:`reset`."""
        began = time.perf_counter()
        ended = dataclasses.replace(self._stream, n_samples=self._received)
        items = self._advance(ended.n_resampled, began, ended)
        self.reset()
        return items

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Native samples ``[start, stop)``, float64 ``[C, stop - start]``: held, and pushed."""
        if not self._native_start <= start <= stop <= self._received:
            raise RuntimeError(
                f"samples [{start}, {stop}) read; held [{self._native_start}, {self._received})"
            )
        return self._native[:, start - self._native_start : stop - self._native_start]

    def _checked(self, chunk: Any) -> np.ndarray:
        """``chunk`` as float64 ``[C, n]``; an :class:`InputError` (and nothing kept) unless it
        is a 2-D array of finite real numbers with one row per channel."""
        data = np.asarray(chunk)
        count = len(self.channels)
        if data.ndim != 2:
            raise InputError(f"a chunk must be 2-D [channels, samples]; got shape {data.shape}")
        if data.shape[0] != count:
            hint = " (transposed? chunks are [channels, samples])" if data.shape[1] == count else ""
            raise InputError(
                f"a chunk has {data.shape[0]} rows; this stream takes {count} channels "
                f"({', '.join(self.channels)}){hint}"
            )
        if data.dtype == bool or not np.issubdtype(data.dtype, np.number) or data.dtype.kind == "c":
            raise InputError(f"a chunk must hold real numbers (microvolts); got dtype {data.dtype}")
        data = data.astype(np.float64)
        bad = ~np.isfinite(data)
        if bad.any():
            sample = int(bad.any(axis=0).argmax())
            row = int(bad[:, sample].argmax())
            at = self._received + sample
            raise InputError(
                f"chunk sample {sample} (stream sample {at}, {at / self.sfreq:.4f} s) of channel "
                f"{self.channels[row]} is {data[row, sample]}; expected finite microvolts "
                "(nothing of this chunk was taken)"
            )
        return data

    def _advance(self, final: int, began: float, stream: Stream | None = None) -> list[StreamItem]:
        """Resample up to 200 Hz sample ``final`` (with ``stream``, default the open-ended one),
        encode the windows that completes, and drop what no later window needs."""
        if final > self._final:
            fresh = (stream or self._stream).resampled(self._final, final)
            self._resampled = np.concatenate([self._resampled, fresh], axis=1)
            self._final = final
        starts = []
        while self._next + self._size <= self._final:
            starts.append(self._next)
            self._next += self._step
        items = self._encode(starts, began)
        cut = min(self._next, self._final) - self._resampled_start
        self._resampled, self._resampled_start = (
            self._resampled[:, cut:],
            self._resampled_start + cut,
        )
        # Stream.resampled(self._final, ...) reads from at most `margin + down` samples earlier.
        up, down, margin = self._stream.up, self._stream.down, self._stream.margin
        keep = min(
            max(self._native_start, self._final * down // up - margin - down), self._received
        )
        self._native = self._native[:, keep - self._native_start :]
        self._native_start = keep
        return items

    def _encode(self, starts: list[int], began: float) -> list[StreamItem]:
        """The windows at 200 Hz samples ``starts`` through the model, as items."""
        if not starts:
            return []
        first = self._resampled_start
        batch = np.stack([self._resampled[:, s - first : s - first + self._size] for s in starts])
        tokens = summarize(self.model.predict(batch.astype(np.float32), verbose=0))
        latency = time.perf_counter() - began
        return [
            StreamItem(start / SAMPLING_RATE, g, m, latency)
            for start, g, m in zip(
                starts, tokens["global_token"], tokens["mean_token"], strict=True
            )
        ]


def _channel_names(
    channels: int | Sequence[str] | str | None, fixed: TFLiteEncoder | None
) -> tuple[str, ...]:
    """The chunks' channel names in slot order (``"0"``, ``"1"``, ... for a count), checked
    against ``fixed``'s channel count."""
    if channels is None:
        if fixed is None:
            raise ConfigError(
                "channels=... is needed with a Keras model: the channel count, or the names of "
                "the chunks' rows in slot order"
            )
        channels = fixed.channel_names or fixed.channels
    if isinstance(channels, str):
        channels = [name.strip() for name in channels.split(",")]
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        names = tuple(str(i) for i in range(int(channels)))
    elif isinstance(channels, Sequence) and all(isinstance(n, str) and n for n in channels):
        names = tuple(channels)
        if len(set(names)) != len(names):
            raise ConfigError(f"channels={list(names)} names a channel twice")
    else:
        raise ConfigError(
            f"channels={channels!r}: expected a count or a list of non-empty channel names"
        )
    if not 1 <= len(names) <= MAX_CHANNELS:
        raise ConfigError(f"channels gives {len(names)} channels; expected 1..{MAX_CHANNELS}")
    if fixed is not None and len(names) != fixed.channels:
        raise ConfigError(
            f"channels gives {len(names)} channels, but {fixed.path} takes {fixed.channels}"
        )
    return names
