"""Export the LiteRT variants of one weight file and time each with LiteRT's own benchmark tool.

    python export/android/benchmark.py ../shared/fixtures/small_encoder.safetensors

For each shape (``--shape muse``: 4 channels TP9,AF7,AF8,TP10 at 256 Hz, 4 s; ``--shape
10-20``: 19 channels at 200 Hz, 10 s) and each variant (``--variant float32``, ``float16``,
``dynamic-int8``, ``int8``: full-integer with float input and output, ``int8-io``: with int8
input and output), :func:`eegdino_tf.export.export_tflite` writes the file (checking it
against Keras; the int8 variants calibrate on ``--calibration``, default seeded EEG-like
windows, :data:`CALIBRATION_WINDOWS` of them), then ``litert-benchmark`` (installed with
ai-edge-litert) runs it at each ``--threads`` count; the script prints the Markdown table of
``export/android/README.md``: file size, the self-check error read back from the file's export
record, and the median latency with its 5th-95th percentile. Exports go to a temporary folder
unless ``--out DIR``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import eegdino_tf  # noqa: E402
from eegdino_tf import artifact, hardware  # noqa: E402
from eegdino_tf import export as E  # noqa: E402
from eegdino_tf.signals import probe_eeg  # noqa: E402
from eegdino_tf.tracing import KEEPS_FINITE_CHECK  # noqa: E402

#: name -> (channel names in slot order, sampling rate in Hz, window in seconds)
SHAPES = {
    "muse": (("TP9", "AF7", "AF8", "TP10"), 256, 4),
    "10-20": (None, 200, 10),
}
#: The 10-20 shape's channel count (its names are the record's default: the first 19 slots).
STANDARD_COUNT = 19
#: variant label -> the quantization options of :func:`eegdino_tf.export.export_tflite`
VARIANTS = {
    "float32": {"quantize": "none"},
    "float16": {"quantize": "float16"},
    "dynamic-int8": {"quantize": "dynamic-int8"},
    "int8": {"quantize": "int8"},
    "int8-io": {"quantize": "int8", "int8_io": True},
}
#: Seeded EEG-like windows (:func:`eegdino_tf.signals.probe_eeg`, seed 1) the int8 variants
#: calibrate on without ``--calibration``.
CALIBRATION_WINDOWS = 40


def litert_benchmark() -> str:
    """The ``litert-benchmark`` beside this Python (a virtual environment's), else on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("litert-benchmark", path=path)
    if found is None:
        sys.exit("litert-benchmark not found: pip install ai-edge-litert (eegdino-tf[export])")
    return found


def benchmark(
    tool: str, model: Path, threads: int, num_runs: int, warmup_runs: int, result: Path
) -> dict:
    """One ``litert-benchmark`` run of ``model`` on the CPU; its ``--result_json`` record."""
    command = [
        tool,
        "--model",
        str(model),
        "--num_threads",
        str(threads),
        "--num_runs",
        str(num_runs),
        "--warmup_runs",
        str(warmup_runs),
        "--result_json",
        str(result),
    ]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not result.is_file():
        sys.exit(f"{' '.join(command)} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return json.loads(result.read_text())


def cell(latency: dict) -> str:
    """``median (p5-p95)`` in milliseconds."""
    return f"{latency['median_ms']:.2f} ({latency['p5_ms']:.2f}-{latency['p95_ms']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--shape", action="append", choices=SHAPES, help="default: all")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--num-runs", type=int, default=50)
    parser.add_argument("--warmup-runs", type=int, default=5)
    parser.add_argument("--norm-groups", type=int)
    parser.add_argument(
        "--calibration",
        help="int8 variants: recordings (a glob pattern or a manifest) to calibrate on "
        f"(default: {CALIBRATION_WINDOWS} seeded EEG-like windows)",
    )
    parser.add_argument("--out", type=Path, help="keep the exports here (default: deleted)")
    args = parser.parse_args()

    tool = litert_benchmark()
    threads = [int(t) for t in args.threads.split(",")]
    overrides = {"norm_groups": args.norm_groups} if args.norm_groups else {}
    model = eegdino_tf.load_encoder(
        args.weights, check_finite=KEEPS_FINITE_CHECK["tflite"], **overrides
    )
    load_before = os.getloadavg()
    rows, accelerated = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for shape in args.shape or SHAPES:
            names, sfreq, window = SHAPES[shape]
            channels = len(names) if names else STANDARD_COUNT
            samples = round(sfreq * window)
            windows = args.calibration or probe_eeg(CALIBRATION_WINDOWS, channels, samples, 1)
            for variant in args.variant or VARIANTS:
                path = out / f"{shape}_{variant}.tflite"
                options = dict(VARIANTS[variant])
                if options["quantize"] == "int8":
                    options["calibration"] = windows
                E.export_tflite(
                    model,
                    path,
                    channels=channels,
                    sfreq=sfreq,
                    window=window,
                    channel_names=names,
                    force=True,
                    latency_calls=1,
                    weights_file=args.weights,
                    **options,
                )
                record = artifact.read_record(path)
                check = record["quantization"]["self_check"]
                cosine = "" if check["cosine"] is None else f"{check['cosine']:.5f}"
                cells = []
                for n in threads:
                    result = benchmark(
                        tool, path, n, args.num_runs, args.warmup_runs, Path(tmp) / "result.json"
                    )
                    accelerated.add(result["fully_accelerated"])
                    cells.append(cell(result["latency"]))
                rows.append(
                    f"| {shape} {record['input_shape']} | {variant} "
                    f"| {path.stat().st_size / 1e6:.2f} MB | {check['nrmse']:.1e} | {cosine} | "
                    + " | ".join(cells)
                    + " |"
                )
                print(f"{path.name}: done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(
        f"{Path(args.weights).name}; litert-benchmark (ai-edge-litert "
        f"{importlib.metadata.version('ai-edge-litert')}, CPU, XNNPACK), "
        f"{args.num_runs} runs after {args.warmup_runs} warm-up runs; "
        f"{hardware.cpu_name()}, {platform.machine()}, {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"fully accelerated: {', '.join(str(a) for a in sorted(accelerated))}\n"
    )
    latency = " | ".join(f"{n} thread{'s' if n > 1 else ''}, ms" for n in threads)
    print(f"| shape [1, C, T] | variant | size | NRMSE vs Keras | cosine | {latency} |")
    print("|---|---|---|---|---|" + "---|" * len(threads))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
