"""Recordings written for the tests: EEG-like signals and EDF/BDF files (edfio)."""

from __future__ import annotations

import edfio
import numpy as np

from eegdino_tf.io import STANDARD_CHANNELS

TUH_LABELS = [f"EEG {name.upper()}-REF" for name in STANDARD_CHANNELS]
NEW_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}  # old -> new 10-20 names
RNG = np.random.default_rng(1234)


def eeg_like(n_channels: int, n_samples: int, sfreq: float, scale: float = 30.0) -> np.ndarray:
    """Smooth-ish random EEG ``[C, T]`` (a few sines plus noise), amplitude about ``scale``."""
    t = np.arange(n_samples) / sfreq
    freqs = RNG.uniform(1, 30, size=(n_channels, 4, 1))
    phases = RNG.uniform(0, 2 * np.pi, size=(n_channels, 4, 1))
    waves = np.sin(2 * np.pi * freqs * t + phases).sum(axis=1)
    return scale * (waves / 2 + 0.3 * RNG.standard_normal((n_channels, n_samples)))


def write_edf(
    path,
    data: np.ndarray,
    labels: list[str],
    sfreq: float,
    *,
    unit: str = "uV",
    bound: float = 500.0,
    extra: bool = False,
    bdf: bool = False,
) -> None:
    """Write ``data`` ``[C, T]`` (in ``unit``) with ``edfio``; ``extra`` adds ECG, EOG, notes."""
    kind = edfio.BdfSignal if bdf else edfio.EdfSignal
    signals = [
        kind(row, sfreq, label=label, physical_dimension=unit, physical_range=(-bound, bound))
        for row, label in zip(data, labels, strict=True)
    ]
    annotations = None
    if extra:
        n = data.shape[1]
        ecg = kind(RNG.uniform(-5, 5, n), sfreq, label="ECG", physical_dimension="mV")
        eog = kind(RNG.uniform(-9, 9, 2 * n), 2 * sfreq, label="EOG LOC", physical_dimension="uV")
        signals = [*signals[:3], eog, *signals[3:], ecg]
        annotations = [edfio.EdfAnnotation(1.0, None, "eyes closed")]
    (edfio.Bdf if bdf else edfio.Edf)(signals, annotations=annotations).write(path)


def read_back_uv(path, labels: list[str], factor: float, bdf: bool = False) -> np.ndarray:
    """What the file holds (after 16/24-bit quantisation), via edfio, in microvolts."""
    rec = edfio.read_bdf(path) if bdf else edfio.read_edf(path)
    return np.stack([rec.get_signal(label).data for label in labels]) * factor


def windows_of(uv: np.ndarray, window_s: int = 10) -> np.ndarray:
    """Non-overlapping windows ``[W, C, window*200]`` of a 200 Hz array; the tail dropped."""
    size = window_s * 200
    count = uv.shape[1] // size
    return np.stack([uv[:, i * size : (i + 1) * size] for i in range(count)]).astype(np.float32)


def rhythm_recording(rng, hz: float, seconds: int, sfreq: float) -> np.ndarray:
    """19 channels ``[C, T]`` microvolts dominated by a ``hz`` rhythm, with pink-ish noise
    and an amplitude that varies per file and per channel."""
    t = np.arange(int(seconds * sfreq)) / sfreq
    amplitude = rng.uniform(15, 45) * rng.uniform(0.6, 1.4, (19, 1))
    rhythm = np.sin(2 * np.pi * (hz + rng.normal(0, 0.7, (19, 1))) * t + rng.uniform(0, 6, (19, 1)))
    noise = np.cumsum(rng.normal(0, 2, (19, t.size)), axis=1)
    noise -= noise.mean(axis=1, keepdims=True)
    return amplitude * rhythm + 0.3 * noise + rng.normal(0, 8, (19, t.size))
