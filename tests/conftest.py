"""pytest's configuration for the suite; the shared helpers are in ``tests/helpers``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import eegdino_tf
from tests.helpers import TINY


@pytest.fixture(scope="module")
def encoder():
    """The tiny fixture encoder (a test file may define its own ``encoder`` instead)."""
    return eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)


@pytest.fixture(scope="module")
def classifier():
    """The tiny fixture classifier."""
    return eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)
