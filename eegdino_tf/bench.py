"""``eegdino-tf bench``: how fast the Keras encoder runs, against the PyTorch reference.

For every size, batch and precision it times the encoder on EEG-like random microvolts
(random weights: speed does not depend on their values) through several runtimes:

- ``eager``: ``model(x)``, op by op;
- ``predict``: ``model.predict(x, batch_size=B)``, what users call (it picks XLA or not);
- ``graph`` / ``xla``: ``tf.function(model)`` without / with ``jit_compile=True``;
- ``tflite`` / ``onnx``: a float32 export made by :mod:`eegdino_tf.export`, run by LiteRT /
  ONNX Runtime (skipped, with a note, when that module or runtime is missing);
- ``torch`` / ``torch-bf16``: braindecode's ``EEGDINO`` (the reference implementation) in
  float32, and under ``torch.autocast("cpu", torch.bfloat16)``.

Every runtime gets the same thread count. After warm-up calls the contenders take turns
(round-robin within each repetition, so drifting machine load hits all of them alike; a short
call's turn starts with an untimed call, so the runtime before it leaves no cold caches
behind) and the median of the timed calls is reported, with samples/s, achieved GFLOP/s, the
share of the machine's matmul peak that is, and the speed ratio to PyTorch at the same
precision. With ``--isolated`` each contender is then timed again the same way, alone in a
fresh process (rows of mode ``isolated``; the round-robin ones are of mode ``round-robin``;
ratios compare rows of one mode).

The report also holds the machine's matmul peak (one large square matmul in TensorFlow and
PyTorch, float32 and bfloat16, at the same thread count), the per-call overhead of
``predict`` over the bare compiled call it makes, the RSS of some runtimes at the largest size
and batch 8, each measured alone in a fresh process (model loaded, peak of the first call,
peak of a later one), an RSS check over many repeated calls (no growth expected), and what
machine it ran on (CPU model and flags). It is printed as a table and written as JSON and a
PNG chart.

Exports run in a child process under a memory cap (they need far more memory than the model:
large's do not fit in 24 GB), and are skipped, with a note, when they would not fit.
TensorFlow and PyTorch are imported only when the benchmark runs, after the thread counts are
set (they cannot change once TensorFlow has started).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import CONV_POSITIONS, PATCH_SIZE, PRESETS, EEGDinoConfig, get_config
from eegdino_tf.errors import EEGDinoError
from eegdino_tf.files import atomic_output

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
RUNTIMES = ("eager", "predict", "graph", "xla", "tflite", "onnx", "torch", "torch-bf16")
#: The PyTorch reference runtimes, and the precision of ours each one is compared with.
REFERENCES = {"torch": "float32", "torch-bf16": "mixed_bfloat16"}
#: Runtimes that run a float32 export of the model.
EXPORTED = ("tflite", "onnx")
#: Calls faster than this (ms, once warm) get an untimed call right before each timed one.
LEAD_IN_BELOW_MS = 250.0
#: Share of the memory available at the start that a child process (an export, a memory
#: probe, an isolated timing) may take before it is stopped.
MEMORY_CAP = 0.6
#: How the rows were timed: taking turns with the others, or alone in a fresh process.
ROUND_ROBIN, ISOLATED = "round-robin", "isolated"
MODES = (ROUND_ROBIN, ISOLATED)
#: Side of the square matmul whose speed is the machine's peak (``2 n**3`` FLOPs a call).
PEAK_GEMM = 2048
#: Timed calls of each peak matmul (after an untimed one), fewer when the first call shows
#: they would take longer than :data:`PEAK_BUDGET_MS` together.
PEAK_RUNS = 5
PEAK_BUDGET_MS = 3000.0
#: The matmul peaks: name -> (library, dtype, XLA).
PEAKS = {
    "tf_float32": ("tf", "float32", False),
    "tf_bfloat16": ("tf", "bfloat16", False),
    "tf_xla_float32": ("tf", "float32", True),
    "tf_xla_bfloat16": ("tf", "bfloat16", True),
    "torch_float32": ("torch", "float32", False),
    "torch_bfloat16": ("torch", "bfloat16", False),
}
#: The dtype whose best matmul peak a row of each precision is a fraction of. mixed_float16
#: counts against float32's: CPUs have no fast float16 matmul, so float32's is its ceiling.
PEAK_DTYPE = {"float32": "float32", "mixed_float16": "float32", "mixed_bfloat16": "bfloat16"}
#: Wall time of ``--quick`` (measured: 24.5 s on a 2-core AMD EPYC VM, PyTorch included) and
#: of the full default run (approximate: the last one, without isolated runs, took 40-60
#: minutes there; the isolated runs add one process start, model build and compile per
#: contender, and the timed calls again).
QUICK_TIME = "about 25 s"
FULL_TIME = "roughly 1.5-2 hours (40-60 minutes with --no-isolated)"
DESCRIPTION = (
    "Time the EEG-DINO encoder (Keras eager, predict, graph, XLA; TFLite; ONNX Runtime) against"
    " the PyTorch reference at the same thread count; print a table, write JSON and a PNG chart."
    f" On 2 cores the full default run takes {FULL_TIME} (approximate); --quick {QUICK_TIME}."
)
JSON_NAME = "bench.json"
CHART_NAME = "bench.png"

Runner = Callable[[np.ndarray], Any]


class Unavailable(Exception):
    """A runtime cannot run here (missing package or export); the reason becomes a note."""


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure. ``depth`` overrides the layer count (for smoke tests)."""

    sizes: tuple[str, ...] = ("small", "medium", "large")
    precisions: tuple[str, ...] = PRECISIONS
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


