"""LiteRT as :meth:`~eegdino_tf.EEGDinoEncoder.predict`'s runtime on a CPU:
``model.predict(x, runtime="litert")``, ``x`` an array, a tensor or a ``tf.data.Dataset`` of
batches.

LiteRT (TFLite's interpreter, with its XNNPACK kernels) runs this model's attention, at the
small and medium widths, faster than XLA's CPU kernels do (docs/performance.md). On the first
such call for an input shape (channels, samples) the model is converted to the float32 TFLite
flatbuffer that ``eegdino-tf export tflite`` writes, but for any batch size (on 2 cores: ~9 s for
small, ~35 s for medium), and kept. The conversion holds the weights of that moment: ``fit``,
``train_on_batch``, ``set_weights`` and ``load_weights`` drop it; after changing weights any
other way, call ``model.reset_litert()``. Needs ai-edge-litert (the ``export`` extra).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape != self._shape:  # a new batch size: size the interpreter's tensors
                self.interpreter.resize_tensor_input(self._input, batch.shape)
                self.interpreter.allocate_tensors()
                self._shape = batch.shape
            self.interpreter.set_tensor(self._input, batch)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output)
