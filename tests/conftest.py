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


@pytest.fixture(autouse=True, scope="session")
def litert_cache_in_a_temporary_folder(tmp_path_factory):
    """LiteRT conversions are cached in a folder of this test session (its subprocesses too),
    never in the user's own cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EEGDINO_TF_CACHE", str(tmp_path_factory.mktemp("litert-cache")))
        yield
