"""Option groups shared by the commands, and the translation of library errors into flags."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from eegdino_tf.config import PRECISIONS, RUNTIMES
from eegdino_tf.errors import EEGDinoError, MissingHeadError


def add_model_options(parser: argparse.ArgumentParser, *, precision: str | None = None) -> None:
    """``--norm-groups`` / ``--num-heads`` (what the tensors cannot tell), ``--no-check-weights``
    and, where the command takes it, ``--precision`` with its default."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--norm-groups",
        type=int,
        help="GroupNorm groups: the size table's for a released size; required for any other "
        "(a weight file does not hold it)",
    )
    group.add_argument("--num-heads", type=int, help="attention heads (default 8)")
    group.add_argument(
        "--no-check-weights",
        dest="check_weights",
        action="store_false",
        default=None,
        help="load weights with NaN / inf values (or float64 values beyond float32's range) "
        "instead of refusing them",
    )
    if precision is not None:
        group.add_argument(
            "--precision",
            choices=("auto", *PRECISIONS),
            default=precision,
            help=f"compute precision (default {precision}); auto: the fastest that keeps the "
            "accuracy bounds on this machine",
        )


def add_runtime(parser: argparse.ArgumentParser) -> None:
    """``--runtime``: what runs the model in ``predict`` (:data:`eegdino_tf.config.RUNTIMES`)."""
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the model (default auto: LiteRT where a conversion is cached on this "
        "machine or pays for itself, else keras); keras: Keras (XLA where faster); xla: XLA; "
        "litert: LiteRT on the CPU, float32, after a one-off conversion (seconds, then "
        "cached), faster there for small and medium weights",
    )


def add_quantize(parser: argparse.ArgumentParser) -> None:
    """``--quantize``: predict's ``quantize`` with ``--runtime litert``
    (:data:`eegdino_tf.litert.LITERT_QUANTIZATIONS`)."""
    from eegdino_tf.litert import LITERT_QUANTIZATIONS

    parser.add_argument(
        "--quantize",
        choices=LITERT_QUANTIZATIONS,
        default="none",
        help="with --runtime litert or auto: dynamic-int8 runs int8 weights in LiteRT (faster "
        "on a CPU; refused "
        "where its output strays from float32's on a probe); default none",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options given on the command line, as loader / builder keywords."""
    names = ("norm_groups", "num_heads", "check_weights", "precision")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_classifier(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--classifier", action="store_true", help=help)


def load_model(args: argparse.Namespace, **options: Any) -> Any:
    """``args.weights`` as a classifier (``--classifier``) or an encoder, with the model
    options of the command line and ``options``."""
    import eegdino_tf

    kwargs = {**model_options(args), **options}
    if not args.classifier:
        return eegdino_tf.load_encoder(args.weights, **kwargs)
    try:
        return eegdino_tf.load_classifier(args.weights, **kwargs)
    except MissingHeadError:
        raise UsageError(
            f"{args.weights} holds an encoder without a classification head; "
            "drop --classifier to use the encoder"
        ) from None


def add_window_options(parser: argparse.ArgumentParser) -> None:
    """``--channels`` / ``--window`` / ``--stride``: how recordings become model windows."""
    from eegdino_tf.io import STANDARD_CHANNELS

    parser.add_argument(
        "--channels",
        help="comma-separated channels in the order the weights expect (default: the 19 "
        "standard 10-20 channels in TUH order: " + ",".join(STANDARD_CHANNELS) + ")",
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds (whole; default 10)")
    parser.add_argument("--stride", type=float, help="seconds between windows (default: window)")


def add_encode_options(parser: argparse.ArgumentParser) -> None:
    """What ``encode`` and ``encode-corpus`` share: the windows, the unit, what is kept, the
    classifier switch and the batch size."""
    add_window_options(parser)
    parser.add_argument("--unit", help="unit of the data if the file's is missing or wrong")
    parser.add_argument("--pad-tail", action="store_true", help="zero-pad the last window")
    parser.add_argument("--tokens", action="store_true", help="also save all tokens")
    add_classifier(parser, "the weights are a finetuned classifier")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch")


def add_force(parser: argparse.ArgumentParser, what: str = "OUTPUT") -> None:
    parser.add_argument("--force", action="store_true", help=f"overwrite an existing {what}")


#: ``name=value`` as the library writes a keyword argument in its messages.
_KEYWORD = re.compile(
    r"\b([a-z_][a-z0-9_]*)=(True|False|None|'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[\w.+-]+)"
)


def translate(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message in the command's words: each ``keyword=value`` it names becomes the
    flag that sets that keyword (``force=True`` -> ``--force``, ``unit='furlong'`` ->
    ``--unit furlong``). Keywords the command has no flag for are left as they are."""
    flags = {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest != "help"
    }

    def flag(match: re.Match) -> str:
        action = flags.get(match.group(1))
        if action is None:
            return match.group(0)
        name = max(action.option_strings, key=len)
        value = match.group(2).strip("'\"[]")  # a list is comma-separated on the command line
        return name if action.nargs == 0 else f"{name} {value}"

    return _KEYWORD.sub(flag, message)


class UsageError(EEGDinoError):
    """The command line itself is inconsistent (options that do not go together)."""


@contextlib.contextmanager
def stderr_set_aside() -> Iterator[None]:
    """Run the block with the process's stderr (file descriptor 2, where C++ libraries log)
    set aside; if the block raises, what was written is shown after all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
