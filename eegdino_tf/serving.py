"""A SavedModel bundle for TF Serving that serves well from the first request.

- **Warm-up records**: ``OUTPUT/<version>/assets.extra/tf_serving_warmup_requests``, a TFRecord
  file of ``PredictionLog`` protos (one ``PredictRequest`` per listed batch size and
  signature), which the server replays when it loads a version, before it answers anyone.
  Built with ``tensorflow-serving-api`` (the ``serving`` extra).
- **Server configuration**: ``OUTPUT/models.config`` (a ``ModelServerConfig`` text proto)
  and ``OUTPUT/batching_parameters.txt`` (a ``BatchingParameters`` text proto) for
  ``tensorflow_model_server --model_config_file=... --enable_batching
  --batching_parameters_file=...``; the batching values come from timing the exported
  signature at each batch size (:func:`batching_parameters` says how).

:func:`eegdino_tf.export.export_saved_model` writes both (``warmup=``, ``serving_config=``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.errors import ExportError, require

#: The file TF Serving reads warm-up requests from, under the version folder.
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
#: TF Serving replays at most this many warm-up records (``kMaxNumWarmupRecords``).
MAX_WARMUP_RECORDS = 1000
#: The batch sizes timed for the batching parameters.
BATCHING_SIZES = (1, 2, 4, 8, 16, 32)
#: A larger batch is worth waiting for only if it serves at least this much more per second.
MIN_THROUGHPUT_GAIN = 1.1
#: Timed calls per batch size (their median counts, after one untimed call).
TIMED_CALLS = 3
MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"


def parse_batch_sizes(text: str | Sequence[int]) -> list[int]:
    """``"1,8"`` (or a sequence) -> ``[1, 8]``: positive, distinct, in increasing order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = [int(str(item).strip()) for item in items]
    except ValueError:
        raise ExportError(f"warmup must be batch sizes like 1,8; got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes) or len(set(sizes)) != len(sizes):
        raise ExportError(f"warmup must be distinct positive batch sizes like 1,8; got {text!r}")
    return sorted(sizes)


def warmup_requests(
    signatures: Sequence[str], batch_sizes: Sequence[int], probe: Callable[[int], np.ndarray]
) -> list[bytes]:
    """Serialized ``PredictionLog`` records: for each signature and batch size, a
    ``PredictRequest`` whose ``eeg`` is ``probe(batch)``."""
    import tensorflow as tf

    logs = require("tensorflow_serving.apis.prediction_log_pb2", "serving")
    predict = require("tensorflow_serving.apis.predict_pb2", "serving")
    if len(signatures) * len(batch_sizes) > MAX_WARMUP_RECORDS:
        raise ExportError(
            f"{len(signatures)} signatures x {len(batch_sizes)} batch sizes is more than the "
            f"{MAX_WARMUP_RECORDS} warm-up records TF Serving reads"
        )
    records = []
    for signature in signatures:
        for batch in batch_sizes:
            request = predict.PredictRequest()
            request.model_spec.signature_name = signature
            request.inputs["eeg"].CopyFrom(tf.make_tensor_proto(probe(batch)))
            log = logs.PredictionLog(predict_log=logs.PredictLog(request=request))
            records.append(log.SerializeToString())
    return records


def write_warmup(version_dir: str | os.PathLike, records: Sequence[bytes]) -> Path:
    """Write ``records`` as the version folder's warm-up file (a TFRecord file)."""
    import tensorflow as tf

    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def read_warmup(version_dir: str | os.PathLike) -> list[Any]:
    """The ``PredictionLog`` protos of a version folder's warm-up file, in order."""
    import tensorflow as tf

    logs = require("tensorflow_serving.apis.prediction_log_pb2", "serving")
    path = Path(version_dir) / WARMUP_FILE
    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        out.append(logs.PredictionLog.FromString(raw))
    return out


def replay_warmup(version_dir: str | os.PathLike, loaded: Any = None) -> Any:
    """Load the SavedModel (or take ``loaded``) and run every warm-up request through its
    signature, as TF Serving does when it loads a version; returns the loaded SavedModel."""
    import tensorflow as tf

    loaded = loaded if loaded is not None else tf.saved_model.load(str(version_dir))
    for log in read_warmup(version_dir):
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        loaded.signatures[request.model_spec.signature_name](
            **{k: tf.constant(v) for k, v in inputs.items()}
        )
    return loaded


def time_batches(
    run: Callable[[np.ndarray], Any],
    probe: Callable[[int], np.ndarray],
    sizes: Sequence[int] = BATCHING_SIZES,
    calls: int = TIMED_CALLS,
) -> dict[int, float]:
    """Median seconds of one call of ``run`` at each batch size (after one untimed call)."""
    return {size: median_seconds(run, probe(size), calls) for size in sizes}


def median_seconds(run: Callable[[np.ndarray], Any], eeg: np.ndarray, calls: int) -> float:
    """Median seconds of one call ``run(eeg)`` over ``calls`` calls, after one untimed call."""
    run(eeg)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(eeg)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def batching_parameters(timings: dict[int, float], threads: int) -> dict[str, Any]:
    """TF Serving's ``BatchingParameters`` from measured call times per batch size.

    - ``max_batch_size``: the smallest timed size whose throughput (examples per second) is
      within :data:`MIN_THROUGHPUT_GAIN` of the best timed one: a larger batch buys less
      than that and adds latency to every request in it.
    - ``allowed_batch_sizes``: the timed sizes up to it (the server pads a batch to the next
      one, so the model runs only shapes the warm-up already ran).
    - ``batch_timeout_micros``: a tenth of one ``max_batch_size`` call: waiting for a fuller
      batch adds at most 10% to a request's time.
    - ``num_batch_threads``: the CPU threads (one batch per thread at a time);
      ``max_enqueued_batches``: four batches per thread (beyond that the server refuses
      rather than queue for seconds).
    """
    if not timings or threads < 1:
        raise ExportError("batching parameters need timings and at least one thread")
    sizes = sorted(timings)
    throughput = {size: size / timings[size] for size in sizes}
    best = max(throughput.values())
    chosen = next(size for size in sizes if throughput[size] * MIN_THROUGHPUT_GAIN >= best)
    return {
        "max_batch_size": chosen,
        "batch_timeout_micros": max(1, round(timings[chosen] * 1e6 / 10)),
        "num_batch_threads": threads,
        "max_enqueued_batches": 4 * threads,
        "allowed_batch_sizes": [size for size in sizes if size <= chosen],
        "pad_variable_length_inputs": False,
    }


def batching_text(params: dict[str, Any]) -> str:
    """``BatchingParameters`` as the text proto ``--batching_parameters_file`` reads (the
    scalar fields are ``Int64Value`` wrappers: ``max_batch_size { value: 8 }``)."""
    lines = []
    for name, value in params.items():
        if isinstance(value, bool):
            lines.append(f"{name}: {str(value).lower()}")
        elif isinstance(value, list):
            lines += [f"{name}: {item}" for item in value]
        else:
            lines.append(f"{name} {{ value: {value} }}")
    return "\n".join(lines) + "\n"


def models_config_text(name: str, base_path: str) -> str:
    """A ``ModelServerConfig`` text proto serving the latest version under ``base_path``."""
    for what, value in (("model name", name), ("base path", base_path)):
        if not value or any(c in value for c in '"\\\n'):
            raise ExportError(f"{what} {value!r} cannot be written into models.config")
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )


def describe_bundle(output_dir: str | os.PathLike, version_dir: str | os.PathLike) -> str:
    """Lines for the command line: the signatures, the warm-up records, the server files."""
    import tensorflow as tf

    from eegdino_tf.artifact import read_record

    output_dir, version_dir = Path(output_dir), Path(version_dir)
    signatures = read_record(version_dir)["signatures"]
    lines = [
        "  signatures: "
        + "; ".join(f"{name} -> {', '.join(outs)}" for name, outs in signatures.items())
    ]
    warmup = version_dir / WARMUP_FILE
    if warmup.exists():
        count = sum(1 for _ in tf.data.TFRecordDataset(str(warmup)))
        lines.append(f"  warm-up: {count} requests in {warmup}")
    for name in (MODELS_CONFIG, BATCHING_FILE):
        if (output_dir / name).exists():
            lines.append(f"  server configuration: {output_dir / name}")
    return "\n".join(lines)
