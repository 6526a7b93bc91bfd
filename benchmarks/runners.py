"""The contenders' runners: Keras (eager, predict, graph, XLA), the float32 exports run by
LiteRT and ONNX Runtime, and braindecode's PyTorch reference; :class:`SizeModels` builds and
shares the models of one size."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import configure_threads, run_in_child
from benchmarks.settings import (
    FLOAT32_ONLY,
    PREDICT_LITERT,
    REFERENCES,
    Settings,
    Unavailable,
)
from eegdino_tf.config import SAMPLING_RATE, EEGDinoConfig
from eegdino_tf.errors import EEGDinoError

#: A function that runs one batch through a runtime and returns when it is done (what it
#: returns is not used). Unlike :data:`eegdino_tf.export.Runner`, it need not return a dict.
BatchRunner = Callable[[np.ndarray], Any]

#: How to install what the PyTorch reference needs: the ``bench`` extra, from the repository
#: root; braindecode imports torchaudio, whose PyPI wheels need the PyTorch build they were
#: made for, so the extra pins versions that import together beside TensorFlow on a CPU.
BENCH_EXTRA = 'pip install ".[bench]"'
BENCH_INSTALL = "pip install torch==2.9.1 torchaudio==2.9.1 braindecode==1.8.1"


def import_torch() -> Any:
    """``torch``, or :class:`Unavailable` naming the extra that installs it."""
    try:
        import torch
    except ImportError as err:
        raise Unavailable(
            f"PyTorch is not installed ({err}); install the bench extra: {BENCH_EXTRA}"
        ) from None
    return torch


def reference_model(
    config: EEGDinoConfig, channels: int, samples: int, *, n_outputs: int = 2, features: bool = True
) -> Any:
    """braindecode's ``EEGDINO`` shaped like ``config`` (random weights, eval mode), returning
    tokens (``features``) or ``n_outputs`` logits."""
    import_torch()
    try:
        from braindecode.models import EEGDINO
    except (ImportError, OSError) as err:  # OSError: a torchaudio built for another torch
        raise Unavailable(
            f"braindecode's EEGDINO cannot be imported ({type(err).__name__}: {err});"
            f" the bench extra ({BENCH_EXTRA}) pins versions that import: {BENCH_INSTALL}"
        ) from None
    g = config.norm_groups
    convs = tuple(
        (width, conv.kernel, conv.stride, conv.padding, (g, width))
        for width, conv in config.conv_blocks
    )
    model = EEGDINO(
        n_outputs=n_outputs,
        n_chans=channels,
        n_times=samples,
        sfreq=int(SAMPLING_RATE),
        n_layer=config.depth,
        nhead=config.num_heads,
        dim_feedforward=config.mlp_dim,
        channels_kernel_stride_padding_norm=convs,
        return_features=features,
    )
    return model.eval()


def torch_runner(model: Any, scale: float, bf16: bool) -> BatchRunner:
    import torch

    def run(x: np.ndarray) -> Any:
        autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = model(torch.from_numpy(x) * scale)  # the reference takes microvolts / 100
        return out["features"]

    return run


def export_encoder(
    settings: Settings, size: str, fmt: str, path: Path, options: dict[str, Any]
) -> Path:
    """Build a float32 encoder of ``size`` (random weights) and write it as ``fmt`` through
    :func:`eegdino_tf.export.export_model`, which checks the artifact against Keras."""
    configure_threads(settings.threads)
    from eegdino_tf.models import build_encoder

    try:
        export = importlib.import_module("eegdino_tf.export")
    except ModuleNotFoundError as err:
        if err.name != "eegdino_tf.export":
            raise
        raise Unavailable("eegdino_tf.export is not part of this build") from None
    model = build_encoder(settings.config(size))
    try:
        export.export_model(fmt, model, path, force=True, **options)
    except EEGDinoError as err:  # a missing extra, or an artifact that failed its check
        raise Unavailable(f"export failed: {err}") from None
    return path


def tflite_runner(path: Path, threads: int) -> BatchRunner:
    from ai_edge_litert.interpreter import Interpreter  # export_tflite needed it too

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def onnx_runner(path: Path, threads: int) -> BatchRunner:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Unavailable(f"onnxruntime is not installed ({err})") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle workers would otherwise spin and slow the runtime timed next (round-robin).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> Any:
        return session.run(None, {name: x})[0]

    return run


class CallTimer:
    """Stands in for a model's ``inference_function`` (or ``frozen_function``,
    ``litert_function``): the same functions, each call's ``(start, end)``
    (``time.perf_counter`` seconds) added to ``spans``."""

    def __init__(self, function_of: Callable[..., Any]):
        self.unwrapped = function_of
        self.spans: list[tuple[float, float]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any] | None:
        function = self.unwrapped(*args, **kwargs)
        if function is None:  # litert_function(..., convert=False) found nothing
            return None

        def timed(x: Any) -> Any:
            start = time.perf_counter()
            y = function(x)
            self.spans.append((start, time.perf_counter()))
            return y

        # frozen_function traces the untimed function: what it times is the frozen one.
        timed.get_concrete_function = getattr(function, "get_concrete_function", None)
        return timed

    def busy_ms(self) -> float:
        """Milliseconds inside at least one call (calls that ran at once count once)."""
        busy, reached = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            busy += max(0.0, end - max(start, reached))
            reached = max(reached, end)
        return busy * 1e3


class PredictRunner:
    """``model.predict`` on one batch with ``runtime`` and ``quantize``; ``own_ms`` gets each
    call's own time: its wall time less the time inside the compiled calls or LiteRT runs it
    makes (the model's :class:`CallTimer` s)."""

    def __init__(self, model: Any, runtime: str = "keras", quantize: str = "none"):
        self.model = model
        self.runtime = runtime
        self.quantize = quantize
        self.own_ms: list[float] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        model = self.model
        timers = (model.inference_function, model.frozen_function, model.litert_function)
        for timer in timers:
            timer.spans.clear()
        start = time.perf_counter()
        y = self.model.predict(
            x, batch_size=len(x), verbose=0, runtime=self.runtime, quantize=self.quantize
        )
        inside = sum(timer.busy_ms() for timer in timers)
        self.own_ms.append((time.perf_counter() - start) * 1e3 - inside)
        return y


class SizeModels:
    """The models of one size, built on first use and shared by that size's runtimes."""

    def __init__(
        self, settings: Settings, size: str, workdir: Path, memory_cap_mb: float | None = None
    ):
        self.settings = settings
        self.memory_cap_mb = memory_cap_mb
        self.size = size
        self.config = settings.config(size)
        self.workdir = workdir
        self._cache: dict[tuple[str, str], Any] = {}

    def _get(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except Unavailable as err:
                self._cache[key] = err
        value = self._cache[key]
        if isinstance(value, Unavailable):
            raise value
        return value

    def keras(self, precision: str) -> Any:
        """The encoder of ``precision``, its ``predict`` timing the compiled call or LiteRT run
        it makes (:class:`CallTimer`)."""
        from eegdino_tf.models import build_encoder

        def make() -> Any:
            model = build_encoder(self.config, precision=precision)
            for name in ("inference_function", "frozen_function", "litert_function"):
                setattr(model, name, CallTimer(getattr(model, name)))
            return model

        return self._get(("keras", precision), make)

    def function(self, precision: str, jit_compile: bool) -> Any:
        """The compiled call ``predict`` makes (``inference_function``: the Keras model under
        ``tf.function``, XLA or not), without the timer: the ``graph`` and ``xla`` runtimes
        share its traces and XLA programs with ``predict``."""
        return self.keras(precision).inference_function.unwrapped(jit_compile)

    def exported(self, fmt: str, batch: int) -> Path:
        """A float32 export (ONNX: dynamic batch; TFLite: ``batch`` fixed), made in a child
        process under the memory cap. A format that failed once is not tried again; one
        already in ``workdir`` (made earlier in this run, as for an isolated timing) is used."""
        name = f"{self.size}_b{batch}.tflite" if fmt == "tflite" else f"{self.size}.onnx"
        if (self.workdir / name).exists():
            return self.workdir / name
        self._get((fmt, "any batch"), lambda: self._export_fits(fmt))
        s = self.settings
        options = {"channels": s.channels, "samples": s.samples}
        if fmt == "tflite":
            options["batch"] = batch
        args = (export_encoder, s, self.size, fmt, self.workdir / name, options)

        def make() -> Path:
            try:
                return run_in_child(*args, limit_mb=self.memory_cap_mb)
            except Unavailable as err:
                self._cache[(fmt, "any batch")] = err
                raise

        return self._get((fmt, name), make)

    def _export_fits(self, fmt: str) -> None:
        """Raise :class:`Unavailable` when an export to ``fmt`` would likely pass the memory
        cap."""
        from eegdino_tf import tracing

        weights = 4 * self.keras("float32").count_params()
        per_byte = {
            "tflite": tracing.CONVERSION_BYTES_PER_WEIGHT_BYTE,
            "onnx": tracing.ONNX_CONVERSION_BYTES_PER_WEIGHT_BYTE,
        }[fmt]
        need = per_byte * weights / 2**20
        if self.memory_cap_mb and need > self.memory_cap_mb:
            raise Unavailable(
                f"exporting {weights / 2**20:.0f} MiB of weights needs about {need / 1024:.0f} GiB,"
                f" over the {self.memory_cap_mb / 1024:.0f} GiB cap"
            )

    def reference(self) -> Any:
        s = self.settings
        return self._get(("torch", ""), lambda: reference_model(self.config, s.channels, s.samples))

    def runner(self, runtime: str, precision: str, batch: int) -> BatchRunner:
        """A function that runs one batch through ``runtime`` and returns when it is done."""
        threads = self.settings.threads
        if runtime in REFERENCES:
            return torch_runner(self.reference(), self.config.input_scale, runtime != "torch")
        if runtime in FLOAT32_ONLY and precision != "float32":
            raise Unavailable(f"{runtime} runs float32 models only")
        if runtime == "tflite":
            return tflite_runner(self.exported("tflite", batch), threads)
        if runtime == "onnx":
            return onnx_runner(self.exported("onnx", batch), threads)
        if runtime in ("graph", "xla"):
            fn = self.function(precision, jit_compile=runtime == "xla")
            return lambda x: fn(x).numpy()
        from eegdino_tf.runtime import litert_possible

        model = self.keras(precision)
        if runtime == "predict-keras":
            return PredictRunner(model, runtime="keras")
        if runtime in PREDICT_LITERT or (runtime == "predict" and litert_possible(precision)):
            if importlib.util.find_spec("ai_edge_litert") is None:
                raise Unavailable(f"ai-edge-litert is not installed; {BENCH_EXTRA} installs it")
            quantize = "dynamic-int8" if runtime == "predict-int8" else "none"
            # Converted (or loaded from the disk cache) now, untimed: the default ``predict``
            # is timed as it runs on a machine that converted this model before.
            model.litert_function(self.settings.channels, self.settings.samples, quantize)
            if runtime != "predict":
                return PredictRunner(model, runtime="litert", quantize=quantize)
        if runtime == "predict":
            return PredictRunner(model, runtime="auto")
        return lambda x: np.asarray(model(x, training=False))
