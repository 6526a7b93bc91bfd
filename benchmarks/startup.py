"""A process's first ``predict``: ``python -m benchmarks.startup [--sizes small] [--runs 3]
[--batch 1] [--output-dir DIR]``.

Each row is a fresh process (spawned) that loads an encoder from one weight file (random
weights of each size, written once per run, so every process holds the same weights and a
cached LiteRT conversion can match) and times its first ``predict`` call on a seeded probe:

- ``keras``: ``runtime="keras"``, the default before ``runtime="auto"`` (its XLA compile);
- ``auto, cold cache``: the default ``runtime="auto"`` with an empty LiteRT cache (it looks the
  conversion up on disk, finds none and runs Keras);
- ``litert, cold cache``: ``runtime="litert"`` with an empty cache (it converts);
- ``auto, warm cache``: the default with the conversion cached (it loads it and runs LiteRT).

The kinds take turns within each run, the first rotating from run to run, so the host's
drift and the order hit them alike; the report gives the median of each over the runs and
the ratios the targets name (auto cold over keras: at most 1.1x). Results: a table on stdout
and ``startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import configure_threads, load_average, machine_info, run_in_child

#: The first calls timed, in turn order: (name, runtime, cache state).
KINDS = (
    ("keras", "keras", "cold"),
    ("auto, cold cache", "auto", "cold"),
    ("litert, cold cache", "litert", "cold"),
    ("auto, warm cache", "auto", "warm"),
)
JSON_NAME = "startup.json"


def first_call(weights: str, runtime: str, cache: str, batch: int, threads: int) -> dict:
    """In a fresh process: load ``weights``, then time one ``predict`` (``runtime``) on a
    seeded ``[batch, 19, 2000]`` probe with the LiteRT cache in ``cache``."""
    os.environ["EEGDINO_TF_CACHE"] = cache
    configure_threads(threads)
    start = time.perf_counter()
    import numpy as np

    import eegdino_tf
    from eegdino_tf.signals import probe_eeg

    model = eegdino_tf.load_encoder(weights)
    x = np.asarray(probe_eeg(batch, 19, 2000), np.float32)
    loaded = time.perf_counter()
    model.predict(x, verbose=0, runtime=runtime)
    done = time.perf_counter()
    ran = "litert" if model.__dict__.get("_litert_functions") else "keras"
    return {"load_s": loaded - start, "first_call_s": done - loaded, "ran": ran}


def write_weights(size: str, folder: Path) -> Path:
    """Random weights of ``size`` (seeded) in a safetensors file."""
    import keras

    from eegdino_tf.config import get_config
    from eegdino_tf.models import build_encoder
    from eegdino_tf.weights import save_weights

    keras.utils.set_random_seed(0)
    path = folder / f"{size}.safetensors"
    save_weights(build_encoder(get_config(size)), path, layout="released")
    return path


def run(sizes: list[str], runs: int, batch: int, threads: int, folder: Path) -> dict[str, Any]:
    """Time every kind of :data:`KINDS` ``runs`` times per size, each in a fresh process."""
    rows = []
    for size in sizes:
        weights = str(write_weights(size, folder))
        times: dict[str, list[float]] = {name: [] for name, _, _ in KINDS}
        ran: dict[str, str] = {}
        for turn in range(runs):
            cold = Path(tempfile.mkdtemp(dir=folder))
            warm = folder / f"warm-{size}"
            if turn == 0:  # the warm cache gets its conversion once, untimed
                run_in_child(first_call, weights, "litert", str(warm), batch, threads)
            turn_order = KINDS[turn % len(KINDS) :] + KINDS[: turn % len(KINDS)]
            for name, runtime, state in turn_order:
                cache = str(warm if state == "warm" else Path(tempfile.mkdtemp(dir=cold)))
                got = run_in_child(first_call, weights, runtime, cache, batch, threads)
                times[name].append(got["first_call_s"])
                ran[name] = got["ran"]
                print(f"{size} run {turn + 1}: {name:<20} {got['first_call_s']:7.2f} s"
                      f" ({got['ran']})", flush=True)  # fmt: skip
        medians = {name: statistics.median(v) for name, v in times.items()}
        rows.append(
            {
                "size": size,
                "batch": batch,
                "first_call_s": times,
                "median_s": medians,
                "ran": ran,
                "auto_cold_over_keras": medians["auto, cold cache"] / medians["keras"],
                "auto_warm_over_keras": medians["auto, warm cache"] / medians["keras"],
                "saved_by_the_cache_s": medians["litert, cold cache"] - medians["auto, warm cache"],
            }
        )
    return {"machine": machine_info(threads), "load_average": load_average(), "rows": rows}


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [
        "| size | batch | " + " | ".join(name for name, _, _ in KINDS) + " | auto cold / keras |",
        "|---" * (len(KINDS) + 3) + "|",
    ]
    for row in report["rows"]:
        cells = [f"{row['median_s'][name]:.2f} s ({row['ran'][name]})" for name, _, _ in KINDS]
        ratio = f"{row['auto_cold_over_keras']:.2f}x"
        lines.append(f"| {row['size']} | {row['batch']} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small", help="comma-separated sizes (default small)")
    parser.add_argument("--runs", type=int, default=3, help="processes per kind (default 3)")
    parser.add_argument("--batch", type=int, default=1, help="examples in the call (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    parser.add_argument("--output-dir", type=Path, default=Path("bench_results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.sizes.split(","), args.runs, args.batch, args.threads, Path(tmp))
    print(table(report))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / JSON_NAME).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
