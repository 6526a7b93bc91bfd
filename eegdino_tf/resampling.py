"""Resampling to 200 Hz inside the graph: a headset's own rate in, the model's rate out.

:class:`PolyphaseResample` (``sfreq`` Hz) takes microvolts ``[B, C, n_in]`` and gives
``[B, C, n_out]`` float32 at 200 Hz, with ``n_out = resampled_length(n_in, sfreq)
= ceil(n_in * up / down)`` where ``up / down`` are :func:`eegdino_tf.io.windows.resample_factors`
(256 Hz: 25 / 32, 4 s = 1024 samples -> 800; 250 Hz: 4 / 5; 128 Hz: 25 / 16). It equals
``scipy.signal.resample_poly(x, up, down, axis=-1)`` with scipy's default filter (Kaiser window,
beta 5, zeros beyond the window's ends), the resampling ``encode`` applies, on that window alone:
within 1e-4 uV on 100 uV EEG, in Keras and in LiteRT. At 200 Hz the layer is the identity and
adds no op. B and C may be unknown; n_in may be unknown too, but a static n_in gives static
shapes.

The filter is ``resample_poly``'s: ``h = up * firwin(20 * max(up, down) + 1, 1 / max(up, down),
window=('kaiser', 5.0))``, designed here with NumPy alone (no scipy at export or run time).
Output sample ``k`` is ``sum_j x[j] h[k * down + half - j * up]`` (``half`` is the filter's
half-length): only every ``up``-th tap meets an input sample, so output ``k = q * up + m`` is
an ``L``-tap filter (phase ``m``, ``L = ceil(len(h) / up)``) over the inputs just before
``q * down``. All ``up`` phases at once are one convolution of stride ``down`` with ``up``
output channels (:func:`polyphase_bank`), not an ``n_in x n_out`` matrix.

Float32 exactness: summing ``L`` products in float32 rounds at every partial sum, 1e-4 uV at
1000 Hz (``L = 101``) on 300 uV peaks, 12 half-steps of float32 at the output's size. So the
input is split into ``x`` on a grid of :data:`INPUT_STEP` uV and the rest (at most 2 uV), the
filter into taps on a grid of :data:`TAP_STEP` and the rest: the grid part's products and sums
are exact in float32 (partial sums under 262 144 uV), the other products are small, and the
output is within 1.5 half-steps of float32 at its size (1.5e-5 uV at 300 uV peaks, 1.5e-3 uV
on a 30 000 uV offset). One ``CONV_2D`` does both: input channels (grid part, rest), output
channels (exact sum, small sum), kernel ``[width, 2, 2 * up]`` float32 (:func:`split_bank`;
22.8 KB at 256 Hz). The graph is ``MUL, ROUND, SUB, RESHAPE, CONCATENATION, PAD, CONV_2D,
SPLIT, ADD, STRIDED_SLICE``, all TFLite builtins, in one XNNPACK partition (any batch too). A
rate whose kernel would pass :data:`MAX_FILTER_BYTES` (173.61 Hz: up 20000 / down 17361) is
refused.

The bound assumes float32 convolutions, as the CPU and LiteRT run them. TensorFlow's default
TF32 on NVIDIA GPUs since Ampere rounds a convolution's inputs to 10-bit mantissas (0.1 uV at
300 uV; not measured here): ``tf.config.experimental.enable_tensor_float_32_execution(False)``
keeps float32.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import ConfigError, InputError, RecordingError
from eegdino_tf.io.windows import resample_factors
from eegdino_tf.layers import _SERIALIZABLE, _dim

#: The largest filter bank (float32 bytes) a graph may hold; 16384 Hz needs 1.4 MB.
MAX_FILTER_BYTES = 4 * 2**20
#: The grids of the exact part (module docstring): input microvolts rounded to multiples of
#: ``INPUT_STEP``, filter taps to multiples of ``TAP_STEP``; their products and every partial
#: sum below ``2**24 * INPUT_STEP * TAP_STEP`` (262 144 uV, past OpenBCI's 187 500 uV full
#: scale) are exact in float32; the rest of the input (at most 2 uV) leaves float32 rounding
#: far below the output's own.
INPUT_STEP = 4.0
TAP_STEP = 2.0**-8
#: ``resample_poly``'s default window and its filter's half-length per unit of max(up, down).
KAISER_BETA = 5.0
HALF_LENGTH_PER_FACTOR = 10


def checked_factors(sfreq: float) -> tuple[int, int]:
    """``(up, down)`` from ``sfreq`` to 200 Hz for a graph; a one-line :class:`ConfigError`
    naming ``sfreq=`` for a rate :func:`resample_factors` refuses or whose filter bank is over
    :data:`MAX_FILTER_BYTES`."""
    if isinstance(sfreq, bool) or not isinstance(sfreq, numbers.Real):
        raise ConfigError(f"sfreq={sfreq!r} must be a sampling rate in Hz (a number)")
    try:
        up, down = resample_factors(float(sfreq))
    except RecordingError as err:
        raise ConfigError(f"sfreq={sfreq!r}: {err}") from None
    size = _bank_bytes(up, down)
    if size > MAX_FILTER_BYTES:
        raise ConfigError(
            f"sfreq={sfreq!r} needs resampling by up {up} / down {down} to reach "
            f"{SAMPLING_RATE:g} Hz, a {size / 2**20:,.1f} MiB filter bank in the graph; expected "
            f"at most {MAX_FILTER_BYTES / 2**20:g} MiB (MAX_FILTER_BYTES): use a rate whose "
            "ratio to 200 Hz has small factors"
        )
    return up, down


def resampled_length(samples: int, sfreq: float) -> int:
    """Samples at 200 Hz from ``samples`` at ``sfreq`` Hz: ``ceil(samples * up / down)``,
    ``resample_poly``'s output length."""
    return _length(samples, *checked_factors(sfreq))


