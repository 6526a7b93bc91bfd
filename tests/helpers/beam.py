"""The generated corpus of the Beam tests (``tests/test_beam.py``,
``tests/cli/test_encode_corpus.py``) and the Parquet rows a run writes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from eegdino_tf.io import STANDARD_CHANNELS
from tests.helpers import TINY
from tests.helpers.recordings import NEW_NAMES, TUH_LABELS, eeg_like, write_edf

WEIGHTS = str(TINY / "tiny_encoder.safetensors")
#: name -> (sampling rate, seconds, windows of 10 s): lengths, rates and layouts differ.
CORPUS = {"a.edf": (200.0, 35, 3), "sub/b.bdf": (256.0, 42, 4), "sub/deep/c.edf": (250.0, 20, 2)}
#: A truncated copy of ``a.edf``.
CORRUPT = "sub/corrupt.edf"


def write_corpus(root: Path) -> Path:
    """:data:`CORPUS` and :data:`CORRUPT` under ``root``: 200, 256 and 250 Hz, EDF and BDF, the
    new 10-20 names in reversed order, ECG/EOG/annotations, nested folders."""
    (root / "sub" / "deep").mkdir(parents=True)
    write_edf(root / "a.edf", eeg_like(19, 200 * 35, 200.0), TUH_LABELS, 200.0)
    shuffled = [NEW_NAMES.get(name, name) for name in STANDARD_CHANNELS][::-1]  # other order
    write_edf(root / "sub/b.bdf", eeg_like(19, 256 * 42, 256.0), shuffled, 256.0, bdf=True)
    write_edf(root / "sub/deep/c.edf", eeg_like(19, 250 * 20, 250.0), TUH_LABELS, 250.0, extra=True)
    raw = (root / "a.edf").read_bytes()
    (root / CORRUPT).write_bytes(raw[: len(raw) - 5000])  # truncated
    return root


def rows(output: Path, recording: str) -> dict:
    """A recording's Parquet file as columns: lists, and float32 arrays for the lists of floats."""
    import pyarrow.parquet as pq

    from eegdino_tf.beam import output_name

    table = pq.read_table(output / "embeddings" / output_name(recording))
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        kind = table.schema.field(name).type
        while hasattr(kind, "value_type"):
            kind = kind.value_type
        columns[name] = np.asarray(values, np.float32) if kind == "float" else values
    return columns


def leftovers(output: Path) -> list[str]:
    """What a run may leave besides its results: temporaries and settings."""
    names = [".tmp", "settings.json", *(p.name for p in output.glob("beam-temp-*"))]
    return [name for name in names if (output / name).exists()]


def interrupt_while_encoding(monkeypatch) -> None:
    """Make the model handler send this process a real SIGINT on its first batch, as Ctrl-C
    would (its model load is then never reported, so the load counter is reset too)."""
    from eegdino_tf import beam
    from eegdino_tf.beam import EEGDinoModelHandler

    def interrupted(self, batch, model, inference_args=None):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT was not delivered")

    monkeypatch.setattr(beam, "_unreported_loads", 0)
    monkeypatch.setattr(EEGDinoModelHandler, "run_inference", interrupted)
