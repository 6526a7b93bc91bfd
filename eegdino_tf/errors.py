"""Exceptions raised by eegdino-tf, and the small helpers that raise them.

Every error a user can cause derives from :class:`EEGDinoError`, so the CLI prints it as one
line instead of a traceback. The ``ValueError``/``ImportError`` bases keep ``except`` clauses
written against the built-in types working.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class EEGDinoError(Exception):
    """Base class of every error that eegdino-tf raises on purpose."""


class ConfigError(EEGDinoError, ValueError):
    """A model configuration (preset name, size, option value) is invalid."""


class WeightsError(EEGDinoError, ValueError):
    """A weight file is missing, unreadable, or does not match the model."""


class MissingHeadError(WeightsError):
    """A classifier was asked for, but the weight file holds an encoder only."""


class CheckpointError(WeightsError):
    """A ``torch.save`` checkpoint is malformed or holds something we refuse to load."""


class InputError(EEGDinoError, ValueError):
    """An EEG array has the wrong shape, length or values for the model."""


class RecordingError(EEGDinoError, ValueError):
    """A recording (EDF/BDF, MNE Raw) cannot be turned into model input."""


class OutputError(EEGDinoError, OSError):
    """An artifact cannot be written where it was asked for (a parent is a file, no access)."""


class OutputExistsError(OutputError, FileExistsError):
    """An artifact would overwrite an existing file or folder it may not replace."""


class ExportError(EEGDinoError, RuntimeError):
    """An export failed, or its artifact disagreed with Keras."""


class MissingExtraError(EEGDinoError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{module!r} is not installed ({err}); install it with: "
            f'pip install "eegdino-tf[{extra}]"'
        ) from None
