"""``eegdino-tf convert IN.pt OUT.safetensors`` (or ``--all``): released checkpoints to
safetensors, without PyTorch; the logic is :mod:`eegdino_tf.convert`."""

from __future__ import annotations

import argparse

from eegdino_tf.cli.options import UsageError, add_force
from eegdino_tf.convert import RELEASED_FILES, convert_all, convert_checkpoint
from eegdino_tf.layouts import CHOICES, LAYOUTS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert released .pt checkpoints to safetensors (no PyTorch needed)",
        description=(
            "Convert an EEG-DINO torch.save checkpoint to float32 safetensors without PyTorch "
            "and without running the checkpoint's pickle. Keeps the student encoder (and a "
            "finetuned head), drops teacher, projector and loss state."
        ),
    )
    parser.add_argument("input", nargs="?", help="checkpoint to convert (e.g. model_EEG_DINO_S.pt)")
    parser.add_argument("output", nargs="?", help="safetensors file to write")
    parser.add_argument(
        "--all",
        action="store_true",
        help=f"convert those of {', '.join(RELEASED_FILES)} found in --input-dir",
    )
    parser.add_argument("--input-dir", help="with --all: folder holding the .pt files (default .)")
    parser.add_argument("--output-dir", help="with --all: folder to write to (default .)")
    parser.add_argument(
        "--layout",
        choices=CHOICES,
        default="released",
        help="key names and weight layout to write (default released): "
        + "; ".join(f"{x.name}, {x.description}" for x in LAYOUTS),
    )
    add_force(parser, "output")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.all:
        if args.input or args.output:
            raise UsageError("give either INPUT OUTPUT or --all, not both")
        reports = convert_all(
            args.input_dir or ".", args.output_dir or ".", layout=args.layout, force=args.force
        )
    else:
        if not (args.input and args.output):
            raise UsageError(
                "give INPUT.pt OUTPUT.safetensors, or --all --input-dir DIR --output-dir DIR"
            )
        if args.input_dir or args.output_dir:
            raise UsageError("--input-dir and --output-dir go with --all")
        reports = [
            convert_checkpoint(args.input, args.output, layout=args.layout, force=args.force)
        ]
    print("\n\n".join(report.summary() for report in reports))
    return 0
