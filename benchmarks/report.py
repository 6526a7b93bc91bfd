"""The report: a text table (machine, matmul peak, results, predict's overhead, memory, RSS
check, notes), the JSON file, and a PNG chart of throughput (matplotlib, when installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import row_key
from benchmarks.settings import BENCH_PRECISIONS, MODES, ROUND_ROBIN, RUNTIMES
from eegdino_tf.files import atomic_output


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
        first.setdefault(row_key(r, mode=ROUND_ROBIN), i)
    return sorted(rows, key=lambda r: (first[row_key(r, mode=ROUND_ROBIN)], MODES.index(r["mode"])))


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
              "samples/s", "GFLOP/s", "peak", "vs torch", "(min)", "(paired)", "vs f32",
              "fastest other", "vs it", "(paired)")  # fmt: skip
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
                _ratio(r["vs_torch_paired"]),
                _ratio(r["vs_float32"]),
                r["fastest_other"] or "-",
                _ratio(r["vs_fastest_other"]),
                _ratio(r["vs_fastest_other_paired"]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [
            c.ljust(w) if i < 4 or header[i] == "fastest other" else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "mode: timed taking turns with the others (round-robin) or alone in a fresh process"
        " (isolated); ratios compare rows of one mode",
        "peak: GFLOP/s over the best float32 matmul peak (bfloat16's for mixed_bfloat16);"
        " vs torch: PyTorch's median time at the same precision / ours (>1: we are faster);"
        " (min): the same with the fastest calls; (paired): the median over rounds of the"
        " ratio within each round (round-robin only: drifts of the host between rounds"
        " cancel); vs f32: our float32 time / this one; fastest other: the runtime with the"
        " lowest median among the others at this precision, vs it: its time / this one",
    ]
    overheads = report["predict_overhead_ms"]
    if overheads:
        lines += [
            "",
            "predict's overhead over the bare call it makes (median ms): measured inside each"
            " call (its time less the compiled call's or LiteRT run's), and the difference of"
            " the medians (predict-litert: against the fixed-batch tflite export)",
        ]
        for o in overheads:
            own = "?" if o["own_ms"] is None else f"{o['own_ms']:.2f}"
            difference = (
                f"{o['overhead_ms']:+7.2f} ({o['predict_ms']:.2f} - {o['bare_runtime']} "
                f"{o['bare_ms']:.2f})"
                if o["overhead_ms"] is not None
                else f"(no {o['bare_runtime']} row)"
            )
            lines.append(
                f"  {o['runtime']:<14} {o['size']:<7} {o['precision']:<14} "
                f"batch {o['batch']:<3} {o['mode']:<11} "
                f"{own:>6}   {difference}"
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
    precisions = [p for p in BENCH_PRECISIONS if any(row["precision"] == p for row in rows)]
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
