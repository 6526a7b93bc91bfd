"""Export one weight file to every format and print the size / error / latency table.

    python export/measure.py ../shared/fixtures/small_encoder.safetensors

Each artifact is written to a temporary folder by :mod:`eegdino_tf.export` (which runs it in
its runtime and compares it with Keras), then deleted. Options: ``--channels``, ``--samples``,
``--calls`` (timed calls per artifact, median reported), ``--norm-groups``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import eegdino_tf  # noqa: E402
from eegdino_tf import export as E  # noqa: E402
from eegdino_tf.tracing import KEEPS_FINITE_CHECK  # noqa: E402

#: (label, format, options, file name)
ARTIFACTS = (
    ("SavedModel (TF Serving)", "saved-model", {}, "saved_model"),
    ("TFLite float32", "tflite", {}, "model.tflite"),
    ("TFLite float16 weights", "tflite", {"quantize": "float16"}, "model_fp16.tflite"),
    ("TFLite dynamic-range int8", "tflite", {"quantize": "dynamic-int8"}, "model_int8.tflite"),
    ("ONNX opset 17", "onnx", {}, "model.onnx"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--channels", type=int, default=19)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=20, help="timed calls per artifact")
    parser.add_argument("--norm-groups", type=int)
    args = parser.parse_args()

    overrides = {"norm_groups": args.norm_groups} if args.norm_groups else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, fmt, options, name in ARTIFACTS:
            check_finite = KEEPS_FINITE_CHECK[fmt]  # no copy without the check in the export
            model = eegdino_tf.load_encoder(args.weights, check_finite=check_finite, **overrides)
            report = E.export_model(
                fmt,
                model,
                Path(tmp) / name,
                channels=args.channels,
                samples=args.samples,
                latency_calls=args.calls,
                **options,
            )
            print(report.summary(), flush=True)
            cosine = "" if report.cosine is None else f"{report.cosine:.5f}"
            rows.append(
                f"| {label} | {report.runtimes[0]} | {report.size_bytes / 1e6:.1f} MB "
                f"| {report.nrmse:.1e} | {report.max_abs:.1e} | {cosine} "
                f"| {report.latency_ms:.1f} ms |"
            )
    print(
        f"\n{Path(args.weights).name}, input [1, {args.channels}, {args.samples}] "
        f"(latency: batch 1, median of {args.calls} calls after one warm-up), "
        f"{os.cpu_count()} CPUs, {platform.machine()}\n"
    )
    print("| artifact | runtime | size | NRMSE vs Keras | max abs | cosine | latency |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
