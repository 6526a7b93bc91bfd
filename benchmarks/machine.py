"""The machine: ``/proc`` readings (RSS, available memory), load, CPU and versions, thread
counts, and child processes under a memory cap."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.settings import Unavailable

#: Libraries whose versions the report gives, when the run imported them.
LIBRARIES = ("tensorflow", "keras", "numpy", "torch", "torchaudio", "braindecode", "onnxruntime")


def _proc_mb(path: str, field: str) -> float | None:
    """A ``Field:  N kB`` line of a ``/proc`` file (``status``, ``meminfo``) in MiB; None off
    Linux or when the field is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(path) as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return None


def proc_status_mb(field: str, pid: int | str = "self") -> float | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status`` in MiB."""
    return _proc_mb(f"/proc/{pid}/status", field)


def rss_mb() -> float | None:
    """Resident memory of this process, MiB."""
    return proc_status_mb("VmRSS")


def reset_peak_rss() -> bool:
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


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU (model, the flags that decide speed, :func:`eegdino_tf.hardware.describe`), cores,
    thread setting, memory and library versions."""
    from eegdino_tf import hardware

    hw = hardware.detect()
    versions = {}
    for module in LIBRARIES:
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
        "load_average": load_average(),
    }


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
            rss = proc_status_mb("VmRSS", child.pid)
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
