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
  (``stage`` is ``open``, ``window``, ``read``, ``inference`` or ``collect``).
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
mixes rows of two settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from eegdino_tf.config import RUNTIMES, SAMPLING_RATE, batch_count
from eegdino_tf.errors import (
    ConfigError,
    EEGDinoError,
    MissingHeadError,
    RecordingError,
    WeightsError,
    require,
)

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
#: Where ``fileio.WriteToFiles`` writes each Parquet file before renaming it into place.
TEMPORARY = ".tmp"
SETTINGS = "settings.json"

_PLAN, _ERROR, _SKIPPED = "plan", "error", "skipped"
_unreported_loads = 0
_loads_lock = threading.Lock()


def _counter(name: str, count: int = 1) -> None:
    beam.metrics.Metrics.counter(NAMESPACE, name).inc(count)


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

    Batches are exactly ``batch_size`` windows (a bundle's last batch is padded to it, so XLA
    compiles one program). ``runtime`` is ``predict``'s: ``"keras"`` or ``"litert"`` (LiteRT
    on the worker's CPU, float32; converted once per loaded model, see
    :mod:`eegdino_tf.litert`). Outputs: ``global_token`` and ``mean_token`` ``[D]`` (and ``tokens``
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
        runtime: str = "keras",
        **options: Any,
    ) -> None:
        batch_count(batch_size)
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
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
        self.options = options

    def load_model(self) -> Any:
        global _unreported_loads
        import eegdino_tf

        loader = eegdino_tf.load_classifier if self.classifier else eegdino_tf.load_encoder
        with local_file(self.weights) as path:
            model = loader(path, **self.options)
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
        out = model.predict(x, batch_size=self.batch_size, verbose=0, runtime=self.runtime)[:real]
        found = summarize(out, self.tokens)
        return [{k: v[i] for k, v in found.items()} for i in range(real)]


