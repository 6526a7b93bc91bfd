"""Keras layers of EEG-DINO. Each mirrors one module of the reference (``docs/architecture.md``).

Shapes: B batch, C channels (1..19), T samples, P = T / 200 patches, N = C * P patch tokens,
D model width.

Precision: layers take a Keras dtype policy. Matmuls and convolutions run in the policy's
compute dtype; norm statistics, the softmax and the DFT magnitude always run in float32, and
the residual streams of :class:`PatchEmbedding` and :class:`TransformerBlock` stay float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from eegdino_tf import hardware
from eegdino_tf.config import (
    CONV_POSITIONS,
    MAX_CHANNELS,
    PATCH_SIZE,
    SPECTRAL_BINS,
    TEMPORAL_CONVS,
    TIME_KERNEL,
    conv_lengths,
)
from eegdino_tf.errors import ConfigError, InputError

EPSILON = 1e-5
_SERIALIZABLE = keras.saving.register_keras_serializable(package="eegdino_tf")

# ---------------------------------------------------------------------------------------------
# Graph forms: GELU and the attention softmax each have two exact ways to be written
# ---------------------------------------------------------------------------------------------

GELU_FORMS = ("erf", "erfc")
SOFTMAX_FORMS = ("op", "matmul", "native")
LAYERNORM_FORMS = ("ops", "fused")


@dataclasses.dataclass(frozen=True)
class GraphForm:
    """How traced graphs write two computations that have more than one exact form.

    ``gelu``: ``"erf"`` (default) is ``0.5 x (1 + erf(x / sqrt 2))``: 2-3x faster than the
    other on CPU, and the form tf2onnx maps (to ONNX ``Erf``; it has no mapping for ``Erfc``).
    ``"erfc"`` is ``tf.nn.gelu(approximate=False)``, which the TFLite converter maps to its
    builtin GELU. Both are exact GELU (they differ by < 1e-6).

    ``softmax`` (attention at inference): ``"op"`` (default) is ``tf.nn.softmax`` before the
    matmul with ``v``, which TF's own kernels, TFLite and ONNX Runtime run fastest (one fused
    kernel); ``"matmul"`` takes each row's sum from that matmul and divides after it
    (:func:`_softmax_matmul`), faster under XLA, which ``predict``'s compiled function uses.
    Both equal the softmax to float32 rounding. ``"native"`` is ``"op"`` in the compute dtype
    at inference, without casting the scores to float32 and back: oneDNN's bfloat16 softmax
    computes in float32 and rounds once, the same numbers (bit for bit) without the two
    casts over ``[B, H, N, N]``; only for graphs oneDNN runs (``predict`` without XLA on a
    CPU with oneDNN's bfloat16 kernels: :func:`~eegdino_tf.runtime.graph_path_form`).

    ``layernorm``: ``"ops"`` (default) writes the LayerNorm's two-pass statistics out in
    ops; ``"fused"`` takes them from TensorFlow's ``FusedBatchNorm`` over ``[1, rows, D, 1]``
    (NCHW: each row a channel), which TF's graph optimizer turns, with the gamma and beta
    after it, into one oneDNN LayerNorm kernel: 2x faster, as exact (float64 reference, max
    error 8.7e-7 against 7.7e-7). Graphs oneDNN runs only (NCHW FusedBatchNorm needs it).
    """

    gelu: str = "erf"
    softmax: str = "op"
    layernorm: str = "ops"

    def __post_init__(self):
        for field, forms in (
            ("gelu", GELU_FORMS),
            ("softmax", SOFTMAX_FORMS),
            ("layernorm", LAYERNORM_FORMS),
        ):
            if getattr(self, field) not in forms:
                raise ConfigError(
                    f"unknown {field} form {getattr(self, field)!r}; use one of {forms}"
                )


_GRAPH_FORM: contextvars.ContextVar[GraphForm] = contextvars.ContextVar(
    "graph_form", default=GraphForm()
)


@contextlib.contextmanager
def graph_form(form: GraphForm) -> Iterator[None]:
    """Write graphs traced inside the block in ``form`` (exporters choose their runtime's)."""
    token = _GRAPH_FORM.set(form)
    try:
        yield
    finally:
        _GRAPH_FORM.reset(token)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact (erf) GELU, written as the current :class:`GraphForm` says."""
    if _GRAPH_FORM.get().gelu == "erf":
        return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(math.sqrt(0.5), x.dtype)))
    return tf.nn.gelu(x, approximate=False)


# ---------------------------------------------------------------------------------------------
# Contractions: bfloat16 rounded to nearest on every CPU
# ---------------------------------------------------------------------------------------------


def _rounded_to_nearest(op, *operands: tf.Tensor) -> tf.Tensor:
    """``op(*operands)``, with bfloat16 results rounded to nearest on every machine.

    Where TensorFlow's bfloat16 kernels truncate their float32 results (its Eigen fallback:
    AVX2-only CPUs, oneDNN off; see :mod:`eegdino_tf.hardware`), the op runs in float32 on
    the bfloat16 values and the result is rounded to nearest: the arithmetic of native
    bfloat16 kernels (float32 accumulation, one rounding), and faster than the fallback.
    """
    if operands[0].dtype != tf.bfloat16 or hardware.bf16_matmul_rounds_to_nearest():
        return op(*operands)
    return tf.cast(op(*(tf.cast(x, tf.float32) for x in operands)), tf.bfloat16)


def matmul(a: tf.Tensor, b: tf.Tensor, transpose_b: bool = False) -> tf.Tensor:
    """``a @ b`` (``a @ b^T`` with ``transpose_b``; see :func:`_rounded_to_nearest` for
    bfloat16)."""
    return _rounded_to_nearest(lambda x, y: tf.matmul(x, y, transpose_b=transpose_b), a, b)


def einsum(equation: str, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``tf.einsum(equation, a, b)`` (see :func:`_rounded_to_nearest` for bfloat16)."""
    return _rounded_to_nearest(lambda x, y: tf.einsum(equation, x, y), a, b)


@_SERIALIZABLE
class Linear(keras.layers.Dense):
    """``keras.layers.Dense`` (same weights, same config) whose matmul is :func:`matmul`.
    The bias goes on with ``BiasAdd``: TF's graph optimizer fuses a MatMul, its ``BiasAdd``
    and a GELU after them into one oneDNN kernel (an ``x + bias`` keeps the GELU apart:
    medium's fc1 and GELU in bfloat16, 1.4x slower)."""

    def call(self, inputs, training=None):
        x = matmul(inputs, tf.cast(self.kernel, inputs.dtype))
        if self.bias is not None:
            x = tf.nn.bias_add(x, tf.cast(self.bias, x.dtype))
        return x if self.activation is None else self.activation(x)


def _dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
    """Static size of ``x`` along ``axis`` when known, else the dynamic one."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _mean(x: tf.Tensor, axes: list[list[int]]) -> tf.Tensor:
    """Mean over several axis groups, one group after the other.

    Summing thousands of float32 values in one reduction loses digits (and how many depends
    on the kernel TF picks for the shape); reducing in stages keeps each sum short.
    """
    for group in axes:
        x = tf.reduce_mean(x, axis=group, keepdims=True)
    return x


def _standardize(x: tf.Tensor, axes: list[list[int]]) -> tf.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``, with the two-pass (exact) variance."""
    centered = x - _mean(x, axes)
    variance = _mean(tf.square(centered), axes)
    return centered * tf.math.rsqrt(variance + EPSILON)


def _fused_standardize(x: tf.Tensor) -> tf.Tensor:
    """:func:`_standardize` over the last axis, by ``FusedBatchNorm`` (training mode: the
    rows' own statistics) of ``x`` as ``[1, rows, D, 1]`` NCHW, each row a channel."""
    rows = tf.reduce_prod(tf.shape(x)[:-1])
    ones, zeros = tf.ones([rows], x.dtype), tf.zeros([rows], x.dtype)
    image = tf.reshape(x, [1, rows, x.shape[-1], 1])
    normed, _, _ = tf.compat.v1.nn.fused_batch_norm(
        image, ones, zeros, epsilon=EPSILON, data_format="NCHW"
    )
    return tf.reshape(normed, tf.shape(x))


class _Float32Stream(keras.layers.Layer):
    """A container layer whose own arithmetic (the residual stream) stays in float32.

    Its sub-layers follow the dtype policy it was given; their outputs are cast back to
    float32 before they join the stream.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False

    @staticmethod
    def _f32(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.float32)


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


EXPECTED_EEG = (
    f"expected raw EEG in microvolts shaped [batch, channels, samples] with 1..{MAX_CHANNELS}"
    f" channels and samples a positive multiple of {PATCH_SIZE} (1 s patches at 200 Hz)"
)


NON_FINITE_EEG = (
    "EEG input contains NaN or Inf; clean or interpolate bad samples first "
    "(or build the model with check_finite=False)"
)


def check_eeg_input(inputs: Any, partial_patch: str = "error") -> None:
    """Raise :class:`InputError` unless ``inputs`` is one array or tensor the model takes."""
    if isinstance(inputs, (list, tuple, dict)) or not hasattr(inputs, "shape"):
        raise InputError(
            f"EEG input is a {type(inputs).__name__}, not one array or tensor ({EXPECTED_EEG}; "
            "np.stack a list of examples)"
        )
    check_eeg_shape(inputs.shape, partial_patch)


def check_eeg_shape(shape, partial_patch: str = "error") -> None:
    """Raise :class:`InputError` unless ``shape`` fits the model (unknown dims pass)."""
    shape = tf.TensorShape(shape)
    if shape.rank != 3:
        raise InputError(f"EEG input has shape {shape} (rank {shape.rank}); {EXPECTED_EEG}")
    if shape[0] == 0:
        raise InputError(f"EEG input holds no examples (shape {shape}); {EXPECTED_EEG}")
    channels, samples = shape[1], shape[2]
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        raise InputError(f"EEG input has {channels} channels; {EXPECTED_EEG}")
    if samples is not None:
        if samples < PATCH_SIZE and not (partial_patch == "pad" and samples > 0):
            raise InputError(f"EEG input has {samples} samples; {EXPECTED_EEG}")
        if samples % PATCH_SIZE and partial_patch == "error":
            raise InputError(
                f"EEG input has {samples} samples, not a multiple of {PATCH_SIZE}; "
                f"{EXPECTED_EEG}; or build the model with partial_patch='pad' "
                "(or partial_patch='crop')"
            )


@_SERIALIZABLE
class EEGInput(keras.layers.Layer):
    """Check raw microvolts ``[B, C, T]`` and scale them: ``[B, C, T'] * input_scale``.

    ``partial_patch`` says what to do when T is not a multiple of 200: ``"error"`` (default),
    ``"pad"`` (zero-pad the end to the next multiple) or ``"crop"`` (drop the remainder).
    ``check_finite`` makes NaN or Inf input an error instead of NaN output.
    """

    def __init__(
        self,
        input_scale: float = 0.01,
        partial_patch: str = "error",
        check_finite: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if partial_patch not in ("error", "pad", "crop"):
            raise ConfigError(
                f"partial_patch must be 'error', 'pad' or 'crop', got {partial_patch!r}"
            )
        self.input_scale = float(input_scale)
        self.partial_patch = partial_patch
        self.check_finite = bool(check_finite)
        self._convert_input_args = False

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        self._check_shape(x)
        remainder = _dim(x, 2) % PATCH_SIZE
        if self.partial_patch == "pad":
            x = tf.pad(x, [[0, 0], [0, 0], [0, (PATCH_SIZE - remainder) % PATCH_SIZE]])
        elif self.partial_patch == "crop":
            x = x[:, :, : _dim(x, 2) - remainder]
        if self.check_finite:
            x = self._assert_finite(x)
        return x * self.input_scale

    def _check_shape(self, x: tf.Tensor) -> None:
        check_eeg_shape(x.shape, self.partial_patch)
        channels, samples = x.shape[1], x.shape[2]
        if None in (channels, samples) and not tf.executing_eagerly():
            # Shapes only known when the graph runs (e.g. a relaxed predict trace).
            shape = tf.shape(x)
            ok = (shape[1] >= 1) & (shape[1] <= MAX_CHANNELS) & (shape[2] >= PATCH_SIZE)
            if self.partial_patch == "error":
                ok &= tf.equal(shape[2] % PATCH_SIZE, 0)
            tf.debugging.assert_equal(ok, True, message=f"bad EEG input shape; {EXPECTED_EEG}")

    @staticmethod
    def _assert_finite(x: tf.Tensor) -> tf.Tensor:
        if tf.executing_eagerly():
            if not bool(tf.reduce_all(tf.math.is_finite(x))):
                raise InputError(NON_FINITE_EEG)
            return x
        # A graph check; XLA drops it, so the models' predict also checks in NumPy.
        return tf.debugging.assert_all_finite(x, NON_FINITE_EEG)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "input_scale": self.input_scale,
            "partial_patch": self.partial_patch,
            "check_finite": self.check_finite,
        }


# ---------------------------------------------------------------------------------------------
# Norms
# ---------------------------------------------------------------------------------------------


@_SERIALIZABLE
class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis, eps 1e-5, statistics in float32: ``[..., D] -> [..., D]``."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")

    def call(self, x):
        if _GRAPH_FORM.get().layernorm == "fused":
            return _fused_standardize(x) * self.gamma + self.beta
        return _standardize(x, [[-1]]) * self.gamma + self.beta


@_SERIALIZABLE
class GroupNorm(keras.layers.Layer):
    """GroupNorm of channel-major patch features ``[B, N, c * positions]`` (feature =
    channel * positions + position): statistics per example and group over all N patches,
    the positions and the group's channels, eps 1e-5, in float32. ``gamma``/``beta``: ``[c]``.
    """

    def __init__(self, groups: int, positions: int = CONV_POSITIONS, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.positions = int(positions)

    def build(self, input_shape):
        channels = input_shape[-1] // self.positions
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        tokens, features = _dim(x, 1), x.shape[2]
        grouped = tf.reshape(x, [-1, tokens, self.groups, features // self.groups])
        normed = tf.reshape(_standardize(grouped, [[3], [1]]), [-1, tokens, features])
        gamma, beta = (tf.repeat(w, self.positions) for w in (self.gamma, self.beta))
        return normed * gamma + beta

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "positions": self.positions}


# ---------------------------------------------------------------------------------------------
# Patch embedding
# ---------------------------------------------------------------------------------------------


@_SERIALIZABLE
class PatchConv(keras.layers.Layer):
    """A 1-D convolution inside each patch, run as one matmul: ``[B, N, c_in * L_in] ->
    [B, N, c_out * L_out]``, features channel-major on both sides.

    A convolution over a patch's ``L_in`` positions is a linear map of the patch, so it is
    the matmul with a banded ``[c_in * L_in, c_out * L_out]`` matrix built from the kernel
    (``placement[i, t, j] = 1`` where input position ``i = t * stride + j - padding``): one
    well-shaped GEMM instead of a convolution over a ``[B, N, L, c]`` image, and zero padding
    for free. The kernel keeps ``Conv2D``'s ``[1, kernel, c_in, c_out]`` layout.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        length: int,
        strides: int = 1,
        padding: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.length = int(length)
        self.strides = int(strides)
        self.padding = int(padding)
        self.out_length = (self.length + 2 * self.padding - self.kernel_size) // self.strides + 1
        i = np.arange(self.length)[:, None, None]
        t = np.arange(self.out_length)[None, :, None]
        j = np.arange(self.kernel_size)[None, None, :]
        placement = i == t * self.strides + j - self.padding  # [L_in, L_out, kernel]
        self._placement = placement.astype(np.float32)

    def build(self, input_shape):
        in_channels = input_shape[-1] // self.length
        shape = (1, self.kernel_size, in_channels, self.filters)
        self.kernel = self.add_weight(shape=shape, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def banded_matrix(self) -> tf.Tensor:
        """The conv as a ``[c_in * L_in, c_out * L_out]`` matrix, in the compute dtype."""
        # Each entry is one kernel value (or 0): built in float32, then cast, it is exact.
        kernel = tf.cast(self.kernel[0], tf.float32)  # [kernel, c_in, c_out]
        banded = tf.einsum("itj,jab->aibt", self._placement, kernel)  # [c_in, L_in, c_out, L_out]
        banded = tf.reshape(banded, [-1, self.filters * self.out_length])
        return tf.cast(banded, self.compute_dtype)

    def call(self, x):
        y = matmul(_flat_tokens(x), self.banded_matrix())
        y = y + tf.repeat(tf.cast(self.bias, y.dtype), self.out_length)
        return tf.reshape(y, [-1, _dim(x, 1), self.filters * self.out_length])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters * self.out_length)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "length": self.length,
            "strides": self.strides,
            "padding": self.padding,
        }


@_SERIALIZABLE
class TemporalConvStack(keras.layers.Layer):
    """Three ``Conv -> GroupNorm -> GELU`` blocks over each patch: ``[B, N, 200] -> [B, N, D]``.

    The geometry is :data:`eegdino_tf.config.TEMPORAL_CONVS`: conv1 (kernel 49, stride 25,
    padding 24) turns the 200 samples into 8 positions x c1 channels; conv2 and conv3 (kernel
    3, padding 1) keep the 8 positions. Each is a :class:`PatchConv`; features stay
    channel-major (feature = conv_channel * 8 + position), which is the output's order.
    """

    def __init__(self, conv_channels: tuple[int, int, int], norm_groups: int, **kwargs):
        super().__init__(**kwargs)
        self.conv_channels = tuple(int(c) for c in conv_channels)
        self.norm_groups = int(norm_groups)
        self.conv1, self.conv2, self.conv3 = (
            PatchConv(
                width,
                conv.kernel,
                length,
                strides=conv.stride,
                padding=conv.padding,
                name=f"conv{i}",
                dtype=self.dtype_policy,
            )
            for i, (width, conv, length) in enumerate(
                zip(self.conv_channels, TEMPORAL_CONVS, conv_lengths()[:-1], strict=True), 1
            )
        )
        self.norm1, self.norm2, self.norm3 = (
            GroupNorm(norm_groups, name=f"norm{i}") for i in (1, 2, 3)
        )

    def build(self, input_shape):
        shape = input_shape
        for conv, norm in self._blocks():
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)

    def _blocks(self):
        return ((self.conv1, self.norm1), (self.conv2, self.norm2), (self.conv3, self.norm3))

    def call(self, patches):
        x = patches
        for conv, norm in self._blocks():
            x = gelu(tf.cast(norm(conv(x)), self.compute_dtype))
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.conv_channels[2] * CONV_POSITIONS)

    def get_config(self):
        return {
            **super().get_config(),
            "conv_channels": list(self.conv_channels),
            "norm_groups": self.norm_groups,
        }


