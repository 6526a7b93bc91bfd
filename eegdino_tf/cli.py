"""The ``eegdino-tf`` command line (also ``python -m eegdino_tf``).

Each sub-command lives beside the logic it drives: a module in ``COMMANDS`` exposes
``configure_cli(subparsers)``, which adds its parser and sets ``func`` to the function that
runs it. Errors that users cause (:class:`EEGDinoError`) print as one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from eegdino_tf.errors import EEGDinoError  # noqa: E402

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "eegdino_tf.commands",  # info, demo
    "eegdino_tf.convert",  # convert
    "eegdino_tf.recording",  # encode
    "eegdino_tf.export",  # export
    "eegdino_tf.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eegdino-tf",
        description="EEG-DINO in TensorFlow: inspect weights, encode EEG, convert and export.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue  # a command whose module is not part of this build
        module.configure_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EEGDinoError as err:
        print(f"eegdino-tf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eegdino-tf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
