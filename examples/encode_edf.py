"""Encode an EDF recording into EEG-DINO embeddings, one vector per 10 s window.

Writes a synthetic 60 s, 256 Hz EDF in TUH style (``EEG FP1-REF`` ... in millivolts, plus an
ECG channel) with edfio, then lets :func:`eegdino_tf.io.encode_recording` pick the 19
standard channels, convert mV to uV, resample 256 -> 200 Hz and encode the windows.

    python examples/encode_edf.py                       # random small model (not pretrained)
    python examples/encode_edf.py --weights eeg_dino_small.safetensors

The same from the command line: ``eegdino-tf encode rec.edf --weights W --output emb.npz``.
Needs the ``edf`` extra: ``pip install "eegdino-tf[edf]"``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import edfio
import numpy as np

import eegdino_tf
from eegdino_tf.io import STANDARD_CHANNELS, encode_recording


def write_synthetic_edf(path: Path, seconds: int = 60, sfreq: int = 256) -> None:
    """19 EEG channels (alpha rhythm + noise, in mV) and an ECG, TUH-style labels."""
    rng = np.random.default_rng(0)
    t = np.arange(seconds * sfreq) / sfreq
    signals = []
    for name in STANDARD_CHANNELS:
        alpha = 20 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6.3))
        mv = (alpha + 10 * rng.standard_normal(t.size)) / 1000
        label = f"EEG {name.upper()}-REF"
        signals.append(edfio.EdfSignal(mv, sfreq, label=label, physical_dimension="mV"))
    ecg = np.sin(2 * np.pi * 1.2 * t) ** 15
    signals.append(edfio.EdfSignal(ecg, sfreq, label="EEG EKG1-REF", physical_dimension="mV"))
    edfio.Edf(signals).write(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="EEG-DINO encoder weights (default: random small)")
    args = parser.parse_args()

    if args.weights:
        model = eegdino_tf.load_encoder(args.weights)
    else:
        print("no --weights: using a randomly initialised small encoder (NOT pretrained; the")
        print("embeddings below only show the shapes, they mean nothing)")
        model = eegdino_tf.build_encoder("small")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.edf"
        write_synthetic_edf(path)
        result = encode_recording(model, path, window=10, batch_size=8)

    print("\nwhat was done:")
    for step in result["steps"]:
        print(f"  - {step}")
    print("\nresult:")
    for key, value in result.items():
        if key != "steps":
            print(f"  {key:15s} {value.dtype} {list(value.shape)}")
    print(f"\nwindow starts (s): {result['window_start_s'].tolist()}")


if __name__ == "__main__":
    main()
