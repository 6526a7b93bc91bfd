"""``eegdino-tf bench``: the benchmark, which lives in the repository's top-level
``benchmarks/`` folder, not in the installed library.

``benchmarks`` is imported when the parser is built, so that ``eegdino-tf bench --help`` lists
its options. It is found the usual way when importable (``python -m eegdino_tf`` run from the
repository root, or the repository on ``PYTHONPATH``); otherwise in a ``benchmarks/`` folder
of the current working directory, and only there: a console script such as ``eegdino-tf``
does not put the current directory on ``sys.path``, so that directory is appended to it while
the package is imported and while the benchmark runs (its child processes import it again).
Where neither has it, the command still exists, takes any arguments, and fails with one line
saying where to run it. Nothing else in :mod:`eegdino_tf` imports ``benchmarks``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

from eegdino_tf.errors import MissingExtraError

HELP = "speed against PyTorch, ONNX Runtime and TFLite"
#: The module of the benchmark's command line: ``add_arguments``, ``DESCRIPTION``, ``run_cli``.
MODULE = "benchmarks.cli"
INSTALL = 'pip install ".[bench]"'
#: What a command runs: its parsed arguments -> exit code.
Run = Callable[[argparse.Namespace], int]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    module, folder, problem = _import_benchmarks()
    if module is None:
        return _placeholder(subparsers, problem)
    parser = subparsers.add_parser("bench", help=HELP, description=module.DESCRIPTION)
    module.add_arguments(parser)
    run = module.run_cli
    parser.set_defaults(func=run if folder is None else _run_with_path(run, folder))
    return parser


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """``folder`` at the end of ``sys.path`` (so it shadows nothing) for the block's length."""
    sys.path.append(folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def _import_benchmarks() -> tuple[ModuleType | None, str | None, str | None]:
    """``(benchmarks.cli, the folder put on sys.path to import it or None, None)``, or
    ``(None, None, why it could not be imported or None when it is just absent)``."""
    try:
        return importlib.import_module(MODULE), None, None
    except ImportError as err:
        if not _absent(err):
            return None, None, f"{type(err).__name__}: {err}"
    cwd = os.getcwd()
    if "benchmarks" in sys.modules or not os.path.isfile(
        os.path.join(cwd, "benchmarks", "__init__.py")
    ):
        return None, None, None
    try:
        with _on_path(cwd):
            return importlib.import_module(MODULE), cwd, None
    except ImportError as err:
        return None, None, None if _absent(err) else f"{type(err).__name__}: {err}"


def _absent(err: ImportError) -> bool:
    """Whether ``err`` only says that the benchmark package itself is not there."""
    return isinstance(err, ModuleNotFoundError) and err.name in ("benchmarks", MODULE)


def _run_with_path(run: Run, folder: str) -> Run:
    """``run`` with ``folder`` on ``sys.path``, where the benchmark's child processes (spawned:
    they start with this process's ``sys.path``) find ``benchmarks`` again."""

    def run_from_folder(args: argparse.Namespace) -> int:
        with _on_path(folder):
            return run(args)

    return run_from_folder


def missing_message(problem: str | None = None) -> str:
    """The one line ``eegdino-tf bench`` fails with where ``benchmarks`` cannot be imported."""
    where = (
        f"cannot be imported ({problem})"
        if problem
        else f"is not importable from here ({os.getcwd()})"
    )
    return (
        f"the benchmark lives in the repository's benchmarks/ folder, which {where}; run"
        f" `eegdino-tf bench` (or `python -m benchmarks`) from the repository root after"
        f" `{INSTALL}`"
    )


def _placeholder(
    subparsers: argparse._SubParsersAction, problem: str | None
) -> argparse.ArgumentParser:
    """A ``bench`` parser that takes any arguments and whose run fails with
    :func:`missing_message` (``-h``/``--help``: prints that, and succeeds)."""
    # No prefix character can start an argument (NUL never does), so every argument, the
    # benchmark's options included, is collected by ``args`` instead of being refused.
    parser = subparsers.add_parser(
        "bench",
        help=f"{HELP} (from the repository root)",
        description=missing_message(problem),
        prefix_chars="\0",
        add_help=False,
    )
    parser.add_argument("args", nargs="*", help="the benchmark's options")

    def run(args: argparse.Namespace) -> int:
        if {"-h", "--help"} & set(args.args):
            parser.print_help()
            return 0
        raise MissingExtraError(missing_message(problem))

    parser.set_defaults(func=run)
    return parser
