"""An MNE pipeline into EEG-DINO: build a Raw, filter it, encode it, feed tf.data.

Creates a 60 s, 500 Hz ``mne.io.RawArray`` with 19 EEG channels in the new 10-20 names
(``T7``, ``P8``, ...) and an EOG channel, band-pass and notch filters it with MNE, then
encodes it with :func:`eegdino_tf.io.encode_recording` (channels picked by name into
the TUH order; volts to microvolts; 500 -> 200 Hz). Any format MNE reads works the same way:
``encode_recording(model, mne.io.read_raw("rec.vhdr"))``, or ``eegdino-tf encode rec.vhdr``.
The same windows, as a ``tf.data`` pipeline for training: :func:`eegdino_tf.data.window_dataset`.

    python examples/mne_pipeline.py [--weights eeg_dino_small.safetensors]

Needs the ``mne`` extra: ``pip install "eegdino-tf[mne]"``.
"""

from __future__ import annotations

import argparse

import mne
import numpy as np

import eegdino_tf
from eegdino_tf.data import window_dataset
from eegdino_tf.io import STANDARD_CHANNELS, encode_recording

NEW_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}


def synthetic_raw(seconds: int = 60, sfreq: float = 500.0) -> mne.io.RawArray:
    """19 EEG channels (alpha + 50 Hz mains + drift + noise) and an EOG, in volts."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sfreq)) / sfreq
    names = [NEW_NAMES.get(name, name) for name in STANDARD_CHANNELS]
    eeg = (
        20 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6.3, (19, 1)))
        + 15 * np.sin(2 * np.pi * 50 * t)
        + 40 * np.sin(2 * np.pi * 0.05 * t)
        + 8 * rng.standard_normal((19, t.size))
    )
    eog = 100 * (rng.random(t.size) < 0.002).astype(float)
    info = mne.create_info([*names, "EOG"], sfreq, ["eeg"] * 19 + ["eog"])
    return mne.io.RawArray(np.vstack([eeg, eog]) * 1e-6, info, verbose="error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="EEG-DINO encoder weights (default: random small)")
    args = parser.parse_args()
    if args.weights:
        model = eegdino_tf.load_encoder(args.weights)
    else:
        print("no --weights: using a randomly initialised small encoder (NOT pretrained)")
        model = eegdino_tf.build_encoder("small")

    raw = synthetic_raw()
    raw.filter(0.5, 75.0, picks="eeg", verbose="error")
    raw.notch_filter(50.0, picks="eeg", verbose="error")

    result = encode_recording(model, raw, window=10, progress=False)
    for step in result["steps"]:
        print(f"- {step}")
    print(f"global_token {result['global_token'].shape}, mean_token {result['mean_token'].shape}")

    # The same windows through tf.data, e.g. to finetune with model.fit(dataset.batch(8)).
    dataset = window_dataset([raw], labels=[1])
    x, y = next(iter(dataset))
    print(f"tf.data: {len(dataset)} windows, each {x.shape} {x.dtype.name}, label {int(y)}")
    tokens = model.predict(window_dataset([raw]).batch(8), verbose=0)
    same = np.allclose(tokens[:, 0], result["global_token"], atol=1e-4)
    print(f"global tokens via tf.data equal encode_recording's: {same}")


if __name__ == "__main__":
    main()
