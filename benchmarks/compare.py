"""Comparisons between result rows: speed ratios (to PyTorch, to float32) and ``predict``'s
per-call overhead over the bare compiled call it makes."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.settings import BENCH_PRECISIONS, REFERENCES, ROUND_ROBIN


def row_key(row: dict[str, Any], **changes: Any) -> tuple:
    """``(mode, size, batch, runtime, precision)`` of ``row``, with ``changes``."""
    r = {**row, **changes}
    return r["mode"], r["size"], r["batch"], r["runtime"], r["precision"]


def paired_ratio(other: dict[str, Any] | None, row: dict[str, Any]) -> float | None:
    """The median, over the rounds of a round-robin run, of ``other``'s time over ``row``'s
    in the same round (above 1: ``row`` is faster). Each round times every contender once,
    close together, so the host's drift between rounds cancels out of each ratio; None for
    isolated rows (each timed in a process of its own) or without both rows' call times."""
    times = (other or {}).get("times_ms"), row.get("times_ms")
    if row["mode"] != ROUND_ROBIN or not all(times) or len(times[0]) != len(times[1]):
        return None
    return statistics.median(o / t for o, t in zip(*times, strict=True))


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Add speed ratios to each row (above 1: this row is faster), each against a row of the
    same mode, size and batch.

    Our rows get ``vs_torch`` (PyTorch's median time at the same precision over ours),
    ``vs_torch_min`` (the same with the fastest calls, less sensitive to machine load),
    ``vs_torch_paired`` (:func:`paired_ratio`) and ``vs_float32`` (the same runtime's float32
    median over ours). Every row gets ``fastest_other``, the runtime with the lowest median
    among the others at its precision, and ``vs_fastest_other`` / ``vs_fastest_other_paired``
    against it: at or above 1, this row was the fastest of all.
    """
    by_key = {row_key(r): r for r in rows}
    reference = {p: r for r, p in REFERENCES.items()}
    for row in rows:
        ours = row["runtime"] not in REFERENCES
        torch = by_key.get(row_key(row, runtime=reference.get(row["precision"])))
        f32 = by_key.get(row_key(row, precision="float32"))
        for name, other, stat in (
            ("vs_torch", torch, "median_ms"),
            ("vs_torch_min", torch, "min_ms"),
            ("vs_float32", f32, "median_ms"),
        ):
            row[name] = other[stat] / row[stat] if ours and other else None
        row["vs_torch_paired"] = paired_ratio(torch, row) if ours else None
        others = [o for o in rows if row_key(o, runtime=row["runtime"]) == row_key(row)]
        others = [o for o in others if o is not row]
        fastest = min(others, key=lambda o: o["median_ms"], default=None)
        if fastest is None:
            row.update(fastest_other=None, vs_fastest_other=None, vs_fastest_other_paired=None)
            continue
        row["fastest_other"] = fastest["runtime"]
        row["vs_fastest_other"] = fastest["median_ms"] / row["median_ms"]
        row["vs_fastest_other_paired"] = paired_ratio(fastest, row)


def bare_runtimes() -> dict[str, str]:
    """For each precision, the runtime that times the compiled call ``predict`` makes here:
    ``xla`` or ``graph``, as :func:`eegdino_tf.runtime.default_jit_compile` picks."""
    from eegdino_tf.runtime import default_jit_compile

    return {p: "xla" if default_jit_compile(p) else "graph" for p in BENCH_PRECISIONS}


#: For ``predict(runtime="litert")``, the bare runtime beside it: the fixed-batch TFLite export.
LITERT_BARE = "tflite"
#: The ``predict`` rows whose overhead is reported.
PREDICT_ROWS = ("predict", "predict-keras", "predict-litert", "predict-int8")


def bare_runtime(row: dict[str, Any], bare: dict[str, str]) -> str | None:
    """The bare runtime a ``predict`` row's calls run: float32 LiteRT (the default ``predict``
    of a float32 model, timed with its conversion cached) beside :data:`LITERT_BARE`, Keras
    beside ``bare``'s; int8 has none (no int8 export is timed)."""
    runtime, precision = row["runtime"], row["precision"]
    if runtime == "predict-int8":
        return None
    if runtime == "predict-litert" or (runtime == "predict" and precision == "float32"):
        return LITERT_BARE
    return bare[precision]


def predict_overheads(rows: list[dict[str, Any]], bare: dict[str, str]) -> list[dict[str, Any]]:
    """What ``predict`` costs a call over the bare compiled call it makes (``bare``, per
    precision, or :data:`LITERT_BARE`: :func:`bare_runtime`), for each of the
    :data:`PREDICT_ROWS` measured inside its calls or with a bare row beside it (same mode,
    size, batch): ``own_ms``, measured inside each call (its wall time less the compiled
    call's or LiteRT run's; immune to the load that moves the medians by milliseconds), and
    ``overhead_ms``, the difference of the medians (None without the bare row)."""
    by_key = {row_key(r): r for r in rows}
    found = []
    for r in rows:
        if r["runtime"] not in PREDICT_ROWS:
            continue
        base = bare_runtime(r, bare)
        other = by_key.get(row_key(r, runtime=base), {}) if base else {}
        if other or r.get("own_ms") is not None:
            found.append(
                {
                    "size": r["size"],
                    "precision": r["precision"],
                    "batch": r["batch"],
                    "mode": r["mode"],
                    "runtime": r["runtime"],
                    "bare_runtime": base,
                    "predict_ms": r["median_ms"],
                    "bare_ms": other.get("median_ms"),
                    "overhead_ms": r["median_ms"] - other["median_ms"] if other else None,
                    "own_ms": r.get("own_ms"),
                }
            )
    return found