#: ``--quick``: a short smoke run, the real small model through the main runtimes, no exports,
#: memory probes or isolated runs (explicit options still win).
QUICK = {
    "sizes": ("small",),
    "precisions": ("float32",),
    "batches": (1, 8),
    "runtimes": ("predict", "xla", "torch"),
    "runs": 3,
    "warmup": 2,
    "leak_calls": 20,
    "memory_runtimes": (),
    "isolated": False,
}


def _choices(allowed: Sequence[str], none: bool = False) -> Callable[[str], tuple[str, ...]]:
    """Parse a comma-separated subset of ``allowed`` (``"none"``: empty, when ``none``)."""

    def parse(text: str) -> tuple[str, ...]:
        if none and text.strip() == "none":
            return ()
        items = tuple(s.strip() for s in text.split(",") if s.strip())
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated subset of {','.join(allowed)}"
            )
        return items

    return parse


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers like 1,8,32")
    return values


def _positive_int(text: str) -> int:
    (value,) = _positive_ints(text)
    return value


def _quick_text() -> str:
    """What ``--quick`` sets, as ``name value`` pairs."""

    def text(value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(map(str, value)) or "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    return ", ".join(f"{name.replace('_', '-')} {text(v)}" for name, v in QUICK.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the CLI and ``examples/bench.py``)."""
    d = Settings()
    joined = ",".join
    add = parser.add_argument
    add("--sizes", type=_choices(list(PRESETS)), help=f"default {joined(d.sizes)}")
    add("--precisions", type=_choices(PRECISIONS), help=f"default {joined(d.precisions)}")
    add("--batches", type=_positive_ints, help="batch sizes; 1 is latency (default 1,8,32)")
    add("--runtimes", type=_choices(RUNTIMES), help=f"default {joined(d.runtimes)}")
    add("--runs", type=_positive_int, help=f"timed calls per contender (default {d.runs})")
    add("--warmup", type=int, help=f"untimed calls first, at least 1 (default {d.warmup})")
    add("--threads", type=_positive_int, default=d.threads, help="threads for every runtime")
    add("--channels", type=_positive_int, default=d.channels, help="EEG channels (default 19)")
    add("--samples", type=_positive_int, default=d.samples, help="samples per example (2000)")
    add("--depth", type=_positive_int, help="override the layer count (smoke tests)")
    add("--leak-calls", type=int, help=f"repeated calls in the RSS check ({d.leak_calls})")
    add(
        "--memory-runtimes",
        type=_choices(RUNTIMES, none=True),
        help=f"runtimes whose peak RSS is measured, or none (default {joined(d.memory_runtimes)})",
    )
    add(
        "--isolated",
        action=argparse.BooleanOptionalAction,
        help="after the round-robin, time each contender again alone in a fresh process"
        " (default: on; off with --quick)",
    )
    add("--gemm", type=_positive_int, help=f"side of the peak matmul (default {d.gemm})")
    add("--output-dir", type=Path, default=d.output_dir, help="where bench.json/png go")
    add("--quick", action="store_true", help=f"short smoke run, {QUICK_TIME}: {_quick_text()}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed options: explicit options, then ``--quick``'s, then defaults."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return Settings(**{**(QUICK if args.quick else {}), **given})


# ---------------------------------------------------------------------------------------------
# Cost, input, machine, memory
# ---------------------------------------------------------------------------------------------


def flops_per_example(config: EEGDinoConfig, channels: int = 19, samples: int = 2000) -> float:
    """Multiply-add FLOPs (2 per MAC) of one example through the encoder.

    Patch embedding (convs, DFT matmul, spectral projection) plus, per layer, the four dense
    projections and the two attention matmuls; the global token joins after layer 0.
    """
    n = channels * (samples // PATCH_SIZE)
    d, f = config.embed_dim, config.mlp_dim
    c1, c2, c3 = config.conv_channels
    bins = PATCH_SIZE // 2 + 1
    embed = 2 * n * (CONV_POSITIONS * (49 * c1 + 3 * c1 * c2 + 3 * c2 * c3))
    embed += 2 * n * (PATCH_SIZE * 2 * bins + bins * d)
    tokens = [n] + [n + 1] * (config.depth - 1)
    layers = sum(2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d for t in tokens)
    return float(embed + layers)


def eeg_input(batch: int, channels: int, samples: int) -> np.ndarray:
    """Seeded EEG-like microvolts ``[batch, channels, samples]`` (the demo's signal)."""
    from eegdino_tf.commands import eeg_like_signal

    seconds = -(-samples // PATCH_SIZE)
    return eeg_like_signal(channels, seconds, batch=batch)[..., :samples]


def _proc_mb(path: str, field: str) -> float | None:
    """A ``Field:  N kB`` line of a ``/proc`` file (``status``, ``meminfo``) in MiB; None off
    Linux or when the field is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(path) as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return None


def _proc_status_mb(field: str, pid: int | str = "self") -> float | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status`` in MiB."""
    return _proc_mb(f"/proc/{pid}/status", field)


def rss_mb() -> float | None:
    """Resident memory of this process, MiB."""
    return _proc_status_mb("VmRSS")


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs``); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def available_mb() -> float | None:
    """``MemAvailable`` of the machine, MiB."""
    return _proc_mb("/proc/meminfo", "MemAvailable")


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException as err:  # the parent reports it; exceptions may not pickle
        conn.send((False, f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def run_in_child(fn: Callable[..., Any], *args: Any, limit_mb: float | None = None) -> Any:
    """``fn(*args)`` in a fresh (spawned) process, stopped if its RSS passes ``limit_mb``.

    Whatever the call allocates is given back when the child exits, and a call that would
    exhaust the machine's memory is stopped instead. Failures raise :class:`Unavailable`.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, fn, args), daemon=True)
    child.start()
    send.close()
    answer = None
    try:
        while answer is None:
            if receive.poll(0.2):
                try:
                    answer = receive.recv()
                except EOFError:
                    break
            rss = _proc_status_mb("VmRSS", child.pid)
            if limit_mb and rss and rss > limit_mb:
                raise Unavailable(f"stopped at {rss:.0f} MiB RSS, over the {limit_mb:.0f} MiB cap")
            if answer is None and not child.is_alive():
                break
    finally:
        receive.close()
        child.join(timeout=60 if answer else 0)
        if child.is_alive():
            child.kill()
            child.join()
    if answer is None:
        raise Unavailable(f"the process died (exit code {child.exitcode})")
    ok, value = answer
    if not ok:
        raise Unavailable(value)
    return value


def machine_info(threads: int) -> dict[str, Any]:
    """CPU (model, the flags that decide speed, :func:`eegdino_tf.hardware.describe`), cores,
    thread setting, memory and library versions."""
    from eegdino_tf import hardware

    hw = hardware.detect()
    versions = {}
    libraries = (
        "tensorflow",
        "keras",
        "numpy",
        "torch",
        "torchaudio",
        "braindecode",
        "onnxruntime",
    )
    for module in libraries:
        mod = sys.modules.get(module)
        if mod is not None:
            versions[module] = getattr(mod, "__version__", "?")
    total = _proc_mb("/proc/meminfo", "MemTotal")
    return {
        "cpu": hw.cpu,
        "cpu_flags": hw.flag_report(),
        "hardware": hardware.describe(hw),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "memory_gib": None if total is None else round(total / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": _load_average(),
    }


# ---------------------------------------------------------------------------------------------
# Runtimes
# ---------------------------------------------------------------------------------------------


def configure_threads(threads: int) -> dict[str, int]:
    """Give TensorFlow (and PyTorch, if installed) ``threads`` threads, before they start.

    Returns the thread counts in effect: TensorFlow refuses changes once it has run an op
    (as in a test process), and then keeps what it had.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    effective = {
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel op
            torch.set_num_interop_threads(threads)
        effective["torch"] = torch.get_num_threads()
    return effective


#: What makes braindecode importable beside TensorFlow on a CPU (the ``bench`` extra's pins):
#: braindecode imports torchaudio, whose PyPI wheels need the PyTorch build they were made for.
BENCH_INSTALL = "pip install torch==2.9.1 torchaudio==2.9.1 braindecode==1.8.1"


def reference_model(config: EEGDinoConfig, channels: int, samples: int) -> Any:
    """braindecode's ``EEGDINO`` shaped like ``config`` (random weights), returning tokens."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise Unavailable(f"PyTorch is not installed ({err})") from None
    try:
        from braindecode.models import EEGDINO
    except (ImportError, OSError) as err:  # OSError: a torchaudio built for another torch
        raise Unavailable(
            f"braindecode's EEGDINO cannot be imported ({type(err).__name__}: {err});"
            f" the bench extra's versions import: {BENCH_INSTALL}"
        ) from None
    g = config.norm_groups
    c1, c2, c3 = config.conv_channels
    convs = ((c1, 49, 25, 24, (g, c1)), (c2, 3, 1, 1, (g, c2)), (c3, 3, 1, 1, (g, c3)))
    model = EEGDINO(
        n_outputs=2,
        n_chans=channels,
        n_times=samples,
        sfreq=200,
        n_layer=config.depth,
        nhead=config.num_heads,
        dim_feedforward=config.mlp_dim,
        channels_kernel_stride_padding_norm=convs,
        return_features=True,
    )
    return model.eval()


def _torch_runner(model: Any, scale: float, bf16: bool) -> Runner:
    import torch

    def run(x: np.ndarray) -> Any:
        autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = model(torch.from_numpy(x) * scale)  # the reference takes microvolts / 100
        return out["features"]

    return run


#: Peak RSS of an export per byte of float32 weights, roughly: medium's ONNX export (132 MB
#: of weights) peaked at 6.5 GB, large's TFLite and ONNX exports passed 13 GB.
EXPORT_BYTES_PER_WEIGHT_BYTE = 45


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


def _tflite_runner(path: Path, threads: int) -> Runner:
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


def _onnx_runner(path: Path, threads: int) -> Runner:
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
        from eegdino_tf.models import build_encoder

        return self._get(
            ("keras", precision), lambda: build_encoder(self.config, precision=precision)
        )

    def function(self, precision: str, jit_compile: bool) -> Any:
        """The Keras model under ``tf.function`` (one trace per batch size), XLA or not."""
        import tensorflow as tf

        model = self.keras(precision)

        def make() -> Any:
            return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)

        return self._get(("xla" if jit_compile else "graph", precision), make)

    def exported(self, fmt: str, batch: int) -> Path:
        """A float32 export (ONNX: dynamic batch; TFLite: ``batch`` fixed), made in a child
        process under the memory cap. A format that failed once is not tried again; one
        already in ``workdir`` (made earlier in this run, as for an isolated timing) is used."""
        name = f"{self.size}_b{batch}.tflite" if fmt == "tflite" else f"{self.size}.onnx"
        if (self.workdir / name).exists():
            return self.workdir / name
        self._get((fmt, "any batch"), self._export_fits)
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

    def _export_fits(self) -> None:
        """Raise :class:`Unavailable` when an export would likely pass the memory cap."""
        weights = 4 * self.keras("float32").count_params()
        need = EXPORT_BYTES_PER_WEIGHT_BYTE * weights / 2**20
        if self.memory_cap_mb and need > self.memory_cap_mb:
            raise Unavailable(
                f"exporting {weights / 2**20:.0f} MiB of weights needs about {need / 1024:.0f} GiB,"
                f" over the {self.memory_cap_mb / 1024:.0f} GiB cap"
            )

    def reference(self) -> Any:
        s = self.settings
        return self._get(("torch", ""), lambda: reference_model(self.config, s.channels, s.samples))

    def runner(self, runtime: str, precision: str, batch: int) -> Runner:
        """A function that runs one batch through ``runtime`` and returns when it is done."""
        threads = self.settings.threads
        if runtime in REFERENCES:
            return _torch_runner(self.reference(), self.config.input_scale, runtime != "torch")
        if runtime in EXPORTED and precision != "float32":
            raise Unavailable(f"{runtime} runs the float32 export only")
        if runtime == "tflite":
            return _tflite_runner(self.exported("tflite", batch), threads)
        if runtime == "onnx":
            return _onnx_runner(self.exported("onnx", batch), threads)
        if runtime in ("graph", "xla"):
            fn = self.function(precision, jit_compile=runtime == "xla")
            return lambda x: fn(x).numpy()
        model = self.keras(precision)
        if runtime == "predict":
            return lambda x: model.predict(x, batch_size=len(x), verbose=0)
        return lambda x: np.asarray(model(x, training=False))


# ---------------------------------------------------------------------------------------------
# The machine's matmul peak
# ---------------------------------------------------------------------------------------------


def gemm_runner(library: str, dtype: str, jit_compile: bool, n: int) -> tuple[Runner, Any]:
    """A function computing ``a @ a`` in ``library`` (``tf``: a ``tf.function``, XLA or not;
    ``torch``), and its operand ``a``: ``n x n`` seeded values of ``dtype``."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) / np.sqrt(n)
    if library == "torch":
        try:
            import torch
        except ImportError as err:
            raise Unavailable(f"PyTorch is not installed ({err})") from None

        def run(a: Any) -> Any:
            with torch.inference_mode():
                return torch.mm(a, a)

        return run, torch.from_numpy(a).to(getattr(torch, dtype))
    import tensorflow as tf

    fn = tf.function(lambda a: tf.matmul(a, a), jit_compile=jit_compile)
    return (lambda a: fn(a).numpy()), tf.cast(a, dtype)


def gemm_gflop_per_s(run: Runner, a: Any, n: int, runs: int) -> float:
    """GFLOP/s of ``run(a)``, an ``n``-sided square matmul: the median of up to ``runs``
    timed calls after an untimed one (tracing, compiling), fewer past :data:`PEAK_BUDGET_MS`."""
    run(a)
    times: list[float] = []
    while len(times) < runs and sum(times) < PEAK_BUDGET_MS:
        times.append(_time_ms(run, a))
    return 2.0 * n**3 / statistics.median(times) / 1e6


def matmul_peak(
    n: int, runs: int, notes: list[str], log: Callable[[str], None]
) -> dict[str, float | None]:
    """:func:`gemm_gflop_per_s` of each of :data:`PEAKS` (None, with a note, where it cannot
    run), at the thread count :func:`configure_threads` set."""
    peaks: dict[str, float | None] = {}
    for name, (library, dtype, jit_compile) in PEAKS.items():
        peaks[name] = None
        try:
            peaks[name] = gemm_gflop_per_s(*gemm_runner(library, dtype, jit_compile, n), n, runs)
        except Unavailable as err:
            notes.append(f"matmul peak {name}: skipped, {err}")
        except Exception as err:  # e.g. a dtype this library has no kernel for
            notes.append(f"matmul peak {name}: failed, {type(err).__name__}: {err}")
        else:
            log(f"  peak   {name:<16} {peaks[name]:9.1f} GFLOP/s")
    return peaks


def best_peaks(peaks: dict[str, float | None]) -> dict[str, float | None]:
    """The highest matmul peak of each dtype (float32, bfloat16), over libraries and XLA."""
    return {
        dtype: max((v for k, v in peaks.items() if v and k.endswith("_" + dtype)), default=None)
        for dtype in ("float32", "bfloat16")
    }


def add_peak_fractions(rows: list[dict[str, Any]], peaks: dict[str, float | None]) -> None:
    """Add ``fraction_of_peak`` to each row: its GFLOP/s over the best matmul peak of the
    dtype its precision is measured against (:data:`PEAK_DTYPE`); None without that peak."""
    best = best_peaks(peaks)
    for row in rows:
        peak = best[PEAK_DTYPE[row["precision"]]]
        row["fraction_of_peak"] = row["gflop_per_s"] / peak if peak else None


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    runtime: str
    precision: str
    run: Runner
    times_ms: list[float] = dataclasses.field(default_factory=list)
    first_call_ms: float = 0.0
    warm_ms: float = 0.0


def _time_ms(run: Runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    run(x)
    return (time.perf_counter() - start) * 1e3


def contenders_for(models: SizeModels, settings: Settings, batch: int, notes: list[str]):
    """The (runtime, precision) pairs to time at one size and batch; skips go to ``notes``."""
    pairs = [(r, p) for p in settings.precisions for r in settings.runtimes if r not in REFERENCES]
    pairs += [(r, REFERENCES[r]) for r in settings.runtimes if r in REFERENCES]
    found = []
    for runtime, precision in pairs:
        try:
            found.append(Contender(runtime, precision, models.runner(runtime, precision, batch)))
        except Unavailable as err:
            note = f"{runtime} ({precision}): skipped, {err}"
            if note not in notes:
                notes.append(note)
    return found


def measure(
    contenders: list[Contender],
    x: np.ndarray,
    runs: int,
    warmup: int,
    notes: list[str],
    log: Callable[[str], None],
) -> list[Contender]:
    """Warm every contender up, then time ``runs`` rounds, each contender once per round.

    The starting contender rotates from round to round. A turn for a short call (under
    :data:`LEAD_IN_BELOW_MS` warm) starts with one untimed call, so every runtime is timed
    with its caches and thread pools as repeated calls leave them, not as the previous
    contender left them. A contender that fails while warming up is dropped with a note.
    """
    ready = []
    for c in contenders:
        try:
            c.first_call_ms = _time_ms(c.run, x)
            c.warm_ms = c.first_call_ms
            for _ in range(max(warmup - 1, 0)):
                c.warm_ms = _time_ms(c.run, x)
        except Exception as err:  # a runtime that cannot run this model: note it, go on
            notes.append(f"{c.runtime} ({c.precision}): failed, {type(err).__name__}: {err}")
            continue
        log(f"  warm   {c.runtime:<10} {c.precision:<14} first call {c.first_call_ms:9.1f} ms")
        ready.append(c)
    for r in range(runs if ready else 0):
        start = r % len(ready)
        for c in ready[start:] + ready[:start]:
            if c.warm_ms < LEAD_IN_BELOW_MS:
                c.run(x)
            c.times_ms.append(_time_ms(c.run, x))
    for c in ready:
        median = statistics.median(c.times_ms)
        log(f"  timed  {c.runtime:<10} {c.precision:<14} median {median:9.1f} ms")
    return ready


def memory_probe(
    settings: Settings, size: str, runtime: str, precision: str, batch: int
) -> dict[str, Any]:
    """RSS of ``runtime`` alone (run in a fresh process): with the model loaded, the peak
    over the first call (tracing or compiling included), and the peak of a later call."""
    configure_threads(settings.threads)
    with tempfile.TemporaryDirectory(prefix="eegdino-bench-") as tmp:
        x = eeg_input(batch, settings.channels, settings.samples)
        run = SizeModels(settings, size, Path(tmp)).runner(runtime, precision, batch)
        loaded = rss_mb()
        run(x)
        first = _proc_status_mb("VmHWM")
        steady = None
        if _reset_peak_rss():
            run(x)
            steady = _proc_status_mb("VmHWM")
    return {
        "runtime": runtime,
        "precision": precision,
        "loaded_mb": loaded,
        "peak_first_call_mb": first,
        "peak_later_call_mb": steady,
    }


def peak_memory(settings: Settings, notes: list[str], cap_mb: float | None) -> dict[str, Any]:
    """:func:`memory_probe` of each of ``settings.memory_runtimes`` at the memory target,
    each in its own process so that no other model's memory counts."""
    size, batch = settings.memory_target
    found = []
    for runtime in settings.memory_runtimes:
        precision = REFERENCES.get(runtime, "float32")
        try:
            args = (settings, size, runtime, precision, batch)
            found.append(run_in_child(memory_probe, *args, limit_mb=cap_mb))
        except Unavailable as err:
            notes.append(f"memory of {runtime}: skipped, {err}")
    return {"size": size, "batch": batch, "runtimes": found}


def leak_check(contender: Contender, x: np.ndarray, calls: int) -> dict[str, Any]:
    """RSS before and after ``calls`` repeated calls (after 10 warm ones)."""
    for _ in range(10):
        contender.run(x)
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(calls):
        contender.run(x)
    seconds = time.perf_counter() - start
    gc.collect()
    after = rss_mb()
    return {
        "runtime": contender.runtime,
        "precision": contender.precision,
        "batch": len(x),
        "calls": calls,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": None if None in (before, after) else after - before,
        "seconds": seconds,
    }


def _rows(
    size: str, batch: int, flops: float, contenders: list[Contender], mode: str = ROUND_ROBIN
) -> list[dict[str, Any]]:
    rows = []
    for c in contenders:
        median = statistics.median(c.times_ms)
        rows.append(
            {
                "size": size,
                "precision": c.precision,
                "runtime": c.runtime,
                "batch": batch,
                "mode": mode,
                "median_ms": median,
                "min_ms": min(c.times_ms),
                "max_ms": max(c.times_ms),
                "times_ms": c.times_ms,
                "first_call_ms": c.first_call_ms,
                "samples_per_s": batch / median * 1e3,
                "gflop_per_s": flops * batch / median / 1e6,
            }
        )
    return rows


def time_alone(
    settings: Settings, size: str, runtime: str, precision: str, batch: int, workdir: Path
) -> dict[str, Any]:
    """The result row of one contender timed alone in this (fresh) process, the way
    :func:`measure` times it among the others (warm-up, runs, lead-in calls); exports are
    the ones already in ``workdir``."""
    configure_threads(settings.threads)
    models = SizeModels(settings, size, workdir)
    shape = (settings.channels, settings.samples)
    x = eeg_input(batch, *shape)
    contender = Contender(runtime, precision, models.runner(runtime, precision, batch))
    notes: list[str] = []
    ready = measure([contender], x, settings.runs, settings.warmup, notes, log=lambda _: None)
    if not ready:
        raise Unavailable(notes[-1])
    (row,) = _rows(size, batch, flops_per_example(models.config, *shape), ready, ISOLATED)
    return row


def isolated_rows(
    settings: Settings,
    rows: list[dict[str, Any]],
    workdir: Path,
    cap_mb: float | None,
    notes: list[str],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """:func:`time_alone` for the contender of each of ``rows`` (the round-robin's), each in
    a process of its own under the memory cap; failures go to ``notes``."""
    found = []
    for r in rows:
        what = f"{r['runtime']} ({r['precision']}), {r['size']} batch {r['batch']}"
        args = (settings, r["size"], r["runtime"], r["precision"], r["batch"], workdir)
        try:
            found.append(run_in_child(time_alone, *args, limit_mb=cap_mb))
        except Unavailable as err:
            notes.append(f"{what}, alone: failed, {err}")
            continue
        log(f"  alone  {what}: median {found[-1]['median_ms']:.1f} ms")
    return found


def _key(row: dict[str, Any], **changes: Any) -> tuple:
    """``(mode, size, batch, runtime, precision)`` of ``row``, with ``changes``."""
    r = {**row, **changes}
    return r["mode"], r["size"], r["batch"], r["runtime"], r["precision"]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Add speed ratios to each of our rows (above 1: this row is faster), each against a
    row of the same mode.

    ``vs_torch``: PyTorch's median time at the same size, batch and precision over ours;
    ``vs_torch_min``: the same with the fastest calls (less sensitive to machine load);
    ``vs_float32``: the same runtime's float32 median over ours.
    """
    by_key = {_key(r): r for r in rows}
    reference = {p: r for r, p in REFERENCES.items()}
    for row in rows:
        ours = row["runtime"] not in REFERENCES
        torch = by_key.get(_key(row, runtime=reference.get(row["precision"])))
        f32 = by_key.get(_key(row, precision="float32"))
        for name, other, stat in (
            ("vs_torch", torch, "median_ms"),
            ("vs_torch_min", torch, "min_ms"),
            ("vs_float32", f32, "median_ms"),
        ):
            row[name] = other[stat] / row[stat] if ours and other else None


def bare_runtimes() -> dict[str, str]:
    """For each precision, the runtime that times the compiled call ``predict`` makes here:
    ``xla`` or ``graph``, as :func:`eegdino_tf.models.default_jit_compile` picks."""
    from eegdino_tf.models import default_jit_compile

    return {p: "xla" if default_jit_compile(p) else "graph" for p in PRECISIONS}


def predict_overheads(rows: list[dict[str, Any]], bare: dict[str, str]) -> list[dict[str, Any]]:
    """What ``predict`` costs a call over the bare compiled call it makes (``bare``, per
    precision): the difference of the medians, wherever both ran (same mode, size, batch)."""
    by_key = {_key(r): r for r in rows}
    found = []
    for r in rows:
        other = by_key.get(_key(r, runtime=bare[r["precision"]]))
        if r["runtime"] == "predict" and other:
            found.append(
                {
                    "size": r["size"],
                    "precision": r["precision"],
                    "batch": r["batch"],
                    "mode": r["mode"],
                    "bare_runtime": other["runtime"],
                    "predict_ms": r["median_ms"],
                    "bare_ms": other["median_ms"],
                    "overhead_ms": r["median_ms"] - other["median_ms"],
                }
            )
    return found


def run_benchmark(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the report (see the module doc)."""
    threads = configure_threads(settings.threads)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    leaks: list[dict[str, Any]] = []
    leak_size = min(settings.sizes, key=list(PRESETS).index)
    shape = (settings.channels, settings.samples)
    available = available_mb()
    cap_mb = MEMORY_CAP * available if available else None
    load_start = _load_average()
    log(f"matmul peak, {settings.gemm}^3:")
    peaks = matmul_peak(settings.gemm, settings.runs, notes, log)
    with tempfile.TemporaryDirectory(prefix="eegdino-bench-") as tmp:
        for size in settings.sizes:
            models = SizeModels(settings, size, Path(tmp), cap_mb)
            flops = flops_per_example(models.config, *shape)
            for batch in settings.batches:
                log(f"{size}, batch {batch}:")
                x = eeg_input(batch, *shape)
                contenders = contenders_for(models, settings, batch, notes)
                ready = measure(contenders, x, settings.runs, settings.warmup, notes, log)
                rows += _rows(size, batch, flops, ready)
                if size == leak_size and batch == min(settings.batches) and settings.leak_calls:
                    for c in ready:
                        if c.precision == "float32" and c.runtime in ("predict", "graph", "xla"):
                            log(f"  RSS check: {settings.leak_calls} x {c.runtime}")
                            leaks.append(leak_check(c, x, settings.leak_calls))
            del models
            gc.collect()
        if settings.isolated:
            log("each contender alone, in a process of its own:")
            rows += isolated_rows(settings, rows, Path(tmp), cap_mb, notes, log)
    add_ratios(rows)
    add_peak_fractions(rows, peaks)
    memory = peak_memory(settings, notes, cap_mb) if settings.memory_runtimes else {}
    info = machine_info(settings.threads)  # now with the versions of what got imported
    info["threads_in_effect"] = threads
    info["load_average_start"] = load_start
    settings_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()}
    return {
        "machine": info,
        "settings": settings_dict,
        "input": {"channels": settings.channels, "samples": settings.samples, "unit": "uV"},
        "gflop_per_example": {
            s: flops_per_example(settings.config(s), *shape) / 1e9 for s in settings.sizes
        },
        "matmul_peak_gflop_per_s": peaks,
        "results": rows,
        "predict_overhead_ms": predict_overheads(rows, bare_runtimes()),
        "peak_memory": memory,
        "rss_check": leaks,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _flags_text(flags: dict[str, bool]) -> str:
    """``avx2 fma; no amx_bf16`` from a ``{flag: present}`` map."""
    have = " ".join(f for f, present in flags.items() if present) or "none"
    lacking = " ".join(f for f, present in flags.items() if not present)
    return have + (f"; no {lacking}" if lacking else "")


def table_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in the order they were first measured, each isolated row right after the
    round-robin row of the same contender."""
    first: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(_key(r, mode=ROUND_ROBIN), i)
    return sorted(rows, key=lambda r: (first[_key(r, mode=ROUND_ROBIN)], MODES.index(r["mode"])))


def format_report(report: dict[str, Any]) -> str:
    """The report as text: machine, matmul peak, results table, predict's overhead, memory,
    RSS check, notes."""
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    gemm = report["settings"]["gemm"]
    peaks = ", ".join(
        f"{k} {'-' if v is None else f'{v:.1f}'}"
        for k, v in report["matmul_peak_gflop_per_s"].items()
    )
    lines = [
        f"CPU: {m['cpu']} ({_flags_text(m['cpu_flags'])}), {m['usable_cores']} usable of "
        f"{m['logical_cores']} cores, {m['threads']} threads per runtime; "
        f"load average {m['load_average_start']} -> {m['load_average']}",
        f"hardware: {m['hardware']}",
        f"versions: {versions}",
        "input: {channels} x {samples} microvolts; GFLOP per example: ".format(**report["input"])
        + ", ".join(f"{s} {g:.2f}" for s, g in report["gflop_per_example"].items()),
        f"matmul peak ({gemm}x{gemm}x{gemm}, GFLOP/s): {peaks}",
        "",
    ]
    header = ("size", "precision", "runtime", "mode", "batch", "median ms", "min ms",
              "samples/s", "GFLOP/s", "peak", "vs torch", "(min)", "vs f32")  # fmt: skip
    table = [header]
    for r in table_order(report["results"]):
        fraction = r["fraction_of_peak"]
        table.append(
            (
                r["size"],
                r["precision"],
                r["runtime"],
                r["mode"],
                str(r["batch"]),
                f"{r['median_ms']:.1f}",
                f"{r['min_ms']:.1f}",
                f"{r['samples_per_s']:.2f}",
                f"{r['gflop_per_s']:.1f}",
                "-" if fraction is None else f"{fraction:.0%}",
                _ratio(r["vs_torch"]),
                _ratio(r["vs_torch_min"]),
                _ratio(r["vs_float32"]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [
            c.ljust(w) if i < 4 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "mode: timed taking turns with the others (round-robin) or alone in a fresh process"
        " (isolated); ratios compare rows of one mode",
        "peak: GFLOP/s over the best float32 matmul peak (bfloat16's for mixed_bfloat16);"
        " vs torch: PyTorch's median time at the same precision / ours (>1: we are faster);"
        " (min): the same with the fastest calls; vs f32: our float32 time / this one",
    ]
    overheads = report["predict_overhead_ms"]
    if overheads:
        lines += ["", "predict's overhead over the bare compiled call it makes (median ms):"]
        for o in overheads:
            lines.append(
                f"  {o['size']:<7} {o['precision']:<14} batch {o['batch']:<3} {o['mode']:<11} "
                f"{o['overhead_ms']:+7.2f} ({o['predict_ms']:.2f} - {o['bare_runtime']} "
                f"{o['bare_ms']:.2f})"
            )
    memory = report["peak_memory"]
    if memory:
        lines += [
            "",
            f"RSS of each runtime alone, {memory['size']} batch {memory['batch']} (MiB): "
            "model loaded / peak over the first call / peak of a later call",
        ]
        for r in memory["runtimes"]:
            values = (r["loaded_mb"], r["peak_first_call_mb"], r["peak_later_call_mb"])
            text = " / ".join("?" if v is None else f"{v:.0f}" for v in values)
            lines.append(f"  {r['runtime']:<10} {r['precision']:<14} {text}")
    for leak in report["rss_check"]:
        lines.append(
            f"RSS over {leak['calls']} calls of {leak['runtime']} (batch {leak['batch']}): "
            f"{leak['rss_before_mb']:.0f} -> {leak['rss_after_mb']:.0f} MiB "
            f"({leak['growth_mb']:+.1f})"
        )
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def draw_chart(report: dict[str, Any], path: Path) -> bool:
    """Throughput (samples/s at the largest batch, round-robin) per runtime, a panel per size,
    a bar per precision. False (no chart) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["results"] if r["mode"] == ROUND_ROBIN]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    runtimes = [r for r in RUNTIMES if any(row["runtime"] == r for row in rows)]
    precisions = [p for p in PRECISIONS if any(row["precision"] == p for row in rows)]
    fig, axes = plt.subplots(1, max(len(sizes), 1), figsize=(5.5 * max(len(sizes), 1), 4.2))
    axes = np.atleast_1d(axes)
    width = 0.8 / max(len(precisions), 1)
    for ax, size in zip(axes, sizes, strict=False):
        batch = max(r["batch"] for r in rows if r["size"] == size)
        for i, precision in enumerate(precisions):
            values = {
                r["runtime"]: r["samples_per_s"]
                for r in rows
                if (r["size"], r["batch"], r["precision"]) == (size, batch, precision)
            }
            xs = [k + (i - (len(precisions) - 1) / 2) * width for k in range(len(runtimes))]
            ax.bar(xs, [values.get(r, 0.0) for r in runtimes], width, label=precision)
        ax.set_xticks(range(len(runtimes)), runtimes, rotation=30)
        ax.set_title(f"{size}, batch {batch}")
        ax.set_ylabel("samples / s")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"EEG-DINO encoder throughput, {m['cpu']}, {m['threads']} threads", fontsize=10)
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and the chart."""
    settings = settings_from_args(args)
    report = run_benchmark(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report))
    out = Path(settings.output_dir)
    write_json(report, out / JSON_NAME)
    charted = draw_chart(report, out / CHART_NAME)
    print(f"wrote {out / JSON_NAME}" + (f" and {out / CHART_NAME}" if charted else ""))
    return 0


def configure_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``eegdino-tf`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="speed against PyTorch, ONNX Runtime and TFLite",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run_cli)


def main(argv: list[str] | None = None) -> int:
    """``python examples/bench.py``: the same as ``eegdino-tf bench``."""
    parser = argparse.ArgumentParser(prog="bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))
