"""A corpus of recordings to embeddings with Apache Beam (``pip install "eegdino-tf[beam]"``).

:class:`EncodeCorpus` takes a ``PCollection`` of recording paths (from
:class:`MatchRecordings` for globs, :class:`ReadManifest` for a list file, or your own) and
writes, under ``output``:

- ``embeddings/<name>-<hash>.parquet``: one file per recording, one row per window, with the
  columns ``recording`` (the path as given), ``window`` (index), ``start_s``, ``channels``,
  ``sfreq``, ``global_token`` and ``mean_token`` (lists of float32), plus ``tokens`` with
  ``tokens=True`` or, for a classifier, ``logits`` and ``probabilities``. The rows are exactly
  what :func:`eegdino_tf.io.encode_recording` (``eegdino-tf encode``) gives for that file.
- ``errors.jsonl``: one ``{"recording", "stage", "error"}`` object per recording that failed
  (``stage`` is ``open``, ``window``, ``read``, ``inference`` or ``collect``; ``error`` is one
  line, ``Type: message``).
- ``recordings.jsonl``: one line per input recording: ``status`` ``written``, ``skipped``
  (its file was there already) or ``failed``, its window count and file.

Each recording is read and windowed by :func:`eegdino_tf.io.open_recording` (same channel
matching, units, resampling and windows as ``encode``); the windows of all files are batched
together by Beam's ``RunInference`` with :class:`EEGDinoModelHandler`, which loads the weights
once per worker process (shared between its threads). All windows have one shape
``[len(channels), window * 200]``, because every recording is picked to the same channel list,
so any batch stacks. The rows of a recording are grouped again, checked against the number of
windows it was cut into (none dropped, none duplicated) and written as one Parquet file by
``fileio.WriteToFiles``, which writes a temporary file and renames it into place only after
it is complete. That file existing is what "done" means: a rerun skips recordings that have
one, so it produces the same rows and nothing twice. ``settings.json`` records the options that
decide the rows; a rerun into the same folder with other options is refused, so one folder never
mixes rows of two settings (:func:`encode_corpus` removes the ``settings.json`` it wrote when
its run wrote no row, so a run that failed or was interrupted at its start pins nothing).

Each run writes its temporaries under ``output/.tmp/<run>/`` and, in :func:`encode_corpus`,
holds an exclusive ``flock`` on ``output/.tmp/<run>.lock`` while it runs. The next
:func:`encode_corpus` into that folder removes every temporary whose lock no live process holds
(a run killed with ``kill -9``), and leaves those of live concurrent runs alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: runs take no lock
    fcntl = None

from eegdino_tf.config import RUNTIMES, SAMPLING_RATE, batch_count
from eegdino_tf.errors import (
    ConfigError,
    EEGDinoError,
    MissingHeadError,
    OutputError,
    RecordingError,
    WeightsError,
    require,
)
from eegdino_tf.litert import check_quantize

beam = require("apache_beam", "beam")
pa = require("pyarrow", "beam")
pq = require("pyarrow.parquet", "beam")

from apache_beam.io import fileio  # noqa: E402  (after the check that Beam is installed)
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.io.localfilesystem import LocalFileSystem  # noqa: E402
from apache_beam.ml.inference.base import (  # noqa: E402
    KeyedModelHandler,
    ModelHandler,
    RunInference,
)
from apache_beam.options.value_provider import StaticValueProvider  # noqa: E402

#: The namespace of this pipeline's Beam metrics (:data:`COUNTERS`).
NAMESPACE = "eegdino_tf"
#: The counters :func:`encode_corpus` returns (0 for one that never counted in a run).
COUNTERS = ("model_loads", "windows_read", "windows_written", "recordings_written",
            "recordings_skipped", "recordings_failed")  # fmt: skip
EMBEDDINGS = "embeddings"
ERRORS = "errors.jsonl"
REPORT = "recordings.jsonl"
#: Where ``fileio.WriteToFiles`` writes each file before renaming it into place: a folder per
#: run, ``TEMPORARY/<run>/``, and the lock its live run holds, ``TEMPORARY/<run>.lock``.
TEMPORARY = ".tmp"
SETTINGS = "settings.json"
#: Seconds between two progress lines of :func:`encode_corpus` (``progress=True``), at least.
PROGRESS_EVERY_S = 1.0

_PLAN, _ERROR, _SKIPPED = "plan", "error", "skipped"
_LOCK = ".lock"
_unreported_loads = 0
_loads_lock = threading.Lock()
#: Progress of the runs of :func:`encode_corpus` in this process, by run (the DoFns that run
#: in this process report to it; workers in other processes find none and report nothing).
_progress: dict[str, _Progress] = {}


def _counter(name: str, count: int = 1) -> None:
    beam.metrics.Metrics.counter(NAMESPACE, name).inc(count)


def _new_run() -> str:
    """A name for one run: host, process and a random part."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _on_local_disk(path: str) -> bool:
    """Whether Beam opens ``path`` with its local filesystem (not ``gs://``, ``s3://``, ...)."""
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


