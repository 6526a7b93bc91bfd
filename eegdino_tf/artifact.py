"""What an exported file says about itself: one JSON record, the same in every format.

A SavedModel carries it as ``OUTPUT/<version>/assets.extra/eegdino.json`` (TF Serving copies
nothing from ``assets.extra`` into the graph, so outputs are unchanged). The record names the
package version, the weights (SHA-256 of the file), the input (name, shape, dtype, units and
the x0.01 the model applies itself, sampling rate, window, channel names in slot order), the
outputs and the token layout, the quantization with the self-check's measured error, and
what the file does with non-finite input. :func:`read_record` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE
from eegdino_tf.errors import ExportError

#: The record's schema name; a reader refuses others.
SCHEMA = "eegdino-tf/export-record/1"
#: Where a SavedModel keeps the record, relative to its version folder.
SAVED_MODEL_RECORD = Path("assets.extra") / "eegdino.json"
#: What each output holds, by name.
OUTPUT_LAYOUTS = {
    "tokens": "[batch, 1 + C*P, D]: token 0 global, then patch tokens channel-major "
    "(index 1 + c*P + p for channel slot c, 1 s patch p)",
    "global_token": "[batch, D]: token 0",
    "mean_token": "[batch, D]: the mean of the patch tokens",
    "logits": "[batch, num_classes]",
    "probabilities": "[batch, num_classes]: softmax of the logits",
}
#: What each format does with NaN or Inf in ``eeg``.
NAN_POLICIES = {
    "saved-model": "error: a non-finite sample fails the call (InvalidArgument)",
}


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def export_record(
    model: Any,
    *,
    fmt: str,
    input_shape: Sequence[int | None],
    outputs: Sequence[str],
    signatures: dict[str, Sequence[str]] | None = None,
    quantization: str = "none",
    self_check: dict[str, float | None] | None = None,
    channel_names: Sequence[str] | None = None,
    weights_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The record of an artifact of ``model`` (an encoder, a classifier, or a model of yours).

    ``channel_names`` default to the standard 10-20 names of the first ``C`` slots, the order
    ``encode`` picks; ``self_check`` holds the export's measured ``nrmse``, ``max_abs`` and
    ``cosine`` against Keras.
    """
    from eegdino_tf import __version__
    from eegdino_tf.io.channels import STANDARD_CHANNELS

    _, channels, samples = input_shape
    names = list(channel_names) if channel_names is not None else None
    if names is None and channels <= len(STANDARD_CHANNELS):
        names = list(STANDARD_CHANNELS[:channels])
    if names is not None and len(names) != channels:
        raise ExportError(f"{len(names)} channel names given for an input of {channels} channels")
    config = getattr(model, "config", None)
    return {
        "schema": SCHEMA,
        "version": __version__,
        "format": fmt,
        "model": {
            "class": type(model).__name__,
            "size": getattr(config, "name", None),
            "num_classes": getattr(model, "num_classes", None),
            "precision": getattr(model, "precision", None),
        },
        "weights_file": None if weights_file is None else Path(weights_file).name,
        "weights_sha256": None if weights_file is None else sha256_of(weights_file),
        "input_name": "eeg",
        "input_shape": list(input_shape),
        "input_dtype": "float32",
        "units": "uV",
        "input_scale": "x0.01, applied inside the model: give raw microvolts",
        "sfreq": float(SAMPLING_RATE),
        "window_s": samples / SAMPLING_RATE,
        "patch_samples": PATCH_SIZE,
        "channels": names,
        "outputs": {name: OUTPUT_LAYOUTS.get(name, "a model output") for name in outputs},
        "signatures": {k: list(v) for k, v in (signatures or {}).items()},
        "quantization": {"mode": quantization, "self_check": dict(self_check or {})},
        "nan_policy": NAN_POLICIES.get(fmt, "unspecified"),
    }


def encode_record(record: dict[str, Any]) -> bytes:
    """The record as the UTF-8 JSON bytes an artifact stores."""
    return json.dumps(record, indent=1, sort_keys=True).encode()


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record of an exported artifact: a SavedModel folder (base or version folder) or the
    record file itself."""
    path = Path(path)
    candidates = [path, path / SAVED_MODEL_RECORD]
    if path.is_dir():
        versions = [p for p in path.iterdir() if p.name.isdigit()]
        if versions:
            candidates.append(max(versions, key=lambda p: int(p.name)) / SAVED_MODEL_RECORD)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ExportError(f"{path} holds no eegdino-tf export record ({SAVED_MODEL_RECORD})")
    try:
        record = json.loads(found.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{found} is not an export record: {err}") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ExportError(f"{found} is not an export record of schema {SCHEMA}")
    return record
