"""Deprecated: the recording functions moved to :mod:`eegdino_tf.io`.

``from eegdino_tf.recording import encode_recording`` still works, with a
:class:`DeprecationWarning`; import the same names from :mod:`eegdino_tf.io` instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import eegdino_tf.io as _io

__all__ = list(_io.__all__)


def __getattr__(name: str) -> Any:
    if name in __all__:
        warnings.warn(
            "eegdino_tf.recording is deprecated: import the same names from eegdino_tf.io",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_io, name)
    raise AttributeError(f"module 'eegdino_tf.recording' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