@contextlib.contextmanager
def local_file(path: str) -> Iterator[str]:
    """``path`` as a local file: itself on the local disk, else a temporary copy made through
    Beam's ``FileSystems`` (``gs://``, ``s3://``, ``hdfs://``, ...) and removed afterwards."""
    if _on_local_disk(path):
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix=PurePosixPath(path).suffix) as copy:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as source:
            shutil.copyfileobj(source, copy)
        copy.flush()
        yield copy.name


def same_file_key(path: str) -> str:
    """What two spellings of one recording share: a local path's real path (``./a.edf`` and
    ``a.edf``, a symlink and its target, resolved where the file is read); any other
    filesystem's path as it is."""
    if _on_local_disk(path):
        return os.path.realpath(path)
    return path


def output_name(recording: str) -> str:
    """The Parquet file name of ``recording`` under ``output/embeddings``: the stem and a hash
    of its :func:`same_file_key` (equal stems in different folders do not collide, and a
    rerun that spells a file another way finds it done)."""
    key = same_file_key(recording)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(key).stem)[:80] or "recording"
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


class EEGDinoModelHandler(ModelHandler[np.ndarray, dict[str, np.ndarray], Any]):
    """Beam ``ModelHandler`` for EEG-DINO: windows ``[C, T]`` in, one dict per window out.

    ``load_model`` builds the model with :func:`eegdino_tf.load_encoder` (or
    :func:`~eegdino_tf.load_classifier` with ``classifier=True``) from ``weights``, a
    ``.safetensors`` (any layout) or ``.pt`` file on any filesystem Beam opens (remote files
    are copied to a local temporary once per load); ``options`` are the loaders' (``precision``,
    ``norm_groups``, ...). ``RunInference`` keeps one loaded model per worker process, shared
    by its threads; ``share_across_processes=True`` (with ``model_copies``) serves one model
    per machine instead. Each load adds one to the Beam counter ``model_loads``.

    With ``runtime="litert"`` and an ``input_shape`` ``(channels, samples)``, each loaded model
    is converted for LiteRT at that window shape as it loads, not at its first batch; with
    ``runtime="auto"`` (the default) it takes LiteRT where the worker's machine has that
    conversion cached (:mod:`eegdino_tf.litert_cache`: converted once per machine, by an
    earlier run or ``--runtime litert``), Keras otherwise.
    ``load_context``, if given, is a context manager factory entered around each load (the
    command line passes one that sets the C++ log lines of TensorFlow and LiteRT aside).

    Batches are exactly ``batch_size`` windows (a bundle's last batch is padded to it, so XLA
    compiles one program). ``runtime`` is ``predict``'s: ``"auto"``, ``"keras"``, ``"xla"`` or
    ``"litert"`` (LiteRT
    on the worker's CPU, float32; converted once per loaded model, see
    :mod:`eegdino_tf.litert`); ``quantize="dynamic-int8"`` with it runs int8 weights.
    Outputs: ``global_token`` and ``mean_token`` ``[D]`` (and ``tokens``
    ``[1 + C*P, D]`` with ``tokens=True``) for an encoder; ``logits`` and ``probabilities``
    for a classifier; float32, as :func:`eegdino_tf.io.encode_recording` computes them.
    """

    def __init__(
        self,
        weights: str,
        *,
        classifier: bool = False,
        tokens: bool = False,
        batch_size: int = 8,
        share_across_processes: bool = False,
        model_copies: int | None = None,
        runtime: str = "auto",
        quantize: str = "none",
        input_shape: tuple[int, int] | None = None,
        load_context: Callable[[], contextlib.AbstractContextManager] | None = None,
        **options: Any,
    ) -> None:
        batch_count(batch_size)
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        check_quantize(runtime, quantize)
        if tokens and classifier:
            raise ConfigError("tokens=True needs an encoder, not classifier=True")
        super().__init__(
            min_batch_size=batch_size,
            max_batch_size=batch_size,
            large_model=share_across_processes,
            model_copies=model_copies,
        )
        self.weights = str(weights)
        self.classifier = classifier
        self.tokens = tokens
        self.batch_size = batch_size
        self.runtime = runtime
        self.quantize = quantize
        self.input_shape = input_shape
        self.load_context = load_context
        self.options = options

    def load_model(self) -> Any:
        global _unreported_loads
        import eegdino_tf

        loader = eegdino_tf.load_classifier if self.classifier else eegdino_tf.load_encoder
        with (self.load_context or contextlib.nullcontext)():
            with local_file(self.weights) as path:
                model = loader(path, **self.options)
            if self.input_shape is not None and self.runtime == "litert":
                model.litert_function(*self.input_shape, self.quantize)
            elif self.input_shape is not None and self.runtime == "auto":
                # Loads a cached conversion now, if this machine has one (int8: converts).
                model.choose_runtime(*self.input_shape, quantize=self.quantize)
        with _loads_lock:  # counted at the next batch: Beam metrics need a bundle
            _unreported_loads += 1
        return model

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[dict[str, np.ndarray]]:
        global _unreported_loads
        from eegdino_tf.io.encode import summarize
        from eegdino_tf.runtime import padded

        with _loads_lock:
            loads, _unreported_loads = _unreported_loads, 0
        if loads:
            _counter("model_loads", loads)
        real = len(batch)
        x = padded(np.stack(batch), self.batch_size)
        out = model.predict(
            x, batch_size=self.batch_size, verbose=0, runtime=self.runtime, quantize=self.quantize
        )[:real]
        found = summarize(out, self.tokens)
        return [{k: v[i] for k, v in found.items()} for i in range(real)]


