"""What the benchmark measures: the runtimes and precisions it knows, how rows are timed, and
:class:`Settings`, with the ``--quick`` subset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eegdino_tf.config import PRECISIONS, PRESETS, EEGDinoConfig, get_config

RUNTIMES = (
    "eager",
    "predict",
    "predict-keras",
    "predict-litert",
    "predict-int8",
    "graph",
    "xla",
    "tflite",
    "onnx",
    "torch",
    "torch-bf16",
)
#: What each ``predict-*`` runtime passes to ``predict``: ``predict`` is the default
#: (``runtime="auto"``, timed with this machine's LiteRT conversion cached, so LiteRT where it
#: can run the model), ``predict-keras`` forces Keras (XLA), ``predict-litert`` LiteRT float32
#: and ``predict-int8`` LiteRT with int8 weights (``quantize="dynamic-int8"``).
PREDICT_LITERT = ("predict-litert", "predict-int8")
#: Runtimes that run float32 models only.
FLOAT32_ONLY = (*PREDICT_LITERT, "tflite", "onnx")
#: The PyTorch reference runtimes, and the precision of ours each one is compared with.
REFERENCES = {"torch": "float32", "torch-bf16": "mixed_bfloat16"}
#: The precisions in the order the benchmark measures and reports them: those with a PyTorch
#: reference first (float32, mixed_bfloat16), then the rest (mixed_float16).
BENCH_PRECISIONS = tuple(sorted(PRECISIONS, key=lambda p: p not in REFERENCES.values()))
#: Runtimes that run a float32 export of the model.
EXPORTED = ("tflite", "onnx")
#: How the rows were timed: taking turns with the others, or alone in a fresh process.
ROUND_ROBIN, ISOLATED = "round-robin", "isolated"
MODES = (ROUND_ROBIN, ISOLATED)
#: Side of the square matmul whose speed is the machine's peak (``2 n**3`` FLOPs a call).
PEAK_GEMM = 2048
#: Share of the memory available at the start that a child process (an export, a memory
#: probe, an isolated timing) may take before it is stopped.
MEMORY_CAP = 0.6
JSON_NAME = "bench.json"
CHART_NAME = "bench.png"


class Unavailable(Exception):
    """A runtime cannot run here (missing package or export); the reason becomes a note."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure. ``depth`` overrides the layer count (for smoke tests)."""

    sizes: tuple[str, ...] = ("small", "medium", "large")
    precisions: tuple[str, ...] = BENCH_PRECISIONS
    batches: tuple[int, ...] = (1, 8, 32)
    runtimes: tuple[str, ...] = RUNTIMES
    runs: int = 5
    warmup: int = 2
    threads: int = 2
    channels: int = 19
    samples: int = 2000
    depth: int | None = None
    leak_calls: int = 200
    memory_runtimes: tuple[str, ...] = ("predict", "xla", "torch")
    isolated: bool = True
    gemm: int = PEAK_GEMM
    output_dir: Path = Path("bench_results")

    def config(self, size: str) -> EEGDinoConfig:
        return get_config(size, **({"depth": self.depth} if self.depth else {}))

    @property
    def memory_target(self) -> tuple[str, int]:
        """(size, batch) whose peak memory is reported: the largest size at batch 8."""
        size = max(self.sizes, key=list(PRESETS).index)
        return size, 8 if 8 in self.batches else max(self.batches)


#: ``--quick``: a short smoke run, the real small model through ``predict`` (the default, which
#: runs LiteRT here: its conversion, ~9 s unless cached, is the run's longest step), through
#: ``predict(runtime="keras")`` and PyTorch (no ``xla`` row: the compiled call ``predict``
#: makes is measured inside each call anyway), no exports, memory probes or isolated runs, a
#: smaller peak matmul (1024: 1/8 the work of the default; on the shared 2-core VM
#: TensorFlow's float32 GFLOP/s at 1024 matched 2048's within 6%, PyTorch's was up to 20%
#: lower) and a short RSS check (explicit options still win).
QUICK = {
    "sizes": ("small",),
    "precisions": ("float32",),
    "batches": (1, 8),
    "runtimes": ("predict", "predict-keras", "torch"),
    "runs": 3,
    "warmup": 2,
    "leak_calls": 10,
    "memory_runtimes": (),
    "isolated": False,
    "gemm": 1024,
}
