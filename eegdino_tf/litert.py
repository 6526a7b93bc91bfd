"""LiteRT as :meth:`~eegdino_tf.EEGDinoEncoder.predict`'s runtime on a CPU:
``model.predict(x, runtime="litert")``, ``x`` an array, a tensor or a ``tf.data.Dataset`` of
batches; ``quantize="dynamic-int8"`` runs int8 weights (dynamic-range quantization).

LiteRT (TFLite's interpreter, with its XNNPACK kernels) runs this model's attention, at the
small and medium widths, faster than XLA's CPU kernels do (docs/performance.md). On the first
such call for an input shape (channels, samples) the model is converted to the TFLite flatbuffer
that ``eegdino-tf export tflite`` writes, but for any batch size (on 2 cores: ~9 s for small,
~35 s for medium), and kept: in the model, and on disk for every later process of this machine
(:mod:`eegdino_tf.litert_cache`, keyed by the weights' content). The conversion holds the
weights of that moment, so every call first compares the model's weights with them
(:func:`weights_fingerprint`: 1-3 ms for small while their buffers stay where they were, one
pass over them when they moved) and converts again (or finds that conversion on disk) when
they differ, however they were changed.
An int8 conversion is refused when it moves the output away from float32 Keras on a probe
(:data:`MIN_INT8_COSINE`), measured once per conversion and kept with it. Needs ai-edge-litert
(the ``export`` extra).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from eegdino_tf import hardware, litert_cache, tracing
from eegdino_tf.errors import ConfigError, require

if TYPE_CHECKING:  # loaded on first use: importing this module first must not load the models
    import tensorflow as tf

#: ``predict``'s ``quantize`` choices with ``runtime="litert"``: float32, or int8 weights with
#: dynamic-range activations (``eegdino-tf export tflite --quantize dynamic-int8``).
LITERT_QUANTIZATIONS = ("none", "dynamic-int8")
#: An int8 conversion is refused when, on the seeded probe (:func:`eegdino_tf.signals.probe_eeg`),
#: the cosine similarity of its global token (a classifier's logits) to float32 Keras falls
#: under this for any example (small measured >= 0.9998).
MIN_INT8_COSINE = 0.999
#: Examples in the int8 probe.
PROBE_BATCH = 2


def check_quantize(runtime: str, quantize: str) -> None:
    """Raise :class:`ConfigError` unless ``quantize`` is one of :data:`LITERT_QUANTIZATIONS`
    and, when not ``"none"``, ``runtime`` is ``"litert"`` or ``"auto"`` (which then takes
    LiteRT)."""
    if quantize not in LITERT_QUANTIZATIONS:
        raise ConfigError(f"unknown quantize={quantize!r}; choose one of {LITERT_QUANTIZATIONS}")
    if quantize != "none" and runtime not in ("litert", "auto"):
        raise ConfigError(
            f"quantize={quantize!r} runs in LiteRT: pass runtime='litert' (or 'auto'), "
            f"not {runtime!r}"
        )


class LiteRTFunction:
    """A LiteRT interpreter over one flatbuffer: ``batch [B, C, T] float32 -> output`` (NumPy)
    for any ``B``, at the ``channels`` and ``samples`` it was made for. Made by
    :func:`litert_conversion`; ``weights`` is the fingerprint of the weights it holds,
    ``cached`` whether it came from the disk cache, ``cosine`` the int8 probe's smallest
    cosine to float32 Keras (None for float32). Calls from several threads take turns (an
    interpreter runs one call at a time)."""

    def __init__(
        self,
        flatbuffer: bytes,
        weights: np.ndarray,
        cached: bool,
        cosine: float | None = None,
        threads: int | None = None,
    ):
        litert = require("ai_edge_litert.interpreter", "export")
        self.weights, self.cached, self.cosine = weights, cached, cosine
        self.interpreter = litert.Interpreter(
            model_content=flatbuffer, num_threads=threads or hardware.cpu_threads()
        )
        (entry,) = self.interpreter.get_input_details()
        self._input, self._shape = entry["index"], tuple(entry["shape"])  # batch 1 until resized
        self._output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.allocate_tensors()  # applies the XNNPACK delegate now, not mid-run
        self._lock = threading.Lock()

    def made_from(self, weights: np.ndarray) -> bool:
        """Whether this conversion holds the weights of fingerprint ``weights``."""
        return np.array_equal(self.weights, weights)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape != self._shape:  # a new batch size: size the interpreter's tensors
                self.interpreter.resize_tensor_input(self._input, batch.shape)
                self.interpreter.allocate_tensors()
                self._shape = batch.shape
            self.interpreter.set_tensor(self._input, batch)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output)


def litert_conversion(
    model: Any,
    channels: int,
    samples: int,
    quantize: str = "none",
    *,
    cache: bool = True,
    convert: bool = True,
    threads: int | None = None,
) -> LiteRTFunction | None:
    """``model`` (float32) for LiteRT at ``[any, channels, samples]``: found on disk
    (:mod:`eegdino_tf.litert_cache`, unless ``cache=False``), else converted, then stored
    there; ``convert=False`` returns None instead of converting. An int8 conversion whose
    probe cosine falls under :data:`MIN_INT8_COSINE` raises :class:`ConfigError` (and is
    cached with its number, so the refusal costs no second conversion)."""
    if model.precision != "float32":
        raise ConfigError(
            f"runtime='litert' runs float32 models; this one is precision="
            f"{model.precision!r} (use runtime='keras')"
        )
    check_quantize("litert", quantize)
    require("ai_edge_litert.interpreter", "export")
    folder = litert_cache.cache_folder() if cache else None
    key = None if folder is None else litert_cache.cache_key(model, channels, samples, quantize)
    found = None if key is None else litert_cache.load(folder, key)
    if found is None and not convert:
        return None  # before the fingerprint, whose first call traces it (~0.3-0.8 s)
    weights = weights_fingerprint(model)  # before converting: what is converted
    if found is not None:
        flatbuffer, measured = found
        function = LiteRTFunction(flatbuffer, weights, True, measured.get("probe_cosine"), threads)
    else:
        tracing.check_conversion_memory(model)
        spec = tracing.input_spec(model, None, channels, samples)
        flatbuffer = tracing.tflite_flatbuffer(model, spec, quantize)
        hardware.release_freed_memory()
        function = LiteRTFunction(flatbuffer, weights, False, threads=threads)
        if quantize != "none":
            function.cosine = _probe_cosine(function, model, channels, samples)
        measured = {} if function.cosine is None else {"probe_cosine": function.cosine}
        if key is not None and function.made_from(weights_fingerprint(model)):
            litert_cache.store(folder, key, flatbuffer, measured)  # unchanged while converting
    if function.cosine is not None and not function.cosine >= MIN_INT8_COSINE:
        raise ConfigError(
            f"quantize={quantize!r} moves this model's output to cosine {function.cosine:.5f} "
            f"of float32 on the probe, under {MIN_INT8_COSINE}; use quantize='none'"
        )
    return function


def _probe_cosine(function: LiteRTFunction, model: Any, channels: int, samples: int) -> float:
    """Smallest per-example cosine of ``function``'s output to ``model``'s in Keras on the
    export's seeded probe (global token, or logits)."""
    from eegdino_tf.signals import probe_eeg

    probe = np.asarray(probe_eeg(PROBE_BATCH, channels, samples), np.float32)
    reference = {k: np.asarray(v) for k, v in tracing.named_outputs(model, probe).items()}
    (name,) = reference
    return tracing.min_cosine({name: function(probe)}, reference)


