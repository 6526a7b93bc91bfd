"""What an exported file says about itself: one JSON record, the same in every format.

A SavedModel carries it as ``OUTPUT/<version>/assets.extra/eegdino.json`` (TF Serving copies
nothing from ``assets.extra`` into the graph), a ``.tflite`` file as the metadata buffer named
``eegdino`` (the flatbuffer's own ``metadata`` table, which LiteRT's interpreter ignores), an
``.onnx`` file as the ``metadata_props`` entry ``eegdino``: outputs are unchanged. The record
names the package version, the weights (SHA-256 of the file), the input (name, shape, dtype,
units and the x0.01 the model applies itself, sampling rate, window, channel names in slot
order), the outputs and the token layout, the quantization with the self-check's measured
error, and what the file does with non-finite input. :func:`read_record` reads it back, and
``eegdino-tf info FILE`` shows it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE
from eegdino_tf.errors import ExportError
from eegdino_tf.files import sha256_of

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
#: The name of the record in a ``.tflite`` metadata table and in ONNX ``metadata_props``.
RECORD_NAME = "eegdino"
#: What each format does with NaN or Inf in ``eeg`` (TFLite and ONNX have no check op).
NAN_POLICIES = {
    "saved-model": "error: a non-finite sample fails the call (InvalidArgument)",
    "tflite": "nan: an example with a non-finite sample gets NaN in every output; the other "
    "examples are unaffected",
    "onnx": "nan: an example with a non-finite sample gets NaN in every output; the other "
    "examples are unaffected",
}
#: A ``.tflite`` file with int8 input (full-integer int8, ``int8_io``) cannot be given NaN.
INT8_IO_NAN_POLICY = (
    "app: the input is int8 and cannot hold NaN or Inf; the app's quantize step (float "
    "microvolts -> int8 with the input's scale and zero point in quantization.int8) must "
    "catch non-finite samples before the call"
)


def nan_policy(model: Any, fmt: str, int8_io: bool = False) -> str:
    """What the artifact does with non-finite input: a SavedModel of a model built with
    ``check_finite`` refuses it (``tracing.KEEPS_FINITE_CHECK``); the rest do not check; an int8
    input leaves it to the app (:data:`INT8_IO_NAN_POLICY`)."""
    from eegdino_tf.tracing import KEEPS_FINITE_CHECK

    if int8_io:
        return INT8_IO_NAN_POLICY
    if KEEPS_FINITE_CHECK[fmt] and getattr(model, "check_finite", False):
        return NAN_POLICIES[fmt]
    if KEEPS_FINITE_CHECK[fmt]:
        return "unchecked: the model was built with check_finite=False"
    return NAN_POLICIES[fmt]


def check_channel_names(channel_names: Sequence[str] | None, channels: int) -> None:
    """An :class:`ExportError` unless ``channel_names`` (if given) names ``channels`` distinct
    channels."""
    if channel_names is None:
        return
    names = list(channel_names)
    if len(names) != channels:
        raise ExportError(f"{len(names)} channel names given for an input of {channels} channels")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ExportError(f"channel names must be distinct non-empty strings, got {names}")


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
    int8: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of an artifact of ``model`` (an encoder, a classifier, or a model of yours).

    ``channel_names`` default to the standard 10-20 names of the first ``C`` slots, the order
    ``encode`` picks; ``self_check`` holds the export's measured ``nrmse``, ``max_abs`` and
    ``cosine`` against Keras (and a full-integer int8 export's held-out cosines); ``int8``
    what that export measured (``export.Int8Check.record``: op share, input range, the int8
    input and output quantization, held-out windows), kept as ``quantization.int8``.
    """
    from eegdino_tf import __version__
    from eegdino_tf.io.channels import STANDARD_CHANNELS

    _, channels, samples = input_shape
    sfreq = float(getattr(model, "sfreq", SAMPLING_RATE))  # a Resampled model's input rate
    slots = len(STANDARD_CHANNELS) if channels is None else channels  # any C: the first C
    check_channel_names(channel_names, slots)
    names = list(channel_names) if channel_names is not None else None
    if names is None and slots <= len(STANDARD_CHANNELS):
        names = list(STANDARD_CHANNELS[:slots])
    model = getattr(model, "wrapped", model)  # the model behind an export's resampling
    int8_io = int8 is not None and int8.get("io") == "int8"
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
        "input_dtype": "int8" if int8_io else "float32",
        "units": "uV",
        "input_scale": "x0.01, applied inside the model: give raw microvolts",
        "sfreq": sfreq,
        "window_s": None if samples is None else samples / sfreq,
        "resampling": "none: the input is at 200 Hz"
        if sfreq == SAMPLING_RATE
        else "inside the graph to 200 Hz, polyphase with scipy.signal.resample_poly's filter, "
        "each window alone",
        "patch_samples": PATCH_SIZE,
        "channels": names,
        "outputs": {name: OUTPUT_LAYOUTS.get(name, "a model output") for name in outputs},
        "signatures": {k: list(v) for k, v in (signatures or {}).items()},
        "quantization": {
            "mode": quantization,
            "self_check": dict(self_check or {}),
            **({} if int8 is None else {"int8": int8}),
        },
        "nan_policy": nan_policy(model, fmt, int8_io),
    }


def encode_record(record: dict[str, Any]) -> bytes:
    """The record as the UTF-8 JSON bytes an artifact stores."""
    return json.dumps(record, indent=1, sort_keys=True).encode()


def tflite_with_record(flatbuffer: bytes, record: dict[str, Any]) -> bytes:
    """``flatbuffer`` with ``record`` as its metadata buffer :data:`RECORD_NAME` (replacing one
    already there); the graph and its buffers are untouched."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.metadata = [m for m in model.metadata or [] if m.name.decode() != RECORD_NAME]
    buffer = schema.BufferT()
    buffer.data = list(encode_record(record))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = RECORD_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 2**16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tflite_record(data: bytes) -> bytes | None:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == RECORD_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _onnx_record(path: Path) -> bytes | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    found = [p.value for p in proto.metadata_props if p.key == RECORD_NAME]
    return found[0].encode() if found else None


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record of an exported artifact: a SavedModel folder (base or version folder), a
    ``.tflite`` or ``.onnx`` file, or the record's JSON file itself."""
    path = Path(path)
    raw, where = None, path
    try:
        if path.is_dir():
            versions = [p for p in path.iterdir() if p.name.isdigit()]
            folder = max(versions, key=lambda p: int(p.name)) if versions else path
            where = folder / SAVED_MODEL_RECORD
            raw = where.read_bytes() if where.is_file() else None
        elif path.suffix == ".tflite":
            raw = _tflite_record(path.read_bytes())
        elif path.suffix == ".onnx":
            raw = _onnx_record(path)
        else:
            raw = path.read_bytes()
    except (OSError, ValueError, IndexError) as err:  # unreadable, or not that format
        raise ExportError(f"{path} could not be read as an exported file: {err}") from err
    except Exception as err:  # a damaged flatbuffer or protobuf raises its own types
        raise ExportError(f"{path} is not a readable exported file ({type(err).__name__})") from err
    if raw is None:
        raise ExportError(f"{path} holds no eegdino-tf export record ({RECORD_NAME})")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{where} holds no valid export record: {err}") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ExportError(f"{where} holds no export record of schema {SCHEMA}")
    return record
