"""Labelled rhythm recordings and manifests for the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eegdino_tf.finetune import FinetuneRecipe, FinetuneSettings
from eegdino_tf.io import STANDARD_CHANNELS
from tests.helpers import OVERRIDES, fixture_path
from tests.helpers.recordings import rhythm_recording, write_edf

ENCODER = fixture_path("tiny_encoder.safetensors")
#: Two quick epochs' settings for the tiny fixture (batches of 8, no warm-up, a high rate).
FAST = FinetuneSettings(
    batch_size=8,
    recipe=FinetuneRecipe(learning_rate=3e-3, warmup_epochs=0),
    verbose=0,
    model_options=OVERRIDES["tiny"],
)
RHYTHMS = {"alpha": 10.0, "beta": 20.0}


def rhythm_files(
    folder: Path, per_class: int, seconds: int, sfreq: float = 256.0, seed: int = 0
) -> list[tuple[str, str, str]]:
    """``per_class`` alpha- and beta-dominant EDF files in ``folder``: ``(name, label,
    subject)`` each, subject ``s{i}`` for the ``i``-th pair."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(per_class):
        for label, hz in RHYTHMS.items():
            path = folder / f"{label}_{i}.edf"
            write_edf(
                path, rhythm_recording(rng, hz, seconds, sfreq), list(STANDARD_CHANNELS), sfreq
            )
            files.append((path.name, label, f"s{i}"))
    return files


def write_manifest(folder: Path, lines: list[str], name: str = "manifest.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path
