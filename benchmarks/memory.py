"""Memory: each runtime's RSS alone in a fresh process (model loaded, first call, a later
call), and the RSS check over many repeated calls (no growth expected)."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import (
    configure_threads,
    proc_status_mb,
    reset_peak_rss,
    rss_mb,
    run_in_child,
)
from benchmarks.runners import SizeModels
from benchmarks.settings import REFERENCES, Settings, Unavailable
from benchmarks.timing import Contender
from benchmarks.workload import eeg_input


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
        first = proc_status_mb("VmHWM")
        steady = None
        if reset_peak_rss():
            run(x)
            steady = proc_status_mb("VmHWM")
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
    """RSS before and after ``calls`` repeated calls (after as many warm ones, at most 10)."""
    for _ in range(min(calls, 10)):
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