class _Failed(EEGDinoError):
    """A recording could not be read: ``stage`` and the original error."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.stage = stage


class _ReadWindows(beam.DoFn):
    """A recording path -> its windows ``((recording, index, start_s), x)``; then its plan
    (tagged ``plan``), or one error (tagged ``error``); or ``skipped`` if it is done."""

    def __init__(self, embeddings: str, opening: dict[str, Any], windowing: dict[str, Any]):
        self.embeddings = embeddings
        self.opening = opening
        self.windowing = windowing

    def process(self, recording: str) -> Iterator[Any]:
        done = FileSystems.join(self.embeddings, output_name(recording))
        if FileSystems.exists(done):
            _counter("recordings_skipped")
            yield beam.pvalue.TaggedOutput(_SKIPPED, (recording, done))
            return
        try:  # errors raised downstream of a yield are not _Failed and stop the pipeline
            for item in self._windows(recording):
                if item[0] == _PLAN:
                    yield beam.pvalue.TaggedOutput(_PLAN, (recording, item[1]))
                else:
                    yield item
        except _Failed as failed:
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
    """A dead letter's exception -> ``"Type: message"``. Beam emits ``(type, repr,
    traceback lines)`` (typed ``ExceptionInfo`` from 2.78); the traceback's last line is the
    message as Python prints it. An exception object is taken as it is."""
    if isinstance(info, BaseException):
        return f"{type(info).__name__}: {info}"
    kind, text, lines = info
    last = "".join(lines).rstrip().splitlines()[-1:] if lines else []
    return last[0] if last else f"{kind.__name__}: {text}"


def _failed_batch(failure: Any) -> Iterator[tuple[str, dict]]:
    """RunInference's dead letter ``(batch of (key, x), exception info)`` -> one error per
    recording in the batch."""
    batch, info = failure
    message = _exception_message(info)
    for recording in sorted({key[0] for key, _ in batch}):
        yield recording, {"recording": recording, "stage": "inference", "error": message}


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


def _write_jsonl(pcoll: Any, output: str, name: str) -> Any:
    """One JSON object per line, sorted, as the single file ``output/name`` (Beam's text
    sink: a temporary file renamed into place when complete)."""
    return (
        pcoll
        | f"All {name}" >> beam.combiners.ToList()
        | f"Sort {name}" >> beam.FlatMap(lambda rows: sorted(rows, key=json.dumps))
        | f"Encode {name}" >> beam.Map(json.dumps)
        | f"Write {name}"
        >> beam.io.WriteToText(FileSystems.join(output, name), shard_name_template="", num_shards=1)
    )


def _keep_settings(output: str, settings: dict[str, Any]) -> None:
    """Write ``settings`` to ``output/settings.json``, or refuse if it holds other ones."""
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
        return
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    partial = f"{path}.partial"
    with FileSystems.create(partial) as file:
        file.write(json.dumps(wanted, indent=1, sort_keys=True).encode())
    FileSystems.rename([partial], [path])


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
    ``batch_size``, ``share_across_processes``, ``model_copies``, ``runtime`` and
    ``model_options`` (``precision``, ``norm_groups``, ...) go to
    :class:`EEGDinoModelHandler`. A recording given twice, or under two spellings of one local
    file (:func:`same_file_key`), is encoded once, under the first of its spellings in sort
    order. See the module's documentation for
    what is written.
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
    runtime: str = "keras"
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        from eegdino_tf.io.channels import check_unit
        from eegdino_tf.io.windows import seconds_to_samples

        check_unit(self.unit)
        seconds_to_samples(self.window, "window", whole_seconds=True)
        if self.stride is not None:
            seconds_to_samples(self.stride, "stride", whole_seconds=False)
        self.handler = EEGDinoModelHandler(
            str(self.weights),
            classifier=self.classifier,
            tokens=self.tokens,
            batch_size=self.batch_size,
            share_across_processes=self.share_across_processes,
            model_copies=self.model_copies,
            runtime=self.runtime,
            **self.model_options,
        )

    def settings(self) -> dict[str, Any]:
        """The options that decide the rows (kept in each Parquet file's metadata)."""
        channels = self.channels.split(",") if isinstance(self.channels, str) else self.channels
        return {
            "weights": str(self.weights),
            "classifier": self.classifier,
            "channels": None if channels is None else [c.strip() for c in channels],
            "unit": self.unit,
            "window": self.window,
            "stride": self.stride,
            "pad_tail": self.pad_tail,
            "tokens": self.tokens,
            **self.model_options,
        }

    def expand(self, paths: Any) -> CorpusOutputs:
        output = str(self.output)
        _keep_settings(output, self.settings())
        embeddings = FileSystems.join(output, EMBEDDINGS)
        windowing = {"window": self.window, "stride": self.stride, "pad_tail": self.pad_tail}
        opening = {"channels": self.channels, "unit": self.unit}
        read = (
            paths
            | "By file" >> beam.Map(lambda path: (same_file_key(path), path))
            | "Once each" >> beam.CombinePerKey(min)  # one spelling of each file
            | "Paths" >> beam.Values()
            | "Read windows"
            >> beam.ParDo(_ReadWindows(embeddings, opening, windowing)).with_outputs(
                _PLAN, _ERROR, _SKIPPED, main="windows"
            )
        )
        results, dead = (
            read.windows
            | "Encode" >> RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        rows = results | "Rows" >> beam.Map(
            lambda kv: (
                kv[0][0],
                {"window": kv[0][1], "start_s": kv[0][2], "outputs": kv[1]},
            )
        )
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
            temp_directory=StaticValueProvider(str, FileSystems.join(output, TEMPORARY)),
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
        _write_jsonl(errors, output, ERRORS)
        _write_jsonl((written, skipped, failed) | "Report" >> beam.Flatten(), output, REPORT)
        return CorpusOutputs(written, skipped, errors)


def _has_wildcard(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


@dataclasses.dataclass(eq=False)
class MatchRecordings(beam.PTransform):
    """Globs (``recordings/**/*.edf``) and plain paths -> recording paths (``PCollection``).

    Globs are matched with ``fileio.MatchAll`` on any filesystem Beam knows (``**/`` matches
    zero or more folders, as in the shell, where Beam's own ``**`` needs one); plain paths are
    passed on as they are, so a missing one is reported in ``errors.jsonl``, not dropped.
    """

    patterns: Sequence[str] | str

    def __post_init__(self) -> None:
        super().__init__()
        if isinstance(self.patterns, str):
            self.patterns = [self.patterns]
        self.patterns = [str(pattern) for pattern in self.patterns]

    def expand(self, begin: Any) -> Any:
        globs = [p for p in self.patterns if _has_wildcard(p)]
        globs += [p.replace("/**/", "/") for p in globs if "/**/" in p]  # zero folders too
        plain = [p for p in self.patterns if not _has_wildcard(p)]
        matched = (
            begin
            | "Globs" >> beam.Create(globs)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
        )
        given = begin | "Plain paths" >> beam.Create(plain)
        return (matched, given) | "All paths" >> beam.Flatten()


@dataclasses.dataclass(eq=False)
class ReadManifest(beam.PTransform):
    """A text file with one recording path per line (``#`` comments and blank lines skipped)
    -> recording paths, used as written (relative paths are relative to the workers' working
    directory, as on the command line)."""

    manifest: str

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, begin: Any) -> Any:
        return (
            begin
            | "Read manifest" >> beam.io.ReadFromText(str(self.manifest))
            | "Strip" >> beam.Map(str.strip)
            | "Paths only" >> beam.Filter(lambda line: bool(line) and not line.startswith("#"))
        )


def _check_weights(weights: str, classifier: bool, options: dict[str, Any]) -> None:
    """A local weight file is read and checked now (a remote one when the workers load it)."""
    if not FileSystems.exists(weights):
        raise WeightsError(f"weights={weights!r}: no such file")
    if not _on_local_disk(weights):
        return
    from eegdino_tf.weights import describe_weights

    names = ("norm_groups", "num_heads", "check_weights")
    overrides = {k: v for k, v in options.items() if k in names}
    if classifier and not describe_weights(weights, **overrides)["head"]:
        raise MissingHeadError(
            f"{weights} holds an encoder without a classification head; encode with the "
            "encoder (without classifier=True)"
        )


def _remove_empty_folders(folder: str) -> None:
    """Remove ``folder`` (local) and the folders under it that hold no file; one that holds a
    file (another run's temporary, say) stays, with the folders above it."""
    if not _on_local_disk(folder):
        return  # object stores have no empty folders
    for parent, _, _ in os.walk(folder, topdown=False):  # the deepest first
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def encode_corpus(
    weights: str,
    output: str,
    *,
    patterns: Sequence[str] | str = (),
    manifest: str | None = None,
    pipeline_options: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run :class:`EncodeCorpus` over ``patterns`` (globs or paths) and/or a ``manifest``.

    ``settings`` are :class:`EncodeCorpus`'s fields (``classifier``, ``channels``,
    ``window``, ..., ``model_options``); ``pipeline_options`` is a Beam ``PipelineOptions``
    or a list of flags (``["--runner=FlinkRunner", ...]``; default: the DirectRunner in this
    process). Returns ``recordings`` (the lines of ``recordings.jsonl``, this run's) and
    ``metrics`` (this pipeline's :data:`COUNTERS`, summed over workers).
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
    if not isinstance(pipeline_options, PipelineOptions):
        pipeline_options = PipelineOptions(list(pipeline_options or []))
    pipeline = beam.Pipeline(options=pipeline_options)
    sources = []
    if patterns:
        sources.append(pipeline | "Match recordings" >> MatchRecordings(list(patterns)))
    if manifest is not None:
        sources.append(pipeline | "Manifest" >> ReadManifest(str(manifest)))
    _ = sources | "Recordings" >> beam.Flatten() | "Encode corpus" >> transform
    result = pipeline.run()
    result.wait_until_finish()
    _remove_empty_folders(FileSystems.join(str(output), TEMPORARY))
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    metrics = dict.fromkeys(COUNTERS, 0)
    for counter in counters["counters"]:
        name = counter.key.metric.name
        metrics[name] = metrics.get(name, 0) + int(counter.committed or counter.attempted or 0)
    report = FileSystems.join(str(output), REPORT)
    with FileSystems.open(report, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        recordings = [json.loads(line) for line in file.read().decode().splitlines() if line]
    return {"recordings": recordings, "metrics": metrics}
