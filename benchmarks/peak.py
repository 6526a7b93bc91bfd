"""The machine's matmul peak: one large square matmul in TensorFlow (XLA or not) and PyTorch,
float32 and bfloat16, at the benchmark's thread count; and each row's share of it."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from benchmarks.runners import import_torch
from benchmarks.settings import Unavailable
from benchmarks.timing import time_ms

#: Each peak matmul is timed ``--runs`` times (after an untimed call), or fewer once its
#: timed calls have taken this long together.
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

#: A matmul call: takes its operand, returns when done.
MatmulCall = Callable[[Any], Any]


def gemm_runner(library: str, dtype: str, jit_compile: bool, n: int) -> tuple[MatmulCall, Any]:
    """A function computing ``a @ a`` in ``library`` (``tf``: a ``tf.function``, XLA or not;
    ``torch``), and its operand ``a``: ``n x n`` seeded values of ``dtype``."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) / np.sqrt(n)
    if library == "torch":
        torch = import_torch()

        def run(a: Any) -> Any:
            with torch.inference_mode():
                return torch.mm(a, a)

        return run, torch.from_numpy(a).to(getattr(torch, dtype))
    import tensorflow as tf

    fn = tf.function(lambda a: tf.matmul(a, a), jit_compile=jit_compile)
    return (lambda a: fn(a).numpy()), tf.cast(a, dtype)


def gemm_gflop_per_s(run: MatmulCall, a: Any, n: int, runs: int) -> float:
    """GFLOP/s of ``run(a)``, an ``n``-sided square matmul: the median of up to ``runs``
    timed calls after an untimed one (tracing, compiling), fewer past :data:`PEAK_BUDGET_MS`."""
    run(a)
    times: list[float] = []
    while len(times) < runs and sum(times) < PEAK_BUDGET_MS:
        times.append(time_ms(run, a))
    return 2.0 * n**3 / statistics.median(times) / 1e6


def matmul_peak(
    n: int,
    runs: int,
    notes: list[str],
    log: Callable[[str], None],
    dtypes: Collection[str] = ("float32", "bfloat16"),
) -> dict[str, float | None]:
    """:func:`gemm_gflop_per_s` of each of :data:`PEAKS` of ``dtypes`` (None, with a note,
    where it cannot run or is of another dtype), at the thread count
    :func:`~benchmarks.machine.configure_threads` set.

    Only the dtypes some row is measured against need measuring: on a CPU without native
    bfloat16, PyTorch's 2048-sided bfloat16 matmul runs at ~0.2 GFLOP/s (over a minute a call).
    """
    peaks: dict[str, float | None] = {}
    for name, (library, dtype, jit_compile) in PEAKS.items():
        peaks[name] = None
        if dtype not in dtypes:
            notes.append(f"matmul peak {name}: not measured, no row is timed against {dtype}")
            continue
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
