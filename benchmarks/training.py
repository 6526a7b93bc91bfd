"""Training throughput: samples/s of one optimizer step of the classifier, ours against the
PyTorch reference (braindecode's ``EEGDINO``), each in a process of its own, with its peak
memory. Run from the repository root::

    python -m benchmarks.training                      # small, batch 16, 2 threads
    python -m benchmarks.training --size medium --batch 8 --steps 10

A step is: forward in training mode (the reference's dropout and drop-path on, 0.1), mean
cross-entropy, backward, AdamW (lr 1e-4, weight decay 0.05) on every weight. Ours runs
``model.train_on_batch`` compiled with XLA and without; the reference runs ``model.train()``,
``loss.backward()``, ``torch.optim.AdamW.step()``. Same seeded EEG-like input, same threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import configure_threads, machine_info, proc_status_mb, run_in_child
from benchmarks.runners import import_torch, reference_model
from benchmarks.settings import Unavailable
from benchmarks.workload import eeg_input
from eegdino_tf.config import get_config

#: The contenders: ours with and without XLA, and the PyTorch reference.
CONTENDERS = ("keras-xla", "keras", "torch")
LEARNING_RATE, WEIGHT_DECAY, CLASSES = 1e-4, 0.05, 2


def _keras_step(size: str, batch: int, channels: int, samples: int, jit: bool):
    import keras
    import numpy as np

    import eegdino_tf

    keras.utils.set_random_seed(0)
    model = eegdino_tf.build_classifier(size, num_classes=CLASSES)
    model.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    x = eeg_input(batch, channels, samples)
    y = np.arange(batch) % CLASSES
    return lambda: model.train_on_batch(x, y)


def _torch_step(size: str, batch: int, channels: int, samples: int):
    torch = import_torch()
    torch.manual_seed(0)
    model = reference_model(
        get_config(size), channels, samples, n_outputs=CLASSES, features=False
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    x = torch.from_numpy(eeg_input(batch, channels, samples)) * 0.01  # it takes uV / 100
    y = torch.arange(batch) % CLASSES

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_steps(
    contender: str, size: str, batch: int, steps: int, warmup: int, threads: int
) -> dict[str, Any]:
    """Build one contender, run ``warmup`` steps, time ``steps``; its peak RSS (run it in a
    fresh process for that figure to be its own)."""
    effective = configure_threads(threads)
    shape = dict(size=size, batch=batch, channels=19, samples=2000)
    if contender == "torch":
        step = _torch_step(**shape)
    else:
        step = _keras_step(**shape, jit=contender == "keras-xla")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "contender": contender,
        "size": size,
        "batch": batch,
        "median_step_ms": 1e3 * median,
        "samples_per_s": batch / median,
        "peak_rss_mb": proc_status_mb("VmHWM"),
        "threads": effective,
    }


def run_training_benchmark(
    size: str = "small", batch: int = 16, steps: int = 10, warmup: int = 3, threads: int = 2
) -> dict[str, Any]:
    """Every contender in its own process; rows with ``ratio_to_torch``, and the machine."""
    rows, notes = [], []
    for contender in CONTENDERS:
        try:
            rows.append(run_in_child(time_steps, contender, size, batch, steps, warmup, threads))
        except Unavailable as err:
            notes.append(f"{contender}: {err}")
    torch_rate = next((r["samples_per_s"] for r in rows if r["contender"] == "torch"), None)
    for row in rows:
        row["ratio_to_torch"] = row["samples_per_s"] / torch_rate if torch_rate else None
    return {"machine": machine_info(threads), "rows": rows, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = run_training_benchmark(args.size, args.batch, args.steps, args.warmup, args.threads)
    print(f"machine: {report['machine']['hardware']}")
    print(f"{args.size}, batch {args.batch}, median of {args.steps} steps after {args.warmup}")
    for row in report["rows"]:
        ratio = row["ratio_to_torch"]
        print(
            f"  {row['contender']:10s} {row['samples_per_s']:7.2f} samples/s "
            f"({row['median_step_ms']:.0f} ms/step), peak RSS {row['peak_rss_mb']:.0f} MiB"
            + (f", {ratio:.2f}x PyTorch" if ratio else "")
        )
    for note in report["notes"]:
        print(f"  note: {note}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
