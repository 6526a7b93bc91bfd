"""The benchmark's command line: ``eegdino-tf bench`` (through :mod:`eegdino_tf.cli.bench`),
``python -m benchmarks`` and ``examples/bench.py`` share :func:`add_arguments` and
:func:`run_cli`. Importing it loads neither TensorFlow nor PyTorch."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.settings import (
    BENCH_PRECISIONS,
    CHART_NAME,
    JSON_NAME,
    QUICK,
    RUNTIMES,
    Settings,
)
from eegdino_tf.config import PRESETS

#: Wall time of ``--quick`` (measured: 57 s on a shared 2-core AMD EPYC VM, AVX2 only, load
#: average 2.4-3.1 from other work, PyTorch included) and of the full default run
#: (approximate: the last one, without isolated runs, took 40-60 minutes there; the isolated
#: runs add one process start, model build and compile per contender, and the timed calls
#: again).
QUICK_TIME = "under a minute"
FULL_TIME = "roughly 1.5-2 hours (40-60 minutes with --no-isolated)"
DESCRIPTION = (
    "Time the EEG-DINO encoder (Keras eager, predict, graph, XLA; TFLite; ONNX Runtime) against"
    " the PyTorch reference at the same thread count; print a table, write JSON and a PNG chart."
    f" On 2 cores the full default run takes {FULL_TIME} (approximate); --quick {QUICK_TIME}."
)


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
    """The benchmark's options (shared by ``eegdino-tf bench``, ``python -m benchmarks`` and
    ``examples/bench.py``)."""
    d = Settings()
    joined = ",".join
    add = parser.add_argument
    add("--sizes", type=_choices(list(PRESETS)), help=f"default {joined(d.sizes)}")
    add("--precisions", type=_choices(BENCH_PRECISIONS), help=f"default {joined(d.precisions)}")
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


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and the chart."""
    from benchmarks.report import draw_chart, format_report, write_json
    from benchmarks.run import run_benchmark

    settings = settings_from_args(args)
    report = run_benchmark(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report))
    out = Path(settings.output_dir)
    write_json(report, out / JSON_NAME)
    charted = draw_chart(report, out / CHART_NAME)
    print(f"wrote {out / JSON_NAME}" + (f" and {out / CHART_NAME}" if charted else ""))
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """``python -m benchmarks`` and ``python examples/bench.py``: the same as
    ``eegdino-tf bench``."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))
