"""Shared test helpers: fixture locations and the error metrics.

Test files import from here (``from tests.helpers import TINY, nrmse``), never from each other."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]
#: The tiny fixtures, always present (copied into the repo).
TINY = REPO / "tests" / "fixtures"
#: All fixtures, beside the repo as in CI (``../shared/fixtures``).
SHARED = REPO.parent / "shared" / "fixtures"
#: The three fixture cases: suffix of the keys in ``*_io.safetensors``.
CASES = ("", "_c16", "_b1")
#: Per-fixture config overrides the tensors cannot tell (see the fixtures' README).
OVERRIDES = {"tiny": {"norm_groups": 4}, "small": {}, "medium2": {}}


def nrmse(actual, expected) -> float:
    """Normalised RMS error: ``rms(actual - expected) / rms(expected)``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.sqrt(np.mean((actual - expected) ** 2) / np.mean(expected**2)))


def global_cosines(got, expected) -> np.ndarray:
    """Per-example cosine similarity ``[N]`` of the global tokens (``tokens[:, 0]`` of
    ``[N, T, D]``; rows of ``[N, D]`` global tokens or logits)."""
    a, b = (
        np.asarray(v, np.float64).reshape(len(v), -1, np.shape(v)[-1])[:, 0]
        for v in (got, expected)
    )
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def fixture_path(name: str) -> Path:
    """A fixture file: the repo copy for ``tiny_*``, else ``../shared/fixtures`` (or skip)."""
    if name.startswith("tiny_"):
        return TINY / name
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing in CI: the shared fixtures must be beside the repo")
        pytest.skip(f"{path} not found: the shared fixtures are not beside this checkout")
    return path


def load_io(model: str) -> dict[str, np.ndarray]:
    return load_file(str(fixture_path(f"{model}_io.safetensors")))