@_SERIALIZABLE
class PatchSpectrum(keras.layers.Layer):
    """``|rfft(patch)| / 200`` per patch as two matmuls with a cached DFT basis, in float32:
    ``[B, N, 200] -> [B, N, 101]``. No FFT op, so it runs on every backend."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        n = np.arange(PATCH_SIZE)
        angle = 2.0 * np.pi * np.outer(n, np.arange(SPECTRAL_BINS)) / PATCH_SIZE
        basis = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) / PATCH_SIZE
        self._basis = basis.astype(np.float32)  # [200, 2 * 101]; a constant of each graph

    def call(self, patches):
        real, imag = tf.split(tf.matmul(patches, self._basis), 2, axis=-1)
        return tf.sqrt(tf.square(real) + tf.square(imag))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], SPECTRAL_BINS)


@_SERIALIZABLE
class ChannelEmbedding(keras.layers.Layer):
    """Learned per-slot embedding: input channel i gets ``kernel[i] + bias``.

    Called on anything shaped ``[B, C, ...]``; returns ``[C, D]``.
    """

    def __init__(self, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)

    def build(self, input_shape=None):
        self.kernel = self.add_weight(shape=(MAX_CHANNELS, self.embed_dim), name="kernel")
        self.bias = self.add_weight(shape=(self.embed_dim,), initializer="zeros", name="bias")

    def call(self, x):
        return self.kernel[: _dim(x, 1)] + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[1], self.embed_dim)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim}


@_SERIALIZABLE
class TimeEncoding(keras.layers.Layer):
    """Depthwise conv along the patch axis, kernel 5, padding 2, with bias:
    ``[B, C, P, D] -> [B, C, P, D]``.

    Written as five shifted multiply-adds: the same numbers as ``DepthwiseConv2D``, which TF's
    grappler remapper fails to fuse with the residual add (it logs errors on every trace).
    The kernel keeps ``DepthwiseConv2D``'s ``[1, 5, D, 1]`` layout.
    """

    def __init__(self, embed_dim: int, kernel_size: int = TIME_KERNEL, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape=None):
        shape = (1, self.kernel_size, self.embed_dim, 1)
        self.kernel = self.add_weight(shape=shape, name="kernel")
        self.bias = self.add_weight(shape=(self.embed_dim,), initializer="zeros", name="bias")

    def call(self, e):
        half = self.kernel_size // 2
        padded = tf.pad(e, [[0, 0], [0, 0], [half, half], [0, 0]])
        patches = _dim(e, 2)
        out = self.bias
        for k in range(self.kernel_size):
            out = out + padded[:, :, k : k + patches, :] * self.kernel[0, k, :, 0]
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "kernel_size": self.kernel_size,
        }


@_SERIALIZABLE
class PatchEmbedding(_Float32Stream):
    """Raw patches to tokens: ``[B, C, T] (scaled) -> [B, C*P, D]``.

    ``e = temporal(patch) + Dropout(Linear(|DFT(patch)|)) + channel_embedding[c]``, then the
    depthwise time encoding along the patch axis is added: ``e + time_encoding(e)``. Tokens are
    channel-major (token = c * P + p). ``dropout`` acts in training only.
    """

    def __init__(
        self,
        embed_dim: int,
        conv_channels: tuple[int, int, int],
        norm_groups: int,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.conv_channels = tuple(int(c) for c in conv_channels)
        self.norm_groups = int(norm_groups)
        self.dropout = float(dropout)
        policy = dict(dtype=self.dtype_policy)
        self.spectral_dropout = keras.layers.Dropout(
            self.dropout, name="spectral_dropout", **policy
        )
        self.temporal = TemporalConvStack(conv_channels, norm_groups, name="temporal", **policy)
        self.spectrum = PatchSpectrum(name="spectrum")
        self.spectral_proj = Linear(embed_dim, name="spectral_proj", **policy)
        self.channel_embedding = ChannelEmbedding(embed_dim, name="channel_embedding", **policy)
        self.time_encoding = TimeEncoding(embed_dim, name="time_encoding", **policy)

    def build(self, input_shape):
        batch = input_shape[0]
        self.temporal.build((batch, None, PATCH_SIZE))
        self.spectral_proj.build((batch, None, SPECTRAL_BINS))
        self.channel_embedding.build()
        self.time_encoding.build((batch, None, None, self.embed_dim))

    def call(self, x):
        channels, patches_per_channel = _dim(x, 1), _dim(x, 2) // PATCH_SIZE
        patches = tf.reshape(x, [-1, channels * patches_per_channel, PATCH_SIZE])
        spectral = self.spectral_dropout(self.spectral_proj(self.spectrum(patches)))
        e = self._f32(self.temporal(patches)) + self._f32(spectral)
        e = tf.reshape(e, [-1, channels, patches_per_channel, self.embed_dim])
        e = e + self._f32(self.channel_embedding(x))[None, :, None, :]
        e = e + self._f32(self.time_encoding(e))
        return tf.reshape(e, [-1, channels * patches_per_channel, self.embed_dim])

    def compute_output_shape(self, input_shape):
        batch, channels, samples = input_shape
        tokens = None if None in (channels, samples) else channels * (samples // PATCH_SIZE)
        return (batch, tokens, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "conv_channels": list(self.conv_channels),
            "norm_groups": self.norm_groups,
            "dropout": self.dropout,
        }


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------


def _flat_tokens(x: tf.Tensor) -> tf.Tensor:
    """``[B, N, D] -> [B*N, D]``: dense layers on 2-D input become one MatMul that TF's
    graph optimizer fuses with the bias add (and GELU) into a single oneDNN kernel."""
    return tf.reshape(x, [-1, x.shape[-1]])


#: float32 lanes of an AVX-512 vector (two AVX2 ones): :func:`_softmax_matmul` fills ``v``'s
#: last vector with its ones column and zeros.
VECTOR_LANES = 16


def _softmax_matmul(scores: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """``softmax(scores) @ v`` per head, normalized after the matmul: ``[B, H, Nq, Nk]`` and
    ``[B, Nk, H, d]`` -> ``[B, Nq, H, d]``.

    ``e = exp(scores - max)`` (float32) goes through one matmul with ``[v | 1 | 0...]``, whose
    ``d``-th column is each row's sum of ``e``; dividing by it afterwards is the softmax. Under
    XLA that skips a reduction and a division over the ``[B, H, N, N]`` weights. Where ``d``
    leaves room in its last vector of :data:`VECTOR_LANES` (small: 25), zeros fill it up (32),
    the widths XLA's matmul runs fastest; otherwise (medium 64, large 128) the ones column is
    one more. Small, 2 cores: the whole model 1.11x-1.12x faster at batch 1 and 8 (1.05x-1.09x
    without the zeros); medium within 1%. TF's graph kernels and ONNX Runtime run it 1.1x
    slower than ``tf.nn.softmax``, TFLite 1.2x. Inference only: dropout acts on the
    normalized weights.
    """
    d = v.shape[-1]
    zeros = (-(d + 1)) % VECTOR_LANES if d % VECTOR_LANES else 0
    scores = tf.cast(scores, tf.float32)
    e = tf.cast(tf.exp(scores - tf.reduce_max(scores, axis=-1, keepdims=True)), v.dtype)
    v_ones = tf.concat([v, tf.ones_like(v[..., :1])], axis=-1)
    summed = einsum("bhqk,bkhd->bqhd", e, tf.pad(v_ones, [[0, 0]] * 3 + [[0, zeros]]))
    out = tf.cast(summed[..., :d], tf.float32) / tf.cast(summed[..., d : d + 1], tf.float32)
    return tf.cast(out, v.dtype)


@_SERIALIZABLE
class Attention(keras.layers.Layer):
    """Multi-head self-attention with a fused qkv projection, q and v biases (no k bias):
    ``[B, N, D] -> [B, N, D]``. ``dropout`` on the attention weights and after ``proj``
    (training only)."""

    def __init__(self, embed_dim: int, num_heads: int = 8, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = float(dropout)
        policy = dict(dtype=self.dtype_policy)
        self.qkv = Linear(3 * embed_dim, use_bias=False, name="qkv", **policy)
        self.proj = Linear(embed_dim, name="proj", **policy)
        self.weights_dropout = keras.layers.Dropout(self.dropout, name="weights_dropout", **policy)
        self.proj_dropout = keras.layers.Dropout(self.dropout, name="proj_dropout", **policy)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.q_bias = self.add_weight(shape=(self.embed_dim,), initializer="zeros", name="q_bias")
        self.v_bias = self.add_weight(shape=(self.embed_dim,), initializer="zeros", name="v_bias")

    def call(self, x, training=None):
        tokens = _dim(x, 1)
        qkv_bias = tf.concat([self.q_bias, tf.zeros_like(self.q_bias), self.v_bias], axis=0)
        qkv = self.qkv(_flat_tokens(x)) + qkv_bias
        qkv = tf.reshape(qkv, [-1, tokens, 3 * self.num_heads, self.head_dim])
        scale = self.head_dim**-0.5
        if _GRAPH_FORM.get().softmax == "matmul" and not (training and self.dropout > 0):
            q, k, v = tf.split(qkv, 3, axis=2)  # [B, N, H, D/H] each
            out = _softmax_matmul(einsum("bqhd,bkhd->bhqk", q * scale, k), v)
        else:  # heads first: batched matmuls (oneDNN, XNNPACK: 1.07-1.08x over einsums)
            q, k, v = tf.split(tf.transpose(qkv, [0, 2, 1, 3]), 3, axis=1)  # [B, H, N, D/H]
            scores = matmul(q * scale, k, transpose_b=True)
            if _GRAPH_FORM.get().softmax == "native" and not training:
                weights = tf.nn.softmax(scores)
            else:
                weights = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32)), v.dtype)
            # dropout acts on the normalized weights
            out = tf.transpose(matmul(self.weights_dropout(weights), v), [0, 2, 1, 3])
        out = self.proj_dropout(self.proj(tf.reshape(out, [-1, self.embed_dim])))
        return tf.reshape(out, [-1, tokens, self.embed_dim])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
        }


@_SERIALIZABLE
class Mlp(keras.layers.Layer):
    """``Dropout(fc2(GELU(fc1(x))))``: ``[B, N, D] -> [B, N, D]`` through a hidden width
    ``mlp_dim``."""

    def __init__(self, embed_dim: int, mlp_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.fc1 = Linear(mlp_dim, name="fc1", dtype=self.dtype_policy)
        self.fc2 = Linear(embed_dim, name="fc2", dtype=self.dtype_policy)
        self.output_dropout = keras.layers.Dropout(
            self.dropout, name="output_dropout", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x):
        y = self.output_dropout(self.fc2(gelu(self.fc1(_flat_tokens(x)))))
        return tf.reshape(y, [-1, _dim(x, 1), self.embed_dim])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
        }


@_SERIALIZABLE
class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, zero a whole example's residual branch with probability
    ``rate`` and scale the kept ones by ``1 / (1 - rate)``; identity otherwise. ``[B, ...]``."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = [_dim(x, 0)] + [1] * (len(x.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype)
        return x * tf.floor(keep + draw) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@_SERIALIZABLE
class TransformerBlock(_Float32Stream):
    """Pre-norm block: ``x + DropPath(Attn(LN1(x)))``, then ``x + DropPath(Mlp(LN2(x)))``.
    ``[B, N, D]``. ``dropout`` inside attention and the MLP, ``drop_path`` on both branches
    (training only)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.drop_path = float(drop_path)
        policy = dict(dtype=self.dtype_policy)
        self.norm1 = LayerNorm(name="norm1")
        self.attn = Attention(embed_dim, num_heads, dropout, name="attn", **policy)
        self.norm2 = LayerNorm(name="norm2")
        self.mlp = Mlp(embed_dim, mlp_dim, dropout, name="mlp", **policy)
        self.drop_path1 = DropPath(self.drop_path, name="drop_path1")
        self.drop_path2 = DropPath(self.drop_path, name="drop_path2")

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x):
        x = tf.cast(x, tf.float32)
        x = x + self.drop_path1(self._f32(self.attn(self.norm1(x))))
        return x + self.drop_path2(self._f32(self.mlp(self.norm2(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
        }


@_SERIALIZABLE
class GlobalToken(keras.layers.Layer):
    """Prepend one learned token: ``[B, N, D] -> [B, 1 + N, D]``."""

    def __init__(self, embed_dim: int, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)

    def build(self, input_shape=None):
        self.token = self.add_weight(shape=(1, 1, self.embed_dim), name="token")

    def call(self, x):
        # Broadcast over the batch by an add: a tile would need the batch size at run time,
        # which splits the dynamic-batch TFLite graph out of XNNPACK (runtime="litert").
        token = 0.0 * x[:, :1] + self.token
        return tf.concat([token, x], axis=1)

    def compute_output_shape(self, input_shape):
        batch, tokens, dim = input_shape
        return (batch, None if tokens is None else tokens + 1, dim)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim}


# ---------------------------------------------------------------------------------------------
# Classification head
# ---------------------------------------------------------------------------------------------


@_SERIALIZABLE
class ClassificationHead(keras.layers.Layer):
    """Finetuning head: tokens ``[B, 1 + C*P, D]`` (and the EEG, for C) -> logits ``[B, K]``.

    Drop the global token; ``GELU(full_linear)`` per token; mean over channels;
    ``GELU(channel_linear)``; mean over patches; MLP D -> D/2 -> D/4 -> K with GELUs, and
    ``dropout[0]`` / ``dropout[1]`` after its two hidden layers (training only).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        dropout: tuple[float, float] = (0.0, 0.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        self.dropout = tuple(float(r) for r in dropout)
        self.hidden1_dropout, self.hidden2_dropout = (
            keras.layers.Dropout(rate, name=f"hidden{i}_dropout", dtype=self.dtype_policy)
            for i, rate in enumerate(self.dropout, 1)
        )
        policy = dict(dtype=self.dtype_policy)
        self.full_linear = Linear(embed_dim, name="full_linear", **policy)
        self.channel_linear = Linear(embed_dim, name="channel_linear", **policy)
        self.hidden1 = Linear(embed_dim // 2, name="hidden1", **policy)
        self.hidden2 = Linear(embed_dim // 4, name="hidden2", **policy)
        self.logits = Linear(num_classes, name="logits", **policy)

    def build(self, tokens_shape, eeg_shape=None):
        d = self.embed_dim
        layers = (self.full_linear, self.channel_linear, self.hidden1, self.hidden2, self.logits)
        for layer, width in zip(layers, (d, d, d, d // 2, d // 4), strict=True):
            layer.build((None, width))

    def call(self, tokens, eeg):
        channels = _dim(eeg, 1)
        x = gelu(self.full_linear(tokens[:, 1:]))
        x = tf.reshape(x, [-1, channels, (_dim(tokens, 1) - 1) // channels, self.embed_dim])
        x = gelu(self.channel_linear(tf.reduce_mean(x, axis=1)))  # [B, P, D]
        x = tf.reduce_mean(x, axis=1)  # [B, D]
        x = self.hidden1_dropout(gelu(self.hidden1(x)))
        x = self.hidden2_dropout(gelu(self.hidden2(x)))
        return tf.cast(self.logits(x), tf.float32)

    def compute_output_shape(self, tokens_shape, eeg_shape=None):
        return (tokens_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_classes": self.num_classes,
            "dropout": list(self.dropout),
        }
