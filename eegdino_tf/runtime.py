"""Predict's runtime: the base class of the package's Keras models, its fast ``predict`` and the
helpers that size and run its batches.

:class:`EEGModel` checks EEG input before Keras does (errors that say what EEG it wants),
refuses a window whose attention cannot fit in memory, and gives ``predict`` a fast path for
in-memory arrays: one cached ``tf.function`` (XLA where it measured faster) run in
:func:`parallel_calls` parts on a CPU, or LiteRT (:mod:`eegdino_tf.litert`), which the default
``runtime="auto"`` takes on a CPU where a conversion is at hand or pays for itself
(:meth:`EEGModel.choose_runtime`). The models themselves (:mod:`eegdino_tf.models`) build on it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from eegdino_tf import hardware
from eegdino_tf.config import PATCH_SIZE, RUNTIMES, batch_count
from eegdino_tf.errors import ConfigError, InputError
from eegdino_tf.layers import (
    NON_FINITE_EEG,
    GraphForm,
    check_eeg_input,
    check_eeg_shape,
    graph_form,
)
from eegdino_tf.litert import (
    LiteRTFunction,
    check_quantize,
    litert_conversion,
    weights_fingerprint,
)


class EEGModel(keras.Model):
    """Checks the EEG input before Keras' own machinery, so errors say what EEG it wants."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = args[0] if args else kwargs.get("inputs")
        check_eeg_input(inputs, self.partial_patch)
        shape = tuple(inputs.shape)
        if None not in shape[1:]:  # an array, or a traced tensor of known channels and samples
            # A batch unknown at trace time (Keras' fit on a tf.data pipeline) holds at least one.
            check_attention_memory(shape, shape[0] or 1, self.num_heads)
        return super().__call__(*args, **kwargs)

    def predict(
        self,
        x,
        batch_size=None,
        verbose="auto",
        steps=None,
        callbacks=None,
        runtime="auto",
        quantize="none",
    ):
        """Keras ``predict``, with a fast path for in-memory arrays; ``batch_size`` defaults to
        :func:`default_batch_size` (8 on a CPU, 32 on a GPU).

        For a NumPy array or tensor (no ``steps``, no ``callbacks``) the batches go straight
        through one cached ``tf.function`` instead of Keras' data pipeline, which costs tens of
        milliseconds a call, into one preallocated result (memory: the input plus the output,
        never a copy of either; input that fits one batch returns the function's output
        itself). That function uses XLA where it measured faster (see
        :func:`default_jit_compile`) unless ``compile(jit_compile=True|False)`` chose; under XLA
        the last partial batch is padded so the compiled program is reused, not rebuilt. On a
        CPU each batch runs as :func:`parallel_calls` parts at once (:func:`run_in_parts`).
        With ``check_finite``, NaN or Inf input is an error, and so is output that is not
        finite although its input was (see :func:`non_finite_output`).
        Anything else (``tf.data``, generators, callbacks) takes Keras' own ``predict``.

        ``runtime="litert"`` runs the batches through LiteRT instead (float32 models, on the
        CPU; faster there at the small and medium sizes): arrays and tensors as above, or a
        ``tf.data.Dataset`` of batches (``x`` or ``(x, y, ...)`` elements; ``steps`` of them
        at most). ``quantize="dynamic-int8"`` (LiteRT only) runs int8 weights, refused where
        its output strays from float32's on a probe. See :mod:`eegdino_tf.litert`.
        ``runtime="keras"`` always takes the Keras path above, ``"xla"`` that path compiled
        by XLA whatever ``compile`` chose; the default ``"auto"`` takes LiteRT where
        :meth:`choose_runtime` says so, else ``"keras"``.
        """
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        check_quantize(runtime, quantize)
        if isinstance(x, (np.generic, list, tuple, dict)):
            check_eeg_input(x, self.partial_patch)
        if runtime == "auto" and isinstance(x, tf.data.Dataset) and not callbacks:
            shape = _batch_shape(x.element_spec)
            found = shape is not None and self._auto_litert(*shape, 0, quantize) is not None
            runtime = "litert" if found else "keras"
        if runtime == "litert" and isinstance(x, tf.data.Dataset) and not callbacks:
            return self._predict_dataset_litert(x, steps, verbose, quantize)
        if steps is not None or callbacks or not isinstance(x, (np.ndarray, tf.Tensor)):
            if runtime == "litert" or quantize != "none":
                raise ConfigError(
                    "runtime='litert' takes a NumPy array, a tensor or a tf.data.Dataset of "
                    "batches, without callbacks (and steps only with a dataset)"
                )
            return super().predict(
                x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
            )
        check_eeg_shape(x.shape, self.partial_patch)
        size = default_batch_size() if batch_size is None else batch_count(batch_size)
        check_attention_memory(x.shape, min(size, len(x)), self.num_heads)
        channels, samples = int(x.shape[1]), int(x.shape[2])
        function = None
        if runtime == "auto":
            function = self._auto_litert(channels, samples, len(x), quantize)
        elif runtime == "litert":
            function = self.litert_function(channels, samples, quantize)
        if function is not None:
            pad = True
        else:
            chosen = self.__dict__.get("_jit_chosen", False)
            jit = self.jit_compile if chosen else default_jit_compile(self.precision)
            jit = True if runtime == "xla" else jit
            if not jit and self.precision == "mixed_bfloat16" and frozen_fits(self):
                compiled = self.frozen_function(channels, samples)
            else:
                compiled = self.inference_function(jit)
            pad, calls = jit, parallel_calls()  # XLA: a program per batch size, so padded

            def function(batch: np.ndarray) -> np.ndarray:
                return run_in_parts(compiled, batch, calls, equal=jit)

        starts = range(0, len(x), size)
        progress = keras.utils.Progbar(len(starts)) if verbose in (1, "auto") else None
        result = None
        for step, start in enumerate(starts):
            batch = np.asarray(x[start : start + size], dtype=np.float32)
            # Padded: keep the batch size the XLA program or LiteRT's tensors have.
            y = self._run_batch(function, batch, start, size if pad and len(x) > size else 0)
            if progress is not None:
                progress.update(step + 1)
            if len(starts) == 1:
                return y  # one batch: the function's own output, no copy
            if result is None:
                result = np.empty((len(x), *y.shape[1:]), dtype=y.dtype)
            result[start : start + len(batch)] = y
        return result

    def _run_batch(self, function: Any, batch: np.ndarray, start: int, pad_to: int) -> np.ndarray:
        """``function(batch)`` for examples ``start...`` of the input, with the finite checks,
        the batch padded to ``pad_to`` examples (repeating its last) when shorter."""
        real = len(batch)
        if self.check_finite and not np.isfinite(batch).all():
            raise InputError(f"example {start + _first_bad(batch)}: {NON_FINITE_EEG}")
        y = function(padded(batch, pad_to))[:real]
        if self.check_finite and not np.isfinite(y).all():
            raise InputError(non_finite_output(batch, y, start, self.precision))
        return y

    def _predict_dataset_litert(
        self, dataset: Any, steps: int | None, verbose: Any, quantize: str
    ) -> Any:
        """``predict(dataset, runtime="litert")``: each batch of ``dataset`` (the first part
        of ``(x, y, ...)`` elements) through LiteRT, in order; a batch shorter than the first
        is padded to its size (LiteRT's tensors keep their shape)."""
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ConfigError(f"steps must be a positive integer, got {steps!r}")
            dataset = dataset.take(steps)
        known = int(dataset.cardinality())  # < 0: infinite or unknown
        progress = None
        if verbose in (1, "auto"):
            progress = keras.utils.Progbar(known if known >= 0 else None)
        outputs, seen, size = [], 0, 0
        for step, element in enumerate(dataset):
            batch = element[0] if isinstance(element, (tuple, list)) else element
            if not isinstance(batch, tf.Tensor):
                raise InputError(
                    f"runtime='litert' takes dataset elements x or (x, y, ...) with x a "
                    f"[batch, channels, samples] tensor; got {type(batch).__name__}"
                )
            batch = batch.numpy().astype(np.float32, copy=False)
            check_eeg_shape(batch.shape, self.partial_patch)
            check_attention_memory(batch.shape, len(batch), self.num_heads)
            size = size or len(batch)
            function = self.litert_function(int(batch.shape[1]), int(batch.shape[2]), quantize)
            outputs.append(self._run_batch(function, batch, seen, size))
            seen += len(batch)
            if progress is not None:
                progress.update(step + 1)
        if not outputs:
            raise InputError("the dataset has no batches to predict on")
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def litert_function(
        self,
        channels: int,
        samples: int,
        quantize: str = "none",
        cache: bool = True,
        convert: bool = True,
    ) -> LiteRTFunction | None:
        """The model converted for LiteRT at this input shape (any batch) and ``quantize``:
        made on first use (found on disk when this machine converted it before, unless
        ``cache=False``: :mod:`eegdino_tf.litert_cache`), and made again whenever the weights
        are no longer those it was made from, however they changed (``fit``, ``set_weights``,
        ``assign``, a training step of one's own, a checkpoint read, through this model, a
        model it is part of or a part of it): checked on every call
        (:func:`~eegdino_tf.litert.weights_fingerprint`). ``convert=False`` returns None
        where it would convert: nothing in this model with its current weights, and nothing
        on disk (the disk is looked up once per shape until a conversion goes stale)."""
        key = (channels, samples, quantize)
        # One conversion at a time, also for threads that share us.
        with self.__dict__.setdefault("_litert_lock", threading.Lock()):
            functions = self.__dict__.setdefault("_litert_functions", {})
            looked_up = self.__dict__.setdefault("_litert_looked_up", set())
            if functions:
                weights = weights_fingerprint(self)
                for stale in [k for k, made in functions.items() if not made.made_from(weights)]:
                    del functions[stale]  # freed before converting again
                    looked_up.discard(stale)
            if key in functions:
                return functions[key]
            if not convert and key in looked_up:
                return None
            looked_up.add(key)
            made = litert_conversion(
                self, channels, samples, quantize, cache=cache, convert=convert
            )
            if made is not None:
                functions[key] = made
            return made

    def choose_runtime(
        self, channels: int, samples: int, examples: int = 0, quantize: str = "none"
    ) -> str:
        """What ``predict(runtime="auto")`` runs ``examples`` examples ``[channels, samples]``
        with: ``"litert"`` or ``"keras"``.

        LiteRT when it can run this model here (float32, no GPU, ai-edge-litert installed)
        and a conversion for this shape is at hand: in this model with its current weights, or
        in the disk cache (:mod:`eegdino_tf.litert_cache`; looked up once per shape, then
        loaded), or when the work is large enough to pay for converting (at least
        :data:`AUTO_CONVERT_TOKENS` tokens, examples x (1 + channels x seconds), and memory
        for the conversion): then it converts now. Otherwise Keras (XLA): a first call never
        waits for a conversion it would not win back. ``quantize`` other than ``"none"`` is
        LiteRT's alone."""
        found = self._auto_litert(channels, samples, examples, quantize)
        return "keras" if found is None else "litert"

    def _auto_litert(
        self, channels: int, samples: int, examples: int, quantize: str
    ) -> LiteRTFunction | None:
        """The LiteRT function :meth:`choose_runtime` picks, or None for Keras."""
        if quantize != "none":
            return self.litert_function(channels, samples, quantize)
        if not litert_possible(self.precision):
            return None
        found = self.litert_function(channels, samples, convert=False)
        if found is not None:
            return found
        tokens = examples * (1 + channels * (samples // PATCH_SIZE))
        if tokens >= AUTO_CONVERT_TOKENS and conversion_fits(self):
            return self.litert_function(channels, samples)
        return None

    def reset_litert(self) -> None:
        """Forget the LiteRT conversions now, freeing their memory (a conversion whose weights
        changed is replaced on its next use anyway), and what ``runtime="auto"`` found on
        disk."""
        self.__dict__.pop("_litert_functions", None)
        self.__dict__.pop("_litert_looked_up", None)

    @property
    def num_heads(self) -> int:
        """Attention heads of the encoder's blocks."""
        return getattr(self, "encoder", self).config.num_heads

    def compile(self, *args: Any, jit_compile: Any = "auto", **kwargs: Any) -> None:
        """Keras ``compile``; ``predict`` follows an explicit ``jit_compile`` (``"auto"``
        keeps its own per-machine choice, :func:`default_jit_compile`)."""
        self.__dict__["_jit_chosen"] = jit_compile != "auto"
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile as a ``.keras`` file says (Keras skips a model whose ``compile`` is its
        own), so its optimizer and the optimizer's state load with it."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def inference_function(self, jit_compile: bool) -> tf.types.experimental.GenericFunction:
        """The cached ``tf.function`` (XLA or not) that :meth:`predict` runs: ``x -> y``;
        under XLA written in :data:`XLA_GRAPH_FORM`, without it in :func:`graph_path_form`."""
        cache = self.__dict__.setdefault("_inference_functions", {})
        if jit_compile not in cache:
            form = XLA_GRAPH_FORM if jit_compile else graph_path_form()

            def infer(x: tf.Tensor) -> tf.Tensor:
                with graph_form(form):
                    return self(x, training=False)

            cache[jit_compile] = tf.function(infer, jit_compile=jit_compile, reduce_retracing=True)
        return cache[jit_compile]

    def frozen_function(self, channels: int, samples: int) -> Any:
        """:meth:`inference_function` without XLA, for ``[any, channels, samples]``, with the
        weights folded into constants: what :meth:`predict` runs for ``mixed_bfloat16`` on the graph
        path (CPUs with native bfloat16) where memory allows (:func:`frozen_fits`). oneDNN keeps its
        reordered bfloat16 weights only for constants; with variables it reorders them on every call
        (docs/performance.md). The same arithmetic as the variables' graph (oneDNN's bfloat16
        kernels round differently per batch size either way: small, 4 vs 2 examples, up to 0.06
        apart, NRMSE to float32 6.3e-3 in both). Made again when the weights change, however they
        changed: every call compares their :func:`~eegdino_tf.litert.weights_fingerprint` with the
        one it was made from. Holds about :data:`FROZEN_BYTES_PER_WEIGHT_BYTE` times the float32
        weights while it lives."""
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        weights = weights_fingerprint(self)
        with self.__dict__.setdefault("_frozen_lock", threading.Lock()):
            made = self.__dict__.setdefault("_frozen_functions", {})
            for key in [k for k, (held, _) in made.items() if not np.array_equal(held, weights)]:
                del made[key]  # stale: freed before freezing again
            if (channels, samples) not in made:
                spec = tf.TensorSpec([None, channels, samples], tf.float32, name="eeg")
                concrete = self.inference_function(False).get_concrete_function(spec)
                constants = convert_variables_to_constants_v2(concrete)
                hardware.release_freed_memory()  # the freeze's copies, back to the system
                made[(channels, samples)] = (weights, lambda x: constants(x)[0])
            return made[(channels, samples)][1]


#: Memory a :meth:`~EEGModel.frozen_function` holds per byte of float32 weights, roughly: the
#: frozen graph, the one grappler optimized from it (the bfloat16 constants folded) and
#: oneDNN's reordered weights (measured RSS over the model's after a call: small 12.1x, medium
#: 7.8x; the freeze itself peaks at 10.3x for medium).
FROZEN_BYTES_PER_WEIGHT_BYTE = 12


def frozen_fits(model: Any) -> bool:
    """Whether ``model``'s :meth:`~EEGModel.frozen_function` takes at most a quarter of this
    machine's memory (24 GB: medium's 1.5 GB does, large's 9 GB does not; that falls back to
    the variables' graph)."""
    need = FROZEN_BYTES_PER_WEIGHT_BYTE * 4 * model.count_params()
    memory = hardware.physical_memory()
    return memory is None or need <= memory / 4


#: ``runtime="auto"`` converts for LiteRT (without a conversion at hand) when one call holds
#: at least this many tokens, examples x (1 + channels x seconds): where converting pays for
#: itself in that call. A conversion takes about 2 us per weight on 2 cores (small 9 s) and
#: LiteRT saves about a tenth of XLA's time at batch 8 (docs/performance.md), so converting
#: pays after about ten conversions' worth of XLA work: small, 19 x 10 s windows, ~5,000
#: windows (an hour and a half of XLA at ~70 windows/s). Both times grow with the weights, so
#: one count of tokens serves every size.
AUTO_CONVERT_TOKENS = 1_000_000


def litert_possible(precision: str) -> bool:
    """Whether ``runtime="auto"`` may take LiteRT here: a float32 model, no GPU (where XLA
    runs it), and ai-edge-litert installed."""
    if precision != "float32" or hardware.detect().gpus:
        return False
    return importlib.util.find_spec("ai_edge_litert") is not None


def conversion_fits(model: Any) -> bool:
    """Whether converting ``model`` for LiteRT fits this machine's memory."""
    from eegdino_tf.tracing import check_conversion_memory

    try:
        check_conversion_memory(model)
    except ConfigError:
        return False
    return True


def _batch_shape(spec: Any) -> tuple[int, int] | None:
    """``(channels, samples)`` of a dataset's batches (the first part of ``(x, y, ...)``
    elements), when its element spec fixes them."""
    spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    shape = getattr(spec, "shape", None)
    if shape is None or shape.rank != 3 or None in shape[1:]:
        return None
    return int(shape[1]), int(shape[2])


#: How :meth:`~EEGModel.inference_function` writes the model for XLA: the softmax's row sums
#: from the attention matmul (small, 2 cores: 1.11x-1.12x the samples/s at batch 1 and 8).
XLA_GRAPH_FORM = GraphForm(softmax="matmul")
#: How :meth:`~EEGModel.inference_function` writes the model without XLA where oneDNN runs
#: bfloat16 on the CPU: the softmax in the compute dtype, the same numbers without two casts
#: (medium, mixed_bfloat16, batch 8: 1.07x; float32 has no casts to skip), and each LayerNorm
#: one oneDNN kernel.
ONEDNN_GRAPH_FORM = GraphForm(softmax="native", layernorm="fused")


def graph_path_form() -> GraphForm:
    """How :meth:`~EEGModel.inference_function` writes the model without XLA: in
    :data:`ONEDNN_GRAPH_FORM` on a CPU whose bfloat16 kernels are oneDNN's, else in the
    default form (Eigen's bfloat16 softmax, without oneDNN, would sum in bfloat16)."""
    hw = hardware.detect()
    return ONEDNN_GRAPH_FORM if hw.onednn_bf16 and not hw.gpus else GraphForm()


def check_attention_memory(shape: tuple[int, ...], batch: int, num_heads: int) -> None:
    """Raise :class:`InputError` when the attention weights of one batch alone (``[batch,
    heads, N, N]`` float32, for N tokens an example) would not fit in this machine's physical
    memory: such a run could only end with the process killed."""
    channels, samples = int(shape[1]), int(shape[2])
    tokens = 1 + channels * (samples // PATCH_SIZE)
    need, memory = batch * num_heads * tokens**2 * 4, hardware.physical_memory()
    if memory is not None and need > memory:
        held, fix = "one example", "shorter windows (encode: --window)"
        if batch > 1:
            held, fix = f"one batch of {batch}", f"{fix} or a smaller batch_size"
        raise InputError(
            f"EEG input of {channels} channels x {samples / PATCH_SIZE:g} s is {tokens} tokens "
            f"an example: the attention weights of {held} alone would take "
            f"{need / 2**30:,.1f} GiB, more than this machine's {memory / 2**30:,.1f} GiB of "
            f"memory; use {fix}"
        )


def _first_bad(values: np.ndarray) -> int:
    """Index of the first example (axis 0) holding a non-finite value."""
    return int(np.argmin(np.isfinite(values).reshape(len(values), -1).all(axis=1)))


def non_finite_output(batch: np.ndarray, outputs: np.ndarray, offset: int, precision: str) -> str:
    """The error for NaN/Inf ``outputs`` of finite ``batch`` (examples from ``offset`` on)."""
    bad = _first_bad(outputs)
    peak = float(np.abs(batch[bad]).max())
    cause = (
        f"the input is probably not in microvolts (largest |value| {peak:.3g}; "
        "EEG is about 1-1000 uV: multiply volts by 1e6)"
    )
    if precision != "float32":
        cause += f", or it overflows precision={precision!r} (try precision='float32')"
    return (
        f"the model's output for example {offset + bad} is not finite although its input is; "
        f"{cause}"
    )


#: ``predict``'s batch size on a CPU when none is given: per example, 8 ran faster than Keras'
#: 32 at every size (docs/performance.md: small 1.06x-1.4x, medium 1.04x-1.09x).
CPU_BATCH_SIZE = 8


#: Parts of each batch :meth:`~EEGModel.predict` runs at once on a CPU, each a compiled call
#: of its own: one call of this model's hundreds of short operations leaves cores idle between
#: them, which a second call fills (2 cores, XLA, batch 8: small 1.2x the samples/s, medium
#: 1.08x; docs/performance.md).
CPU_PARALLEL_CALLS = 2


def parallel_calls() -> int:
    """How many parts of a batch :meth:`~EEGModel.predict` runs at once: 1 on a GPU, else
    :data:`CPU_PARALLEL_CALLS`, at most TensorFlow's CPU threads (1 thread: 1 call)."""
    if hardware.detect().gpus:
        return 1
    return min(CPU_PARALLEL_CALLS, hardware.cpu_threads())


def padded(batch: np.ndarray, length: int) -> np.ndarray:
    """``batch`` with its last example repeated up to ``length`` examples (itself when as
    long): a compiled program or LiteRT's tensors keep the batch size they were made for."""
    short = length - len(batch)
    return np.concatenate([batch, np.repeat(batch[-1:], short, axis=0)]) if short > 0 else batch


def run_in_parts(compiled: Any, batch: np.ndarray, parts: int, equal: bool) -> np.ndarray:
    """``compiled(batch)`` as ``parts`` calls on consecutive slices of the batch, run at once
    (the first in this thread), outputs joined in order. ``equal``: every slice as long as the
    first, the last padded by repeating its last example (an XLA program per slice length)."""
    step = -(-len(batch) // max(1, min(parts, len(batch))))
    slices = [batch[start : start + step] for start in range(0, len(batch), step)]

    def call(part: np.ndarray) -> np.ndarray:
        y = compiled(tf.constant(padded(part, step if equal else 0))).numpy()
        return y[: len(part)]

    if len(slices) == 1:
        return call(slices[0])
    others = [_parts_pool(os.getpid()).submit(call, part) for part in slices[1:]]
    return np.concatenate([call(slices[0]), *(other.result() for other in others)])


@functools.cache
def _parts_pool(pid: int) -> ThreadPoolExecutor:
    """The worker threads every model's :func:`run_in_parts` shares, made on first use in each
    process (``pid``: a forked child does not inherit its parent's threads)."""
    return ThreadPoolExecutor(CPU_PARALLEL_CALLS - 1, "eegdino-predict")


def default_batch_size() -> int:
    """``predict``'s batch size when none is given: Keras' 32 on a GPU, :data:`CPU_BATCH_SIZE`
    on a CPU (the attention weights of 32 examples, 37 MB a layer for small, leave the caches)."""
    return 32 if hardware.detect().gpus else CPU_BATCH_SIZE


def default_jit_compile(precision: str) -> bool:
    """Whether :meth:`predict` uses XLA when ``compile`` did not say, for this machine.

    Measured on CPUs (``eegdino-tf bench``, docs/performance.md): XLA for float32 and
    mixed_float16 on every CPU; for mixed_bfloat16, XLA except on CPUs with native bfloat16
    (AMX-BF16, AVX512-BF16), where oneDNN's bfloat16 kernels beat it. On a GPU, XLA: not yet
    measured (``python -m benchmarks.gpu`` does).
    """
    hw = hardware.detect()
    if hw.gpus or precision != "mixed_bfloat16":
        return True
    return not (hw.native_bf16 and hw.onednn_bf16)
