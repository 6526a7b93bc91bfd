"""The whole benchmark: every size, batch and contender of :class:`~benchmarks.settings.
Settings`, then isolated timings, memory probes and the machine; returns the report (the JSON
written by ``eegdino-tf bench``)."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.compare import add_ratios, bare_runtimes, predict_overheads
from benchmarks.machine import available_mb, configure_threads, load_average, machine_info
from benchmarks.memory import leak_check, peak_memory
from benchmarks.peak import PEAK_DTYPE, add_peak_fractions, matmul_peak
from benchmarks.runners import SizeModels
from benchmarks.settings import MEMORY_CAP, Settings
from benchmarks.timing import contenders_for, isolated_rows, measure, result_rows
from benchmarks.workload import eeg_input, flops_per_example
from eegdino_tf.config import PRESETS

#: The float32 runtimes whose RSS over many calls is checked.
LEAK_CHECKED = ("predict", "predict-keras", "graph", "xla")


def run_benchmark(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the report (see :mod:`benchmarks`)."""
    threads = configure_threads(settings.threads)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    leaks: list[dict[str, Any]] = []
    leak_size = min(settings.sizes, key=list(PRESETS).index)
    shape = (settings.channels, settings.samples)
    available = available_mb()
    cap_mb = MEMORY_CAP * available if available else None
    load_start = load_average()
    log(f"matmul peak, {settings.gemm}^3:")
    dtypes = {PEAK_DTYPE[p] for p in settings.precisions}
    peaks = matmul_peak(settings.gemm, settings.runs, notes, log, dtypes)
    with tempfile.TemporaryDirectory(prefix="eegdino-bench-") as tmp:
        for size in settings.sizes:
            models = SizeModels(settings, size, Path(tmp), cap_mb)
            flops = flops_per_example(models.config, *shape)
            for batch in settings.batches:
                log(f"{size}, batch {batch}:")
                x = eeg_input(batch, *shape)
                contenders = contenders_for(models, settings, batch, notes)
                ready = measure(contenders, x, settings.runs, settings.warmup, notes, log)
                rows += result_rows(size, batch, flops, ready)
                if size == leak_size and batch == min(settings.batches) and settings.leak_calls:
                    for c in ready:
                        if c.precision == "float32" and c.runtime in LEAK_CHECKED:
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
