"""Timing the contenders: warm-up, then round-robin repetitions (or one contender alone in a
fresh process), and the result rows made of the timed calls."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import configure_threads, run_in_child
from benchmarks.runners import BatchRunner, SizeModels
from benchmarks.settings import ISOLATED, REFERENCES, ROUND_ROBIN, Settings, Unavailable
from benchmarks.workload import eeg_input, flops_per_example

#: Calls faster than this (ms, once warm) get an untimed call right before each timed one.
LEAD_IN_BELOW_MS = 250.0


@dataclasses.dataclass
class Contender:
    runtime: str
    precision: str
    run: BatchRunner
    times_ms: list[float] = dataclasses.field(default_factory=list)
    first_call_ms: float = 0.0
    warm_ms: float = 0.0


def time_ms(run: Callable[[Any], Any], x: Any) -> float:
    """Wall time of ``run(x)``, ms."""
    start = time.perf_counter()
    run(x)
    return (time.perf_counter() - start) * 1e3


def contenders_for(
    models: SizeModels, settings: Settings, batch: int, notes: list[str]
) -> list[Contender]:
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
            c.first_call_ms = time_ms(c.run, x)
            c.warm_ms = c.first_call_ms
            for _ in range(max(warmup - 1, 0)):
                c.warm_ms = time_ms(c.run, x)
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
            c.times_ms.append(time_ms(c.run, x))
    for c in ready:
        median = statistics.median(c.times_ms)
        log(f"  timed  {c.runtime:<10} {c.precision:<14} median {median:9.1f} ms")
    return ready


def result_rows(
    size: str, batch: int, flops: float, contenders: list[Contender], mode: str = ROUND_ROBIN
) -> list[dict[str, Any]]:
    """A result row (the report's ``results``) for each timed contender."""
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
                "own_ms": _own_ms(c.run),
            }
        )
    return rows


def _own_ms(run: BatchRunner) -> float | None:
    """``predict``'s own time a call (:class:`~benchmarks.runners.PredictRunner`), median over
    every call after the first; None for other runtimes."""
    own = getattr(run, "own_ms", None)
    return statistics.median(own[1:]) if own and len(own) > 1 else None


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
    flops = flops_per_example(models.config, *shape)
    (row,) = result_rows(size, batch, flops, ready, ISOLATED)
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
