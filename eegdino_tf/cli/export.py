"""``eegdino-tf export FORMAT WEIGHTS OUTPUT``: a self-checked SavedModel, TFLite or ONNX
artifact; the logic is :mod:`eegdino_tf.export`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eegdino_tf.cli.options import (
    UsageError,
    add_classifier,
    add_force,
    add_model_options,
    load_model,
)
from eegdino_tf.export import FORMATS, MIN_OPSET, QUANTIZATIONS, REFUSED_QUANTIZATIONS
from eegdino_tf.serving import describe_bundle
from eegdino_tf.tracing import KEEPS_FINITE_CHECK

#: Options that belong to one format only.
FORMAT_OPTIONS = {
    "batch": "tflite",
    "quantize": "tflite",
    "calibration": "tflite",
    "int8_io": "tflite",
    "any_shape": "tflite",
    "version": "saved-model",
    "warmup": "saved-model",
    "serving_config": "saved-model",
    "model_name": "saved-model",
    "base_path": "saved-model",
    "opset": "onnx",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export to a TF Serving SavedModel, TFLite or ONNX (self-checked)",
        description=(
            "Export an EEG-DINO encoder (or, with --classifier, a finetuned classifier) for "
            "serving. The artifact is run in its own runtime on a seeded probe and compared "
            "with Keras before it is kept; input 'eeg' is raw microvolts [batch, C, T]."
        ),
    )
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help=", ".join(FORMATS))
    parser.add_argument("weights", metavar="WEIGHTS", help="weight file (.safetensors or .pt)")
    parser.add_argument(
        "output",
        metavar="OUTPUT",
        help="file to write (.tflite, .onnx), or the SavedModel base folder (writes OUTPUT/1/)",
    )
    add_classifier(parser, "export encoder + head (output logits)")
    parser.add_argument(
        "--channels",
        type=channel_list,
        default=19,
        help="a count C, or the channel names in slot order (Fp1,Fp2,...; recorded in the "
        "file); default 19, the standard 10-20 channels",
    )
    parser.add_argument(
        "--sfreq",
        type=float,
        default=200.0,
        help="the input's sampling rate in Hz (default 200); another rate is resampled to 200 "
        "Hz inside the file (polyphase, scipy's resample_poly filter, each window alone)",
    )
    parser.add_argument(
        "--window", type=float, help="window in seconds: input samples round(sfreq * window)"
    )
    parser.add_argument(
        "--samples", type=int, help="input samples at --sfreq (default: 10 s); or --window"
    )
    parser.add_argument(
        "--partial-patch",
        choices=("error", "pad", "crop"),
        default="error",
        help="samples past the last whole 1 s patch: error (default), pad or crop",
    )
    parser.add_argument("--batch", type=int, help="tflite: fixed batch size (default 1)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS + tuple(REFUSED_QUANTIZATIONS),
        help="tflite: quantization (default none); int8 is full-integer (weights and "
        "activations, calibrated on --calibration); int16 is refused (its reason is printed)",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATTERN_OR_MANIFEST",
        help="tflite --quantize int8: recordings to calibrate on, a glob pattern (quoted: "
        "'data/*.edf') or a manifest (.csv as finetune takes, or .txt, one path a line); "
        "windows are cut at --sfreq/--window/--channels, every 5th held out to check the file",
    )
    parser.add_argument(
        "--int8-io",
        action="store_true",
        default=None,
        help="tflite --quantize int8: int8 input and output tensors (their scale and zero point "
        "are in the file's record; the app quantizes and must catch NaN itself)",
    )
    parser.add_argument(
        "--any-shape",
        action="store_true",
        default=None,
        help="tflite: one file for any channel count (1..19) and any length (a multiple of "
        "200 samples at 200 Hz)",
    )
    parser.add_argument("--version", type=int, help="saved-model: version folder (default 1)")
    parser.add_argument(
        "--warmup",
        metavar="SIZES",
        help="saved-model: write TF Serving warm-up records for these batch sizes (e.g. 1,8; "
        "needs the serving extra)",
    )
    parser.add_argument(
        "--serving-config",
        action="store_true",
        default=None,
        help="saved-model: time the export and write OUTPUT/models.config and "
        "OUTPUT/batching_parameters.txt for tensorflow_model_server",
    )
    parser.add_argument(
        "--model-name", help="saved-model: the name in models.config (default: OUTPUT's name)"
    )
    parser.add_argument(
        "--base-path",
        help="saved-model: the model's folder as the server sees it, in models.config "
        "(default: OUTPUT's absolute path; /models/NAME in TF Serving's Docker image)",
    )
    parser.add_argument("--opset", type=int, help=f"onnx: opset (default {MIN_OPSET})")
    add_force(parser)
    add_model_options(parser)
    parser.set_defaults(func=run)
    return parser


def channel_list(text: str) -> int | list[str]:
    """``--channels``: ``"4"`` -> 4, ``"TP9,AF7,AF8,TP10"`` -> the names (distinct)."""
    if text.strip().isdigit():
        return int(text)
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected a count or distinct names, got {text!r}")
    return names


def run(args: argparse.Namespace) -> int:
    from eegdino_tf.export import export_model

    options: dict[str, Any] = {}
    for option, fmt in FORMAT_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if fmt != args.format:
            flag = option.replace("_", "-")
            raise UsageError(f"--{flag} applies to {fmt} exports, not {args.format}")
        options[option] = value
    model = load_model(
        args, partial_patch=args.partial_patch, check_finite=KEEPS_FINITE_CHECK[args.format]
    )
    report = export_model(
        args.format,
        model,
        args.output,
        channels=len(args.channels) if isinstance(args.channels, list) else args.channels,
        samples=args.samples,
        sfreq=args.sfreq,
        window=args.window,
        channel_names=args.channels if isinstance(args.channels, list) else None,
        force=args.force,
        weights_file=args.weights,
        **options,
    )
    print(report.summary())
    if args.format == "saved-model":
        print(describe_bundle(Path(args.output), report.path))
    return 0