class _WindowFailed(NamedTuple):
    """What :class:`_IsolatingHandler` gives for a window the model failed on alone."""

    error: str


class _IsolatingHandler(EEGDinoModelHandler):
    """:class:`EncodeCorpus`' handler: a batch that fails is run again window by window, so a
    bad window (NaN samples, say) fails alone, not the recordings that share its batch; a
    window that fails alone gives a :class:`_WindowFailed` in its place."""

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Any]:
        try:
            return super().run_inference(batch, model, inference_args)
        except Exception as err:  # a window's failure is that window's recording's
            if len(batch) == 1:
                return [_WindowFailed(_one_line(err))]
        return [out for x in batch for out in self.run_inference([x], model, inference_args)]


def _one_line(error: BaseException) -> str:
    """``Type: first line of the message``, as one line of ``errors.jsonl``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class _Failed(EEGDinoError):
    """A recording could not be read: ``stage`` and the original error."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(_one_line(error))
        self.stage = stage


class _ReadWindows(beam.DoFn):
    """A recording path -> its windows ``((recording, index, start_s), x)``; then its plan
    (tagged ``plan``), or one error (tagged ``error``); or ``skipped`` if it is done."""

    def __init__(
        self, embeddings: str, opening: dict[str, Any], windowing: dict[str, Any], run: str
    ) -> None:
        self.embeddings = embeddings
        self.opening = opening
        self.windowing = windowing
        self.run = run

    def process(self, recording: str) -> Iterator[Any]:
        progress = _progress.get(self.run)
        done = FileSystems.join(self.embeddings, output_name(recording))
        if FileSystems.exists(done):
            _counter("recordings_skipped")
            if progress:
                progress.finished(recording)
            yield beam.pvalue.TaggedOutput(_SKIPPED, (recording, done))
            return
        try:  # errors raised downstream of a yield are not _Failed and stop the pipeline
            for item in self._windows(recording):
                if item[0] == _PLAN:
                    if progress:
                        progress.planned(recording, item[1]["windows"])
                    yield beam.pvalue.TaggedOutput(_PLAN, (recording, item[1]))
                else:
                    yield item
        except _Failed as failed:
            if progress:
                progress.finished(recording)
            error = {"recording": recording, "stage": failed.stage, "error": str(failed)}
            yield beam.pvalue.TaggedOutput(_ERROR, (recording, error))

    def _windows(self, recording: str) -> Iterator[Any]:
        from eegdino_tf.io import open_recording

        stage = "open"
        try:
            with local_file(recording) as path:
                opened = open_recording(path, **self.opening)
                stage = "window"
                steps = [*opened.steps, opened.describe_windows(**self.windowing)]
                stage = "read"
                count = 0
                for count, (start_s, x) in enumerate(opened.windows(**self.windowing), 1):
                    yield (recording, count - 1, start_s), x
        except Exception as err:  # any failure of one recording is that recording's
            raise _Failed(stage, err) from err
        _counter("windows_read", count)
        yield _PLAN, {"windows": count, "channels": list(opened.channels), "steps": steps}


def _exception_message(info: Any) -> str:
    """A dead letter's exception -> ``"Type: message"`` (its first line). Beam emits ``(type,
    repr, traceback lines)`` (typed ``ExceptionInfo`` from 2.78), whose last entry is the
    exception as Python prints it; an exception object (Beam 2.77) is taken as it is."""
    if isinstance(info, BaseException):
        return _one_line(info)
    kind, text, lines = info
    last = lines[-1].strip().splitlines()[:1] if lines else []
    return last[0] if last else f"{kind.__name__}: {text}"


def _failed_batch(failure: Any) -> Iterator[tuple[str, dict]]:
    """RunInference's dead letter ``(batch of (key, x), exception info)`` -> one error per
    recording in the batch."""
    batch, info = failure
    message = _exception_message(info)
    for recording in sorted({key[0] for key, _ in batch}):
        yield recording, {"recording": recording, "stage": "inference", "error": message}


def _row(item: Any, run: str) -> tuple[str, dict[str, Any]]:
    """A window's ``((recording, index, start_s), outputs)`` -> ``(recording, row)``: its
    ``outputs``, or the ``error`` it failed with alone."""
    (recording, index, start_s), outputs = item
    progress = _progress.get(run)
    if progress:
        progress.encoded(recording)
    row = {"window": index, "start_s": start_s}
    if isinstance(outputs, _WindowFailed):
        return recording, {**row, "error": outputs.error}
    return recording, {**row, "outputs": outputs}


