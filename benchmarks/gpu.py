"""The benchmark on a GPU: ``python -m benchmarks.gpu [--output-dir DIR] [--fixtures DIR]``.

What it measures, on the first GPU TensorFlow sees:

1. The GPU's matmul peak: one 8192-sided matmul in TensorFlow (XLA or not) and PyTorch, in
   float32 and float16.
2. Parity there: the encoder on the golden fixture weights (``small`` where ``--fixtures``
   holds it, else the repository's ``tiny``) against the reference's tokens, float32 graph
   and XLA, and mixed_float16's error.
3. Speed: every size, float32 and mixed_float16, batch 1, 8 and 64, through ``predict`` (its
   default: XLA on a GPU), the compiled call without XLA (``graph``) and with it (``xla``),
   and braindecode's PyTorch reference on the same GPU (float32; float16 autocast). Each
   row: the median of ``--runs`` calls after ``--warmup``, numpy in and numpy out (every
   contender pays the host-device copies), samples/s, GFLOP/s and its share of the peak.

float32 means float32 here: TensorFlow runs float32 matmuls as TF32 on GPUs from Ampere on
unless told not to (PyTorch does not by default), which costs parity (about 1e-3), so the run
switches TF32 off; ``--tf32`` leaves it on. The JSON (``bench_gpu.json``) is rewritten after
each size, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.report import write_json
from benchmarks.runners import reference_model
from benchmarks.settings import Unavailable
from benchmarks.timing import time_ms
from benchmarks.workload import eeg_input, flops_per_example
from eegdino_tf.config import EEGDinoConfig, get_config

SIZES = ("small", "medium", "large")
PRECISIONS = ("float32", "mixed_float16")
BATCHES = (1, 8, 64)
RUNTIMES = ("predict", "graph", "xla", "torch")
PEAK_SIDE = 8192
JSON_NAME = "bench_gpu.json"
TINY = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
#: The fixture config overrides the tensors cannot tell (tests/conftest.py's OVERRIDES).
FIXTURE_OPTIONS = {"tiny": {"norm_groups": 4}, "small": {}}


def median_ms(run: Callable[[Any], Any], x: Any, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        run(x)
    return statistics.median(time_ms(run, x) for _ in range(runs))


def tf_matmul(dtype: str, jit_compile: bool, n: int) -> tuple[Callable[[Any], Any], Any]:
    import tensorflow as tf

    fn = tf.function(lambda a: tf.matmul(a, a), jit_compile=jit_compile)
    a = tf.random.stateless_normal((n, n), seed=(0, 0), dtype=dtype) / n**0.5
    return (lambda a: fn(a)[0, 0].numpy()), a  # one element back: the wait, not a copy


def torch_matmul(dtype: str, n: int, device: str) -> tuple[Callable[[Any], Any], Any]:
    import torch

    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype)) / n**0.5
    return (lambda a: torch.mm(a, a)[0, 0].item()), a


def matmul_peaks(
    runs: int, side: int, device: str, log: Callable[[str], None], notes: list[str]
) -> dict[str, Any]:
    peaks: dict[str, Any] = {}
    cases: dict[str, Callable[[], tuple[Callable[[Any], Any], Any]]] = {}
    for dtype in ("float32", "float16"):
        for jit in (False, True):
            name = f"tf{'_xla' if jit else ''}_{dtype}"
            cases[name] = lambda d=dtype, j=jit: tf_matmul(d, j, side)
        cases[f"torch_{dtype}"] = lambda d=dtype: torch_matmul(d, side, device)
    for name, make in cases.items():
        try:
            run, a = make()
            peaks[name] = 2 * side**3 / median_ms(run, a, runs, 2) / 1e6
            log(f"  peak {name:<16} {peaks[name]:10.0f} GFLOP/s")
        except Exception as err:  # torch without CUDA, a dtype without a kernel
            peaks[name] = None
            notes.append(f"matmul peak {name}: {type(err).__name__}: {err}")
    return peaks


def fixture_parity(fixtures: Path | None) -> dict[str, Any]:
    """Token error against the reference on the golden weights, on the GPU: float32 (graph
    and XLA) and mixed_float16 (XLA), NRMSE and max absolute error per case."""
    import tensorflow as tf
    from safetensors.numpy import load_file

    import eegdino_tf
    from eegdino_tf.export import _errors

    model = "small" if fixtures and (fixtures / "small_io.safetensors").exists() else "tiny"
    folder = fixtures if model == "small" else TINY
    io = load_file(str(folder / f"{model}_io.safetensors"))
    weights = folder / f"{model}_encoder.safetensors"
    out: dict[str, Any] = {"fixture": model}
    for precision in PRECISIONS:
        encoder = eegdino_tf.load_encoder(weights, precision=precision, **FIXTURE_OPTIONS[model])
        for jit in (False, True) if precision == "float32" else (True,):
            run = encoder.inference_function(jit)
            for case in ("", "_c16", "_b1"):
                tokens = run(tf.constant(io["raw_uv" + case])).numpy()
                error, worst = _errors(tokens, io["tokens" + case])
                key = f"{precision}_{'xla' if jit else 'graph'}{case or '_base'}"
                out[key] = {"nrmse": error, "max_abs": worst}
    return out


def keras_runners(model: Any, batch: int) -> dict[str, Callable[[Any], Any]]:
    """``predict`` at ``batch`` and the compiled calls it chooses from, numpy out."""
    graph, xla = model.inference_function(False), model.inference_function(True)
    return {
        "predict": lambda x: model.predict(x, batch_size=batch, verbose=0),
        "graph": lambda x: graph(x).numpy(),
        "xla": lambda x: xla(x).numpy(),
    }


def torch_runner(config: EEGDinoConfig, precision: str, device: str) -> Callable[[Any], Any]:
    """braindecode's reference on ``device``; mixed_float16: float16 autocast."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("PyTorch sees no CUDA device")
    model = reference_model(config, 19, 2000).to(device)
    half = precision == "mixed_float16"

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device, torch.float16, enabled=half):
            out = model(torch.from_numpy(x).to(device) * config.input_scale)["features"]
        return out.float().cpu().numpy()

    return run