def _length(samples, up: int, down: int):
    """``ceil(samples * up / down)`` of an int or a scalar tensor."""
    return (samples * up + down - 1) // down


def lowpass_filter(up: int, down: int) -> np.ndarray:
    """``resample_poly``'s default filter times its gain ``up``: float64
    ``[2 * half + 1]``, ``half = 10 * max(up, down)``; scipy's ``firwin`` step by step."""
    rate = max(up, down)
    half = HALF_LENGTH_PER_FACTOR * rate
    cutoff = 1.0 / rate
    m = np.arange(2 * half + 1, dtype=np.float64) - half
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half + 1, KAISER_BETA)
    return h / np.sum(h) * up


def _phases(up: int, down: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per output phase ``m``: the filter tap ``phase[m]`` that meets input sample
    ``q * down + offset[m]`` (for output ``q * up + m``), and the taps per phase ``L``."""
    half = HALF_LENGTH_PER_FACTOR * max(up, down)
    offset, phase = np.divmod(np.arange(up) * down + half, up)
    return phase, offset, -(-(2 * half + 1) // up)


def _bank_width(up: int, down: int) -> int:
    """Columns of :func:`polyphase_bank`'s kernel: the input samples one stride's outputs read
    (from the phases alone, so a rate is refused before any filter is built)."""
    _, offset, taps = _phases(up, down)
    return int(offset[-1] - offset[0]) + taps


def _bank_bytes(up: int, down: int) -> int:
    """Bytes of the graph's float32 kernel (:func:`split_bank`)."""
    return 4 * 4 * up * _bank_width(up, down)


def polyphase_bank(up: int, down: int) -> tuple[np.ndarray, int]:
    """``(kernel, lead)``: the float64 bank ``[width, up]`` of a stride-``down`` convolution
    over the input with ``lead`` zeros in front; its output frame ``q``, column ``m`` is output
    sample ``q * up + m`` of ``resample_poly`` (zeros beyond the input's end)."""
    h = lowpass_filter(up, down)
    phase, offset, taps = _phases(up, down)
    lead = taps - 1 - int(offset[0])
    kernel = np.zeros((_bank_width(up, down), up))
    for i in range(taps):
        tap = phase + i * up
        used = tap < len(h)
        kernel[offset[used] - i + lead, np.flatnonzero(used)] = h[tap[used]]
    return kernel, lead


def split_bank(kernel: np.ndarray) -> np.ndarray:
    """The graph's kernel ``[width, 2, 2 * up]`` float32 from :func:`polyphase_bank`'s
    ``[width, up]``: input channels (``x`` on the :data:`INPUT_STEP` grid, the rest of ``x``),
    output channels (the exact part, the rest); see the module docstring."""
    width, up = kernel.shape
    coarse = np.round(kernel / TAP_STEP) * TAP_STEP
    bank = np.zeros((width, 2, 2 * up), np.float32)
    bank[:, 0, :up] = coarse
    bank[:, 0, up:] = kernel - coarse
    bank[:, 1, up:] = kernel
    return bank


@_SERIALIZABLE
class PolyphaseResample(keras.layers.Layer):
    """Microvolts ``[B, C, n_in]`` at ``sfreq`` Hz -> ``[B, C, resampled_length(n_in, sfreq)]``
    float32 at 200 Hz, equal to ``scipy.signal.resample_poly`` (module docstring).

    Its dtype policy is always float32 (inputs are converted to float32 tensors, whatever the
    model's policy); at ``sfreq=200`` it returns its input as is.
    """

    def __init__(self, sfreq: float, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.up, self.down = checked_factors(sfreq)
        self.sfreq = float(sfreq)
        self._kernel: np.ndarray | None = None
        self._lead = 0

    @property
    def filter_bytes(self) -> int:
        """Bytes of the filter constants the layer adds to a graph (0 at 200 Hz)."""
        return 0 if self.identity else _bank_bytes(self.up, self.down)

    @property
    def identity(self) -> bool:
        """Whether ``sfreq`` is 200 Hz: no resampling, no op."""
        return self.up == self.down == 1

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise InputError(
                f"PolyphaseResample takes EEG [batch, channels, samples], got shape "
                f"{tuple(input_shape)}"
            )
        if not self.identity:
            kernel, self._lead = polyphase_bank(self.up, self.down)
            self._kernel = split_bank(kernel)[None]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.identity:
            return x
        kernel = tf.constant(self._kernel)
        width = self._kernel.shape[1]
        channels, samples = _dim(x, 1), _dim(x, 2)
        coarse = tf.round(x * (1 / INPUT_STEP)) * INPUT_STEP
        # Reshapes and a concatenation, not tf.stack (PACK) or tf.expand_dims (EXPAND_DIMS of an
        # unknown batch): XNNPACK runs neither, and the graph would fall in two partitions.
        column = [-1, channels, samples, 1]
        parts = tf.concat([tf.reshape(coarse, column), tf.reshape(x - coarse, column)], axis=-1)
        # Zeros in front so output 0's taps start at index 0, and enough behind that the last
        # frame needed fits whatever n_in is: (frames - 1) * down < n_in.
        parts = tf.pad(parts, [[0, 0], [0, 0], [self._lead, width - self._lead], [0, 0]])
        frames = tf.nn.conv2d(parts, kernel, strides=[1, 1, self.down, 1], padding="VALID")
        exact, rest = tf.split(frames, 2, axis=-1)
        y = tf.reshape(exact + rest, [-1, channels, _dim(frames, 2) * self.up])
        return y[:, :, : _length(samples, self.up, self.down)]

    def compute_output_shape(self, input_shape):
        batch, channels, samples = input_shape
        if self.identity or samples is None:
            return (batch, channels, samples)
        return (batch, channels, _length(samples, self.up, self.down))

    def get_config(self):
        return {**super().get_config(), "sfreq": self.sfreq}
