"""Helpers for the hostile-input tests: only two outcomes are allowed, within bounds.

A reader given a corrupt, hostile or misused input must either return a correct result or raise
one of the package's own errors (:class:`~eegdino_tf.errors.EEGDinoError`); it must never crash
the process, raise some other exception, run for long, or allocate far more than the file holds.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from eegdino_tf.errors import EEGDinoError

#: Default bounds for one hostile input: NumPy and Python allocations (tracemalloc) and time.
MAX_BYTES = 256 * 2**20
MAX_SECONDS = 20.0


def outcome(
    fn: Callable[[], Any], *, max_bytes: int = MAX_BYTES, max_seconds: float = MAX_SECONDS
) -> Any:
    """Run ``fn``; return its result or the :class:`EEGDinoError` it raised.

    Fails the test on any other exception, when the peak traced allocation exceeds
    ``max_bytes``, or when it took longer than ``max_seconds``.
    """
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result: Any = fn()
    except EEGDinoError as err:
        result = err
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= max_bytes, f"allocated {peak / 2**20:.0f} MiB (limit {max_bytes / 2**20:.0f})"
    assert elapsed <= max_seconds, f"took {elapsed:.1f} s (limit {max_seconds:.0f} s)"
    return result


def run_isolated(code: str, *, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python, for cases that could crash the interpreter itself.

    Returns the finished process; a crash shows as a negative return code (the signal).
    """
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