def weights_fingerprint(model: Any) -> np.ndarray:
    """The sum of the bits (int32, wrapping) of every row (last axis) of every weight of
    ``model``, in order: ``[rows]`` int32.

    A change of any value changes its row's sum, and so does moving rows or whole weights
    around (a transposed kernel too, unless symmetric); only values swapped within one row
    keep it. Computed in one pass over the weights (small: 4.4 M weights, 14,784 rows, 2-4 ms
    on 2 cores, plus the interpreter's weights pushed out of the cache) only when they may
    have changed: :class:`WeightsWatch` tells that in ~1 ms from where their buffers lie.
    """
    watch = model.__dict__.get("_weights_watch")
    if watch is None:
        watch = model.__dict__["_weights_watch"] = WeightsWatch(model)
    return watch.fingerprint()


class WeightsWatch:
    """:func:`weights_fingerprint` of one model, computed again only when a weight's buffer
    moved.

    It holds the tensors its fingerprint was computed from: reads of the variables, which
    share their buffers. TensorFlow keeps a read immutable (a variable's tensor is copied
    before a write while anything else holds it: ``assign``, an optimizer's step, a
    checkpoint read, in eager, in a graph or under XLA), so while every variable's buffer is
    still the held one, no weight changed and the held fingerprint stands. A moved buffer
    (or a device that is not the CPU, whose buffers it does not compare) costs one full pass.
    Holding the reads costs no memory while the weights stay; after they change, their old
    buffers are held until the next call (and the first write of each is a copy).
    """

    def __init__(self, model: Any):
        import tensorflow as tf

        variables = [getattr(v, "value", v) for v in model.weights]
        read = tf.function(lambda: [tf.convert_to_tensor(v) for v in variables])
        self._read = read.get_concrete_function()  # called as is: no signature matching
        self._sums = tf.function(lambda tensors: tf.concat([_row_sums(t) for t in tensors], axis=0))
        self._held: list[Any] = []
        self._addresses: list[int] | None = None
        self._fingerprint: np.ndarray | None = None
        self._lock = threading.Lock()

    def fingerprint(self) -> np.ndarray:
        """The weights' fingerprint now (the held array itself while they stay)."""
        with self._lock:
            tensors = self._read()
            addresses = _buffer_addresses(tensors)
            if addresses is None or addresses != self._addresses:
                self._fingerprint = self._sums(tensors).numpy()
                self._held, self._addresses = tensors, addresses
            return self._fingerprint


def _buffer_addresses(tensors: list[Any]) -> list[int] | None:
    """Where each of ``tensors`` keeps its values (host memory), or None when one lies on
    another device (reading it to the host would copy it)."""
    addresses = []
    for tensor in tensors:
        if not tensor.backing_device.endswith("CPU:0"):
            return None
        addresses.append(np.asarray(tensor).__array_interface__["data"][0])
    return addresses


def _row_sums(variable: tf.Variable) -> tf.Tensor:
    """``[rows]`` int32: the wrapping sum of the bits of each row of ``variable``."""
    import tensorflow as tf

    if variable.dtype.size == 4:
        bits = tf.bitcast(variable, tf.int32)
    else:  # one int per byte (bitcast adds the bytes as a last axis)
        bits = tf.cast(tf.bitcast(variable, tf.uint8), tf.int32)
    width = bits.shape[-1] if bits.shape.rank else 1
    return tf.reduce_sum(tf.reshape(bits, [-1, width]), axis=1)
