"""The ``eegdino-tf`` command line (also ``python -m eegdino_tf``).

One module per command in this package; each exposes ``add_parser(subparsers)``, which adds
its parser and sets ``func`` to the function that runs it. Shared option groups (model
options, precision, overwrite) are in :mod:`eegdino_tf.cli.options`. Errors that users cause
(:class:`EEGDinoError`) print as one line, in the words of the command line, and exit 2.
TensorFlow's start-up lines are kept off the terminal (the library itself never does that).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

from eegdino_tf.cli.options import stderr_set_aside, translate
from eegdino_tf.errors import EEGDinoError

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("info", "demo", "convert", "encode", "encode_corpus", "finetune", "export", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eegdino-tf",
        description="EEG-DINO in TensorFlow: inspect weights, encode EEG, convert and export.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        command = importlib.import_module(f"eegdino_tf.cli.{name}").add_parser(subparsers)
        command.set_defaults(parser=command, uses_tensorflow=name != "convert")
    return parser


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """Import TensorFlow and find its devices with the process's stderr set aside: its C++
    start-up lines (oneDNN notice, CUDA probing, ``E0000 ... cuInit``) are written before its
    log level applies."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_set_aside():
        import tensorflow as tf

        tf.config.list_physical_devices()
    yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with quiet_startup() if args.uses_tensorflow else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except EEGDinoError as err:
        message = translate(str(err), args.parser)
        print(f"eegdino-tf {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eegdino-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``eegdino-tf info W | head -1``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
