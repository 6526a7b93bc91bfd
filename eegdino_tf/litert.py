"""LiteRT as :meth:`~eegdino_tf.EEGDinoEncoder.predict`'s runtime on a CPU:
``model.predict(x, runtime="litert")``, ``x`` an array, a tensor or a ``tf.data.Dataset`` of
batches.

LiteRT (TFLite's interpreter, with its XNNPACK kernels) runs this model's attention, at the
small and medium widths, faster than XLA's CPU kernels do (docs/performance.md). On the first
such call for an input shape (channels, samples) the model is converted to the float32 TFLite
flatbuffer that ``eegdino-tf export tflite`` writes, but for any batch size (on 2 cores: ~9 s for
small, ~35 s for medium), and kept. The conversion holds the weights of that moment, so every
call first compares the model's weights with them (:func:`weights_fingerprint`: one pass over
the weights, ~2-4 ms for small on 2 cores) and converts again when they differ, however they
were changed. Needs ai-edge-litert (the ``export`` extra).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import tensorflow as tf

from eegdino_tf import hardware, tracing
from eegdino_tf.errors import ConfigError, require


class LiteRTFunction:
    """``model`` converted once, run by LiteRT: ``batch [B, C, T] float32 -> output`` (NumPy)
    for any ``B``, at the ``channels`` and ``samples`` it was made for. Calls from several
    threads take turns (an interpreter runs one call at a time)."""

    def __init__(self, model: Any, channels: int, samples: int, threads: int | None = None):
        if model.precision != "float32":
            raise ConfigError(
                f"runtime='litert' runs float32 models; this one is precision="
                f"{model.precision!r} (use runtime='keras')"
            )
        litert = require("ai_edge_litert.interpreter", "export")
        self.weights = weights_fingerprint(model)  # before converting: what is converted
        spec = tracing.input_spec(model, None, channels, samples)
        tracing.check_conversion_memory(model)
        flatbuffer = tracing.tflite_flatbuffer(model, spec)
        hardware.release_freed_memory()
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


def weights_fingerprint(model: Any) -> np.ndarray:
    """The sum of the bits (int32, wrapping) of every row (last axis) of every weight of
    ``model``, in order: ``[rows]`` int32, from one cached ``tf.function`` over the variables.

    A change of any value changes its row's sum, and so does moving rows or whole weights
    around (a transposed kernel too, unless symmetric); only values swapped within one row
    keep it. One pass over the weights: for small (4.4 M weights, 14,784 rows) 2-4 ms on 2
    cores, against 70 ms for one example through LiteRT.
    """
    function = model.__dict__.get("_weights_fingerprint")
    if function is None:
        variables = [getattr(v, "value", v) for v in model.weights]
        function = tf.function(lambda: tf.concat([_row_sums(v) for v in variables], axis=0))
        model.__dict__["_weights_fingerprint"] = function
    return function().numpy()


def _row_sums(variable: tf.Variable) -> tf.Tensor:
    """``[rows]`` int32: the wrapping sum of the bits of each row of ``variable``."""
    if variable.dtype.size == 4:
        bits = tf.bitcast(variable, tf.int32)
    else:  # one int per byte (bitcast adds the bytes as a last axis)
        bits = tf.cast(tf.bitcast(variable, tf.uint8), tf.int32)
    width = bits.shape[-1] if bits.shape.rank else 1
    return tf.reduce_sum(tf.reshape(bits, [-1, width]), axis=1)