def _collect(item: tuple[str, dict[str, list]]) -> Iterator[Any]:
    """All that is known of one recording -> ``(recording, plan, rows)`` to write, or an
    error if it failed or its rows are not exactly its windows, once each."""
    recording, found = item
    errors = found[_ERROR]
    if errors:
        _counter("recordings_failed")
        yield beam.pvalue.TaggedOutput(_ERROR, errors[0])
        return
    (plan,) = found[_PLAN]
    rows = sorted(found["rows"], key=lambda row: row["window"])
    failed = [row for row in rows if "error" in row]
    if failed:  # the windows the model failed on alone (the first of them is told)
        _counter("recordings_failed")
        row = failed[0]
        error = f"window {row['window']} at {row['start_s']:g} s: {row['error']}"
        yield beam.pvalue.TaggedOutput(
            _ERROR, {"recording": recording, "stage": "inference", "error": error}
        )
        return
    if [row["window"] for row in rows] != list(range(plan["windows"])):
        _counter("recordings_failed")
        yield beam.pvalue.TaggedOutput(
            _ERROR,
            {
                "recording": recording,
                "stage": "collect",
                "error": f"expected windows 0..{plan['windows'] - 1} once each, "
                f"got {len(rows)} rows",
            },
        )
        return
    yield recording, plan, rows


