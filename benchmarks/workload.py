"""The work being timed: the encoder's FLOPs per example, and its EEG-like input."""

from __future__ import annotations

import numpy as np

from eegdino_tf.config import PATCH_SIZE, EEGDinoConfig, conv_lengths
from eegdino_tf.signals import eeg_like_signal


def flops_per_example(config: EEGDinoConfig, channels: int = 19, samples: int = 2000) -> float:
    """Multiply-add FLOPs (2 per MAC) of one example through the encoder.

    Patch embedding (temporal convs, DFT matmul, spectral projection) plus, per layer, the four
    dense projections and the two attention matmuls; the global token joins after layer 0.
    The conv geometry is :data:`eegdino_tf.config.TEMPORAL_CONVS`' (``config.conv_blocks``).
    """
    n = channels * (samples // PATCH_SIZE)
    d, f = config.embed_dim, config.mlp_dim
    bins = PATCH_SIZE // 2 + 1
    conv_macs, width_in = 0, 1
    for (width, conv), positions in zip(config.conv_blocks, conv_lengths()[1:], strict=True):
        conv_macs += positions * conv.kernel * width_in * width
        width_in = width
    embed = 2 * n * conv_macs
    embed += 2 * n * (PATCH_SIZE * 2 * bins + bins * d)
    tokens = [n] + [n + 1] * (config.depth - 1)
    layers = sum(2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d for t in tokens)
    return float(embed + layers)


def eeg_input(batch: int, channels: int, samples: int) -> np.ndarray:
    """Seeded EEG-like microvolts ``[batch, channels, samples]`` (the demo's signal)."""
    seconds = -(-samples // PATCH_SIZE)
    return eeg_like_signal(channels, seconds, batch=batch)[..., :samples]