def gpu_benchmark(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import tensorflow as tf

    from eegdino_tf.models import build_encoder

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.cpu:
        raise SystemExit("benchmarks.gpu: TensorFlow sees no GPU (tf.config lists none)")
    for gpu in gpus:  # leave PyTorch, in the same process, room on the GPU
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.experimental.enable_tensor_float_32_execution(args.tf32)
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {"device": "CPU"}
    device = "cuda" if gpus else "cpu"
    notes: list[str] = []
    report: dict[str, Any] = {
        "gpu": details,
        "tf_build": {k: str(v) for k, v in tf.sysconfig.get_build_info().items()},
        "tf32": args.tf32,
        "settings": {"runs": args.runs, "warmup": args.warmup, "batches": list(args.batches)},
        "input": {"channels": 19, "samples": 2000, "unit": "uV"},
        "notes": notes,
        "results": [],
    }
    log(f"GPU: {details}; TF32 {'on' if args.tf32 else 'off'}")
    peaks = matmul_peaks(args.runs, args.gemm, device, log, notes)
    report["matmul_peak_gflop_per_s"] = peaks
    report["parity"] = fixture_parity(args.fixtures)
    log(f"parity: {report['parity']}")
    for size in args.sizes:
        config = get_config(size, **({"depth": args.depth} if args.depth else {}))
        flops = flops_per_example(config)
        for precision in PRECISIONS:
            model = build_encoder(config, precision=precision)
            runners: dict[str, Callable[[Any], Any]] = {}
            try:
                runners["torch"] = torch_runner(config, precision, device)
            except (Unavailable, ImportError, RuntimeError) as err:
                notes.append(f"{size} {precision} torch: {type(err).__name__}: {err}")
            for batch in args.batches:
                x = eeg_input(batch, 19, 2000)
                for runtime, run in {**keras_runners(model, batch), **runners}.items():
                    start = time.perf_counter()
                    run(x)
                    first_s = time.perf_counter() - start
                    ms = median_ms(run, x, args.runs, args.warmup)
                    peak = peaks.get("tf_xla_float16" if "16" in precision else "tf_xla_float32")
                    row = {
                        "size": size,
                        "precision": precision,
                        "runtime": runtime,
                        "batch": batch,
                        "median_ms": ms,
                        "first_call_s": first_s,
                        "samples_per_s": batch / ms * 1e3,
                        "gflop_per_s": flops * batch / ms / 1e6,
                    }
                    row["fraction_of_peak"] = row["gflop_per_s"] / peak if peak else None
                    report["results"].append(row)
                    log(f"  {size} {precision} b{batch} {runtime:<8} {ms:8.2f} ms")
        report["machine"] = machine_info(os.cpu_count() or 1)
        write_json(report, args.output_dir / JSON_NAME)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Markdown: one line per size, precision and batch; ms per call for each runtime and
    ``xla``'s speed-up over PyTorch."""
    rows = report["results"]
    lines = [
        "| size | precision | batch | "
        + " | ".join(f"{r} ms" for r in RUNTIMES)
        + " | xla / torch |",
        "|---" * (len(RUNTIMES) + 4) + "|",
    ]
    keys = dict.fromkeys((r["size"], r["precision"], r["batch"]) for r in rows)
    for key in keys:
        ms = {
            r["runtime"]: r["median_ms"]
            for r in rows
            if (r["size"], r["precision"], r["batch"]) == key
        }
        cells = [f"{ms[r]:.2f}" if r in ms else "-" for r in RUNTIMES]
        ratio = f"{ms['torch'] / ms['xla']:.2f}x" if "torch" in ms and "xla" in ms else "-"
        lines.append(f"| {' | '.join(map(str, key))} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=Path("bench_results"))
    parser.add_argument("--fixtures", type=Path, help="folder with small_{encoder,io}.safetensors")
    parser.add_argument("--sizes", type=lambda s: tuple(s.split(",")), default=SIZES)
    parser.add_argument("--batches", type=lambda s: tuple(map(int, s.split(","))), default=BATCHES)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gemm", type=int, default=PEAK_SIDE, help="side of the peak matmul")
    parser.add_argument("--tf32", action="store_true", help="leave TensorFlow's TF32 matmuls on")
    parser.add_argument("--cpu", action="store_true", help="run without a GPU (a smoke test)")
    parser.add_argument("--depth", type=int, help="override the layer count (smoke tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = gpu_benchmark(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