def _column(values: list[np.ndarray]) -> Any:
    """Arrays of one shape -> a column of (nested) fixed-size float32 lists."""
    stacked = np.stack(values).astype(np.float32)
    column = pa.array(stacked.reshape(-1))
    for size in reversed(stacked.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


class _ParquetSink(fileio.FileSink):
    """One element ``(recording, plan, rows)`` -> one Parquet file (its rows by window)."""

    def __init__(self, metadata: str, destination: str | None = None) -> None:
        self.metadata = metadata

    def open(self, fh: Any) -> None:
        self._fh = fh

    def write(self, record: tuple[str, dict, list[dict]]) -> None:
        recording, plan, rows = record
        n = len(rows)
        columns = {
            "recording": pa.array([recording] * n, pa.string()),
            "window": pa.array([row["window"] for row in rows], pa.int64()),
            "start_s": pa.array([row["start_s"] for row in rows], pa.float64()),
            "channels": pa.array([plan["channels"]] * n, pa.list_(pa.string())),
            "sfreq": pa.array([SAMPLING_RATE] * n, pa.float64()),
        }
        for name in rows[0]["outputs"]:
            columns[name] = _column([row["outputs"][name] for row in rows])
        metadata = {"eegdino_tf": self.metadata, "steps": json.dumps(plan["steps"])}
        table = pa.table(columns).replace_schema_metadata(metadata)
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        self._fh.write(buffer.getvalue())
        _counter("windows_written", n)
        _counter("recordings_written")

    def flush(self) -> None:
        self._fh.flush()


def _file_name(window, pane, shard, shards, compression, destination: str) -> str:
    """``WriteToFiles`` naming: one file per recording, named by :func:`output_name`."""
    if shards != 1:  # one element per destination; more files would be duplicated rows
        raise RecordingError(f"{destination} came out in {shards} files instead of one")
    return output_name(destination)


def _rows_in(path: str) -> int:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        return pq.read_metadata(file).num_rows


class _TextSink(fileio.FileSink):
    """One element, a str -> one file holding it (UTF-8)."""

    def open(self, fh: Any) -> None:
        self._fh = fh

    def write(self, text: str) -> None:
        self._fh.write(text.encode())

    def flush(self) -> None:
        self._fh.flush()


def _write_jsonl(pcoll: Any, output: str, name: str, temporary: str) -> Any:
    """One JSON object per line, sorted, as the single file ``output/name`` (written under
    ``temporary`` and renamed into place when complete)."""
    return (
        pcoll
        | f"All {name}" >> beam.combiners.ToList()
        | f"Encode {name}"
        >> beam.Map(lambda rows: "".join(f"{line}\n" for line in sorted(map(json.dumps, rows))))
        | f"Write {name}"
        >> fileio.WriteToFiles(
            output,
            file_naming=lambda *_: name,
            sink=lambda _: _TextSink(),
            temp_directory=StaticValueProvider(str, temporary),
        )
    )


def _keep_settings(output: str, settings: dict[str, Any]) -> bool:
    """Write ``settings`` to ``output/settings.json``, or refuse if it holds other ones;
    whether it was written now."""
    path = FileSystems.join(output, SETTINGS)
    wanted = json.loads(json.dumps(settings))
    if FileSystems.exists(path):
        with FileSystems.open(path) as file:
            kept = json.loads(file.read())
        changed = sorted(k for k in {*kept, *wanted} if kept.get(k) != wanted.get(k))
        if changed:
            differences = ", ".join(
                f"{k}={kept.get(k)!r} there, {wanted.get(k)!r} now" for k in changed
            )
            raise ConfigError(
                f"{output} holds rows encoded with other settings ({differences}); use another "
                "output, or the same settings to complete it"
            )
        return False
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    partial = f"{path}.partial"
    with FileSystems.create(partial) as file:
        file.write(json.dumps(wanted, indent=1, sort_keys=True).encode())
    FileSystems.rename([partial], [path])
    return True


class CorpusOutputs(NamedTuple):
    """What :class:`EncodeCorpus` returns: ``dict`` PCollections, one element per recording
    (``recording``, ``status``, ``windows``, ``file``; errors: ``stage``, ``error``)."""

    written: Any
    skipped: Any
    errors: Any


@dataclasses.dataclass(eq=False)
class EncodeCorpus(beam.PTransform):
    """Recording paths (a ``PCollection`` of str) -> Parquet embeddings under ``output``.

    ``channels``, ``unit``, ``window``, ``stride``, ``pad_tail`` and ``tokens`` mean what they
    mean in :func:`eegdino_tf.io.encode_recording`; ``weights``, ``classifier``,
    ``batch_size``, ``share_across_processes``, ``model_copies``, ``runtime``, ``quantize`` and
    ``model_options`` (``precision``, ``norm_groups``, ...) go to
    :class:`EEGDinoModelHandler`. A recording given twice, or under two spellings of one local
    file (:func:`same_file_key`), is encoded once, under the first of its spellings in sort
    order. ``load_context`` goes to the handler too. See the module's documentation for what is
    written; the temporaries go under ``output/.tmp/<run>/``, ``run`` being this transform's
    (a fresh one each).
    """

    weights: str
    output: str
    classifier: bool = False
    channels: Sequence[str] | str | None = None
    unit: str | None = None
    window: float = 10
    stride: float | None = None
    pad_tail: bool = False
    tokens: bool = False
    batch_size: int = 8
    share_across_processes: bool = False
    model_copies: int | None = None
    runtime: str = "auto"
    quantize: str = "none"
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    load_context: Callable[[], contextlib.AbstractContextManager] | None = None
    run: str = dataclasses.field(default_factory=_new_run, init=False)
    #: Whether expanding this transform wrote ``settings.json`` (it was not there).
    pinned: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self) -> None:
        super().__init__()
        from eegdino_tf.io.channels import check_unit
        from eegdino_tf.io.windows import seconds_to_samples

        check_unit(self.unit)
        shape = self.window_shape()
        if self.stride is not None:
            seconds_to_samples(self.stride, "stride", whole_seconds=False)
        self.handler = _IsolatingHandler(
            str(self.weights),
            classifier=self.classifier,
            tokens=self.tokens,
            batch_size=self.batch_size,
            share_across_processes=self.share_across_processes,
            model_copies=self.model_copies,
            runtime=self.runtime,
            quantize=self.quantize,
            input_shape=shape,
            load_context=self.load_context,
            **self.model_options,
        )

    def settings(self) -> dict[str, Any]:
        """The options that decide the rows (kept in each Parquet file's metadata)."""
        channels = self.channels.split(",") if isinstance(self.channels, str) else self.channels
        return {
            "weights": str(self.weights),
            "classifier": self.classifier,
            "channels": None if channels is None else [c.strip() for c in channels if c.strip()],
            "unit": self.unit,
            "window": self.window,
            "stride": self.stride,
            "pad_tail": self.pad_tail,
            "tokens": self.tokens,
            **({"quantize": self.quantize} if self.quantize != "none" else {}),  # int8's rows
            **self.model_options,
        }

    def window_shape(self) -> tuple[int, int]:
        """``(channels, samples)`` of every window this transform encodes."""
        from eegdino_tf.io import STANDARD_CHANNELS
        from eegdino_tf.io.windows import window_samples

        channels = self.settings()["channels"] or STANDARD_CHANNELS
        return len(channels), window_samples(self.window)

    def temporary(self) -> str:
        """This run's folder of temporaries: ``output/.tmp/<run>``."""
        return FileSystems.join(str(self.output), TEMPORARY, self.run)

    def expand(self, paths):  # -> CorpusOutputs (a hint Beam would warn about)
        output = str(self.output)
        self.pinned = _keep_settings(output, self.settings())
        embeddings = FileSystems.join(output, EMBEDDINGS)
        windowing = {"window": self.window, "stride": self.stride, "pad_tail": self.pad_tail}
        opening = {"channels": self.channels, "unit": self.unit}
        read = (
            paths
            | "By file" >> beam.Map(lambda path: (same_file_key(path), path))
            | "Once each" >> beam.CombinePerKey(min)  # one spelling of each file
            | "Paths" >> beam.Values()
            | "Read windows"
            >> beam.ParDo(_ReadWindows(embeddings, opening, windowing, self.run)).with_outputs(
                _PLAN, _ERROR, _SKIPPED, main="windows"
            )
        )
        results, dead = (
            read.windows
            | "Encode" >> RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        rows = results | "Rows" >> beam.Map(_row, self.run)
        failures = (
            read[_ERROR],
            dead.failed_inferences | "Failed batches" >> beam.FlatMap(_failed_batch),
        ) | "Failures" >> beam.Flatten()
        collected = (
            {_PLAN: read[_PLAN], "rows": rows, _ERROR: failures}
            | "By recording" >> beam.CoGroupByKey()
            | "Check" >> beam.FlatMap(_collect).with_outputs(_ERROR, main="complete")
        )
        sink = functools.partial(_ParquetSink, json.dumps(self.settings()))
        files = collected.complete | "Write Parquet" >> fileio.WriteToFiles(
            embeddings,
            file_naming=_file_name,
            destination=lambda record: record[0],
            sink=sink,
            temp_directory=StaticValueProvider(str, self.temporary()),
        )
        finished = beam.pvalue.AsDict(
            files | "Finished" >> beam.Map(lambda f: (f.destination, f.file_name))
        )
        written = collected.complete | "Written" >> beam.Map(
            lambda record, names: {
                "recording": record[0],
                "status": "written",
                "windows": len(record[2]),
                "file": FileSystems.join(embeddings, names[record[0]]),
            },
            finished,
        )
        skipped = read[_SKIPPED] | "Skipped" >> beam.Map(
            lambda item: {
                "recording": item[0],
                "status": "skipped",
                "windows": _rows_in(item[1]),
                "file": item[1],
            }
        )
        errors = collected[_ERROR]
        failed = errors | "Failed" >> beam.Map(
            lambda e: {**e, "status": "failed", "windows": None, "file": None}
        )
        _write_jsonl(errors, output, ERRORS, self.temporary())
        report = (written, skipped, failed) | "Report" >> beam.Flatten()
        _write_jsonl(report, output, REPORT, self.temporary())
        return CorpusOutputs(written, skipped, errors)


def _has_wildcard(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def match_recordings(patterns: Sequence[str] | str) -> list[str]:
    """Globs and plain paths -> recording paths, matched now, as the shell matches them.

    A path that exists is taken as it is (``rec[1].edf`` too); a local glob keeps the files
    it matches (:func:`_local_glob`: relative to the working directory, ``**`` for zero or
    more folders, not followed into symlinked folders, names starting with ``.`` matched only
    by a pattern that spells the dot); a glob on another filesystem Beam knows (``gs://``,
    ``s3://``) is matched with ``FileSystems.match`` (``**/`` for zero folders too). A plain
    path that does not exist is kept, so it is reported in ``errors.jsonl``, not dropped.
    Each path once, in order.
    """
    found: dict[str, None] = {}
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        pattern = str(pattern)
        if not _has_wildcard(pattern) or FileSystems.exists(pattern):
            found[pattern] = None
        elif _on_local_disk(pattern):
            found.update(dict.fromkeys(_local_glob(pattern)))
        else:
            variants = [pattern, pattern.replace("/**/", "/")] if "/**/" in pattern else [pattern]
            results = FileSystems.match(variants)
            found.update(dict.fromkeys(sorted(m.path for r in results for m in r.metadata_list)))
    return list(found)


def _local_glob(pattern: str) -> list[str]:
    """The files a local glob matches, sorted, as bash's ``globstar`` matches them: ``**`` (a
    whole path component) is zero or more folders and, as bash 4.3+ does, never enters a
    symlinked folder (a link loop is matched once, not 40 times over); any other component
    is an :mod:`fnmatch` pattern, where a leading ``.`` must be spelled."""
    if "**" not in pattern.split("/"):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if _has_wildcard(part))
    base, rest = "/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else ""), parts[fixed:]
    found = []
    for root, folders, files in os.walk(base or ".", followlinks=False):
        folders.sort()
        inner = os.path.relpath(root, base or ".").split(os.sep)
        inner = [] if inner == ["."] else inner
        found += [os.path.join(base, *inner, name) for name in files
                  if _components_match(rest, [*inner, name])]  # fmt: skip
    return sorted(found)


def _components_match(pattern: list[str], names: list[str]) -> bool:
    """Whether path components ``names`` match ``pattern``'s (``**``: zero or more)."""
    if not pattern:
        return not names
    head, *tail = pattern
    if head == "**":
        deeper = bool(names) and not names[0].startswith(".")
        return _components_match(tail, names) or (deeper and _components_match(pattern, names[1:]))
    if not names or (names[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _components_match(tail, names[1:])


@dataclasses.dataclass(eq=False)
class MatchRecordings(beam.PTransform):
    """Globs (``recordings/**/*.edf``) and plain paths -> recording paths (``PCollection``),
    matched when the pipeline is built, by :func:`match_recordings`."""

    patterns: Sequence[str] | str

    def __post_init__(self) -> None:
        super().__init__()
        if isinstance(self.patterns, str):
            self.patterns = [self.patterns]
        self.patterns = [str(pattern) for pattern in self.patterns]

    def expand(self, begin: Any) -> Any:
        return begin | "Paths" >> beam.Create(match_recordings(self.patterns))


def read_manifest(manifest: str) -> list[str]:
    """The recording paths a manifest lists: one per line, ``#`` comments and blank lines
    skipped, used as written (relative paths are relative to the workers' working directory,
    as on the command line). Read now, through Beam's ``FileSystems`` (``.gz`` too)."""
    manifest = str(manifest)
    if not FileSystems.exists(manifest):
        raise RecordingError(f"manifest={manifest!r}: no such file")
    try:
        with FileSystems.open(manifest) as file:
            text = file.read().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RecordingError(
            f"manifest={manifest!r} is not UTF-8 text (byte {err.start}); expected one "
            "recording path per line"
        ) from None
    except OSError as err:
        raise RecordingError(f"manifest={manifest!r} cannot be read: {_one_line(err)}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclasses.dataclass(eq=False)
class ReadManifest(beam.PTransform):
    """A manifest (see :func:`read_manifest`) -> its recording paths (``PCollection``),
    read when the pipeline is built."""

    manifest: str

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, begin: Any) -> Any:
        return begin | "Paths" >> beam.Create(read_manifest(self.manifest))


def _check_weights(weights: str, classifier: bool, options: dict[str, Any]) -> None:
    """A local weight file is read and checked now, as the workers will load it (a remote
    one when they do): its tensors, its group count, its head."""
    if not FileSystems.exists(weights):
        raise WeightsError(f"weights={weights!r}: no such file")
    if not _on_local_disk(weights):
        return
    from eegdino_tf.weights import describe_weights

    names = ("norm_groups", "num_heads", "check_weights")
    described = describe_weights(weights, **{k: v for k, v in options.items() if k in names})
    if described["norm_groups_unknown"]:
        raise WeightsError(f"{weights}: {described['norm_groups_unknown']}")
    if classifier and not described["head"]:
        raise MissingHeadError(
            f"{weights} holds an encoder without a classification head; encode with the "
            "encoder (without classifier=True)"
        )


def _check_output(output: str) -> bool:
    """Make a local ``output`` folder now, or say in one line why it cannot be; whether it
    was made now."""
    if not _on_local_disk(output):
        return False
    made = not os.path.lexists(output)
    if not made and not os.path.isdir(output):
        raise OutputError(f"output={output!r} is a file, not a folder")
    try:
        os.makedirs(output, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        parents = [os.path.dirname(output)]
        while parents[-1] != os.path.dirname(parents[-1]):
            parents.append(os.path.dirname(parents[-1]))
        blocking = next((p for p in parents if os.path.isfile(p)), None)
        reason = f"{blocking} is a file, not a folder" if blocking else err.strerror or str(err)
        raise OutputError(f"cannot write output={output!r}: {reason}") from None
    return made


def _held(lock: str) -> bool:
    """Whether a live process holds the ``flock`` on ``lock`` (a missing file: no)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the lock this took, if it took one
    return False


def _lock_run(output: str, run: str) -> int | None:
    """Hold this run's lock in a local ``output`` (``.tmp/<run>.lock``, exclusive ``flock``,
    released by the kernel when the process ends, ``kill -9`` too) and remove what runs that
    no longer hold theirs left: their ``.tmp/`` entries, and ``beam-temp-*`` folders (made by
    earlier versions, which wrote ``errors.jsonl`` with ``WriteToText``). The lock's
    descriptor; None on another filesystem, or without ``fcntl`` (Windows): no lock, nothing
    removed."""
    if fcntl is None or not _on_local_disk(output):
        return None

    folder = os.path.join(output, TEMPORARY)
    lock = os.path.join(folder, run + _LOCK)
    while True:  # a cleanup by another run may unlink the file between open and flock
        os.makedirs(folder, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    for entry in os.scandir(folder):
        name = entry.name.removesuffix(_LOCK)
        if name != run and not _held(os.path.join(folder, name + _LOCK)):
            _remove(entry.path)
    for entry in os.scandir(output):
        if entry.name.startswith("beam-temp-") and entry.is_dir(follow_symlinks=False):
            _remove(entry.path)
    return fd


def _remove(path: str) -> None:
    """Remove a file or a folder (local), what is already gone included."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _others_live(output: str, run: str) -> bool:
    """Whether another run holds its lock in a local ``output`` now."""
    folder = os.path.join(output, TEMPORARY)
    if fcntl is None or not (_on_local_disk(output) and os.path.isdir(folder)):
        return False
    locks = [e.name for e in os.scandir(folder) if e.name.endswith(_LOCK)]
    return any(name != run + _LOCK and _held(os.path.join(folder, name)) for name in locks)


def _end_run(transform: EncodeCorpus, lock: int | None, made: bool) -> None:
    """Remove this run's temporaries, the ``settings.json`` it wrote if no row was written
    (and no other run is live there), then its lock, ``.tmp/`` if it is left empty, and the
    output folder if this run ``made`` it and it is left empty."""
    output = str(transform.output)
    folder = transform.temporary()
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
    embeddings = FileSystems.join(output, EMBEDDINGS, "*.parquet")
    if transform.pinned and not _others_live(output, transform.run):
        if not FileSystems.match([embeddings])[0].metadata_list:
            FileSystems.delete([FileSystems.join(output, SETTINGS)])
    if lock is not None:
        _remove(os.path.join(output, TEMPORARY, transform.run + _LOCK))
        os.close(lock)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(output, TEMPORARY))
            if made:
                os.rmdir(output)


class _Progress:
    """Recordings done of ``total`` and windows encoded per second, as one line passed to
    ``write`` at most every ``every`` seconds of ``clock`` (thread-safe). A recording is done
    when all its windows are encoded, or it is skipped or failed before that."""

    def __init__(
        self,
        total: int,
        write: Callable[[str], Any],
        clock: Callable[[], float] = time.monotonic,
        every: float = PROGRESS_EVERY_S,
    ) -> None:
        self.total, self.write, self.clock, self.every = total, write, clock, every
        self.started = self.last = clock()
        self.windows = 0
        self.done: set[str] = set()
        self._planned: dict[str, int] = {}
        self._encoded: dict[str, int] = {}
        self._lock = threading.Lock()

    def planned(self, recording: str, windows: int) -> None:
        with self._lock:
            self._planned[recording] = windows
            self._update(recording)

    def encoded(self, recording: str) -> None:
        with self._lock:
            self.windows += 1
            self._encoded[recording] = self._encoded.get(recording, 0) + 1
            self._update(recording)

    def finished(self, recording: str) -> None:
        with self._lock:
            self.done.add(recording)
            self._report()

    def line(self, done: int, windows: int) -> str:
        rate = windows / max(self.clock() - self.started, 1e-9)
        return f"progress: {done}/{self.total} recordings, {windows} windows, {rate:.1f} windows/s"

    def _update(self, recording: str) -> None:
        if self._encoded.get(recording) == self._planned.get(recording):
            self.done.add(recording)
        self._report()

    def _report(self) -> None:
        if self.clock() - self.last >= self.every:
            self.last = self.clock()
            self.write(self.line(len(self.done), self.windows))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _interrupts() -> Iterator[threading.Event]:
    """Set the event on Ctrl-C (SIGINT) during the block, which still raises
    ``KeyboardInterrupt``: Beam turns it into other errors (``RuntimeError: KeyboardInterrupt
    [while running ...]``), and the event tells them apart. Only where Python's own handler
    is in place, in the main thread."""
    event = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield event
        return

    def interrupt(signum: int, frame: Any) -> None:
        event.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def encode_corpus(
    weights: str,
    output: str,
    *,
    patterns: Sequence[str] | str = (),
    manifest: str | None = None,
    pipeline_options: Any = None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Run :class:`EncodeCorpus` over ``patterns`` (globs or paths, :func:`match_recordings`)
    and/or a ``manifest`` (:func:`read_manifest`).

    ``settings`` are :class:`EncodeCorpus`'s fields (``classifier``, ``channels``,
    ``window``, ..., ``model_options``); ``pipeline_options`` is a Beam ``PipelineOptions``
    or a list of flags (``["--runner=FlinkRunner", ...]``; default: the DirectRunner in this
    process). ``progress=True`` writes ``done/total recordings, windows, windows/s`` to stderr
    at most every :data:`PROGRESS_EVERY_S` seconds (from the workers in this process) and
    once at the end. Returns ``recordings`` (the lines of ``recordings.jsonl``, this run's) and
    ``metrics`` (this pipeline's :data:`COUNTERS`, summed over workers).

    Before the pipeline starts: an error if no recording is given or matched, the weights do
    not load, the manifest is missing or the output cannot be written. A run that fails or is
    interrupted (``KeyboardInterrupt``, raised as it is) leaves no temporary, and no
    ``settings.json`` unless a row was written.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns and manifest is None:
        raise RecordingError(
            "no recordings given: pass patterns=[...] (globs or paths) or manifest=PATH"
        )
    transform = EncodeCorpus(str(weights), str(output), **settings)
    _check_weights(str(weights), transform.classifier, transform.model_options)
    recordings = match_recordings(patterns) if patterns else []
    if manifest is not None:
        recordings += read_manifest(manifest)
    if not recordings:
        given = [f"patterns={list(patterns)!r}"] if patterns else []
        given += [f"manifest={str(manifest)!r}"] if manifest is not None else []
        raise RecordingError(
            f"0 recordings: {' and '.join(given)} match no file (relative paths from {os.getcwd()})"
        )
    made = _check_output(str(output))
    if not isinstance(pipeline_options, PipelineOptions):
        pipeline_options = PipelineOptions(list(pipeline_options or []))
    total = len({same_file_key(path) for path in recordings})
    tracker = _Progress(total, _stderr) if progress else None
    lock = _lock_run(str(output), transform.run)
    try:
        with _interrupts() as interrupted:
            try:
                if tracker:
                    _progress[transform.run] = tracker
                pipeline = beam.Pipeline(options=pipeline_options)
                paths = pipeline | "Recordings" >> beam.Create(recordings)
                _ = paths | "Encode corpus" >> transform
                result = pipeline.run()
                result.wait_until_finish()
            except Exception:
                if interrupted.is_set():  # what Beam made of Ctrl-C
                    raise KeyboardInterrupt from None
                raise
    finally:
        _progress.pop(transform.run, None)
        _end_run(transform, lock, made)
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    metrics = dict.fromkeys(COUNTERS, 0)
    for counter in counters["counters"]:
        name = counter.key.metric.name
        metrics[name] = metrics.get(name, 0) + int(counter.committed or counter.attempted or 0)
    if tracker:
        tracker.write(tracker.line(total, metrics["windows_read"]))
    report = FileSystems.join(str(output), REPORT)
    with FileSystems.open(report, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        recordings = [json.loads(line) for line in file.read().decode().splitlines() if line]
    return {"recordings": recordings, "metrics": metrics}
