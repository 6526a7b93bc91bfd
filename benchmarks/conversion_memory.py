"""Peak memory of the LiteRT conversion per byte of float32 weights:
``python -m benchmarks.conversion_memory [--sizes small,medium,large] [--quantize none]``.

Each size converts in a fresh (spawned) process, stopped past 60% of the memory available at
the start: the model is built (random weights), the kernel's RSS high-water mark is reset, and
:func:`eegdino_tf.tracing.tflite_flatbuffer` converts it for ``[any, 19, 2000]``. The figure
is (peak RSS - RSS with the model built) / float32 weight bytes, the number
:data:`~eegdino_tf.tracing.CONVERSION_BYTES_PER_WEIGHT_BYTE` rounds up; a small model's is
dominated by a fixed ~160 MB of the converter's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.machine import (
    available_mb,
    load_average,
    proc_status_mb,
    reset_peak_rss,
    rss_mb,
    run_in_child,
)

#: Share of the memory available at the start a conversion may take before it is stopped.
MEMORY_CAP = 0.6


def conversion_peak(size: str, quantize: str = "none", depth: int | None = None) -> dict:
    """In a fresh process: convert ``size`` (``depth`` layers, if given) and measure."""
    from eegdino_tf import tracing
    from eegdino_tf.config import get_config
    from eegdino_tf.models import build_encoder

    model = build_encoder(get_config(size, **({"depth": depth} if depth else {})))
    weight_mb = 4 * model.count_params() / 2**20
    before = rss_mb()
    if not reset_peak_rss():
        raise RuntimeError("the RSS high-water mark cannot be reset here (/proc/self/clear_refs)")
    start = time.perf_counter()
    spec = tracing.input_spec(model, None, 19, 2000)
    flatbuffer = tracing.tflite_flatbuffer(model, spec, quantize)
    seconds = time.perf_counter() - start
    peak = proc_status_mb("VmHWM")
    return {
        "size": size,
        "quantize": quantize,
        "weights_mb": weight_mb,
        "rss_before_mb": before,
        "peak_mb": peak,
        "per_weight_byte": (peak - before) / weight_mb,
        "flatbuffer_mb": len(flatbuffer) / 2**20,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic-int8"))
    args = parser.parse_args(argv)
    cap = MEMORY_CAP * (available_mb() or 0) or None
    rows = []
    for size in args.sizes.split(","):
        row = run_in_child(conversion_peak, size, args.quantize, limit_mb=cap)
        rows.append(row)
        print(
            f"{size}: {row['weights_mb']:.0f} MiB of weights, peak {row['peak_mb']:.0f} MiB "
            f"({row['per_weight_byte']:.1f}x over the {row['rss_before_mb']:.0f} MiB before), "
            f"{row['seconds']:.1f} s",
            flush=True,
        )
    print(json.dumps({"load_average": load_average(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
