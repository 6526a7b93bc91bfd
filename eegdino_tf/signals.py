"""Synthetic EEG-like signals: the demo's input, the exports' probe, the benchmark's data."""

from __future__ import annotations

import numpy as np

from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE


def eeg_like_signal(
    channels: int = 19, seconds: int = 10, *, seed: int = 0, batch: int = 1
) -> np.ndarray:
    """Seeded EEG-like microvolts ``[batch, channels, seconds * 200]``: alpha and theta
    rhythms, a 1/f-ish background and line noise, tens of microvolts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    shape = (batch, channels, 1)
    alpha = 20 * np.sin(2 * np.pi * rng.uniform(8, 12, shape) * t + rng.uniform(0, 6.3, shape))
    theta = 10 * np.sin(2 * np.pi * rng.uniform(4, 7, shape) * t + rng.uniform(0, 6.3, shape))
    background = np.cumsum(rng.normal(0, 3, (batch, channels, t.size)), axis=-1)
    background -= background.mean(axis=-1, keepdims=True)
    line = 2 * np.sin(2 * np.pi * 50 * t)
    return (alpha + theta + 0.3 * background + line).astype(np.float32)


def probe_eeg(batch: int, channels: int, samples: int, seed: int = 0) -> np.ndarray:
    """The seeded EEG-like microvolts ``[batch, channels, samples]`` float32 that exports and
    conversions check themselves on (any length: whole seconds cut to ``samples``)."""
    seconds = -(-samples // PATCH_SIZE)
    return eeg_like_signal(channels, seconds, seed=seed, batch=batch)[..., :samples]
