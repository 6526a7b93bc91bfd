"""Export an EEG-DINO model for serving: TF SavedModel, TFLite (LiteRT) and ONNX.

Every export checks itself before it reports success: the written artifact is loaded in the
runtime it is meant for (``tf.saved_model.load``, the ``ai_edge_litert`` interpreter,
``onnxruntime``), run on a seeded EEG-like probe, and compared with the Keras model. An
artifact outside its tolerance is an :class:`~eegdino_tf.errors.ExportError` and is not kept:
every artifact is written to a temporary path and renamed into place only after the check
(:func:`eegdino_tf.files.atomic_output`).

Every artifact takes one input, ``eeg``: raw microvolts ``[batch, C, T]`` (the model scales
by 0.01 itself). Outputs: ``tokens`` ``[batch, 1 + C*T/200, D]`` for an encoder (the
SavedModel adds ``global_token`` and ``mean_token``), ``logits`` ``[batch, K]`` for a
classifier (the SavedModel adds ``probabilities``).

``eegdino-tf export {saved-model,tflite,onnx} WEIGHTS OUTPUT`` drives it from the shell
(:mod:`eegdino_tf.cli.export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eegdino_tf import calibration as C
from eegdino_tf import hardware
from eegdino_tf import tracing as T
from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE
from eegdino_tf.errors import ExportError, require
from eegdino_tf.files import atomic_output
from eegdino_tf.signals import probe_eeg

if TYPE_CHECKING:  # TensorFlow loads on first use, so ``eegdino-tf --help`` stays fast
    import keras
    import tensorflow as tf

FORMATS = ("saved-model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic-int8", "int8")
#: Quantizations refused, with the reason (measured with ai-edge-litert 2.3.0 / TF 2.21).
REFUSED_QUANTIZATIONS = {
    "int16": "int16 activations (int8 weights) do not run: the converter has no 16x8 SQUARE "
    "and SQRT (the patch spectrum), and with those left float LiteRT 2.3.0 fails at run time "
    "in SQUARED_DIFFERENCE (the norms' variance: 'SquaredDifference only supports FLOAT32 and "
    "INT32'); use int8 or dynamic-int8",
}
#: Self-check limits on the NRMSE against Keras (``None``: measured and reported only).
NRMSE_LIMITS = {"none": 1e-5, "float16": 5e-3, "dynamic-int8": None, "int8": None}
#: Dynamic-range int8 (on the probe) and full-integer int8 (on every held-out calibration
#: window, with and without an artifact) must keep the global token (logits for a classifier)
#: pointing the same way as float32 Keras: cosine similarity per example at least this.
MIN_INT8_COSINE = 0.99
#: The shapes ``(channels, samples)`` an any-shape artifact is checked on (the first is timed).
ANY_SHAPE_PROBES = ((19, 2000), (4, 800), (8, 1000), (1, 200))
#: Batch of the self-check probe for artifacts with a dynamic batch (not 1, to prove it).
PROBE_BATCH = 2
MIN_OPSET = 17
#: The SavedModel's narrow signatures: their outputs, where ``serving_default`` has them all.
NARROW_SIGNATURES = {
    "embed": ("global_token", "mean_token"),
    "classify": ("logits", "probabilities"),
}
#: Timed batch-1 calls of the written artifact (the report gives their median).
LATENCY_CALLS = 5

Array = np.ndarray
Runner = Callable[[Array], dict[str, Array]]


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how its artifact compared with Keras.

    Attributes:
        format: ``"saved-model"``, ``"tflite"`` or ``"onnx"``.
        path: the artifact (for a SavedModel, the ``OUTPUT/<version>`` folder).
        runtimes: the runtimes the self-check ran it in, with their versions; the latency
            is measured in the first.
        quantize: ``"none"``, ``"float16"`` or ``"dynamic-int8"`` (TFLite only).
        input_shape: shape of the ``eeg`` input (``None``: dynamic batch).
        outputs: output names.
        size_bytes: size on disk (all files, for a folder).
        nrmse: worst normalized RMS error of any output against Keras on the probe.
        max_abs: worst absolute difference of any output against Keras.
        nrmse_limit: the NRMSE the check required (``None``: reported only).
        cosine: smallest per-example cosine similarity of the global token (logits for a
            classifier) with float32 Keras; measured for quantized artifacts, else ``None``.
        latency_ms: median wall time of one call on ``latency_batch`` examples (after a
            warm-up call).
        latency_batch: batch size of the timed call.
        probe_shape: shape of the probe the self-check ran.
        int8: what a full-integer int8 export measured (:class:`Int8Check`), else ``None``.
    """

    format: str
    path: Path
    runtimes: tuple[str, ...]
    quantize: str
    input_shape: tuple[int | None, int, int]
    outputs: tuple[str, ...]
    size_bytes: int
    nrmse: float
    max_abs: float
    nrmse_limit: float | None
    cosine: float | None
    latency_ms: float
    latency_batch: int
    probe_shape: tuple[int, int, int]
    int8: Int8Check | None = None

    def summary(self) -> str:
        """Human-readable lines: artifact, self-check, latency (and an int8 export's numbers)."""
        shape = ", ".join(
            str(d) if d is not None else "batch" if i == 0 else "any"
            for i, d in enumerate(self.input_shape)
        )
        weights = {"none": "", "int8": ", int8 weights and activations"}.get(
            self.quantize, f", {self.quantize} weights"
        )
        limit = "reported only" if self.nrmse_limit is None else f"limit {self.nrmse_limit:.0e}"
        cosine = "" if self.cosine is None else f", cosine vs float32 {self.cosine:.5f}"
        return "\n".join(
            [
                f"wrote {self.path} ({self.format}{weights}, {_megabytes(self.size_bytes)}): "
                f"eeg [{shape}] -> {', '.join(self.outputs)}",
                f"  self-check in {' and '.join(self.runtimes)} against Keras on a seeded probe "
                f"{list(self.probe_shape)}: NRMSE {self.nrmse:.2e} ({limit}), "
                f"max abs {self.max_abs:.2e}{cosine}",
                f"  one call, batch {self.latency_batch}: {self.latency_ms:.1f} ms",
                *([] if self.int8 is None else self.int8.lines()),
            ]
        )


@dataclasses.dataclass
class Int8Check:
    """What a full-integer int8 export measured on its flatbuffer and its held-out windows.

    Attributes:
        io: ``"float32"`` (the file quantizes its input itself) or ``"int8"`` (``int8_io``).
        int8_ops: ops with int8 tensors only (int32 biases and shapes allowed).
        ops: all ops of the graph.
        input_range_uv: the microvolts the input's int8 step covers; beyond them it clips.
        input_scale, input_zero_point: the input's int8 quantization (uV per step, offset).
        output_scale, output_zero_point: the output's (int8 io), else ``None``.
        calibration_windows: windows calibrated on (besides their copies with a blink).
        held_out_windows: windows checked (each also with a blink).
        recordings: the recordings the windows come from.
        cosine_min, cosine_median: per held-out window cosine of the global token (logits)
            with float32 Keras.
        artifact_cosine_min, artifact_cosine_median: the same with a blink added.
        worst: the window of the smallest cosine.
    """

    io: str
    int8_ops: int
    ops: int
    input_range_uv: tuple[float, float]
    input_scale: float
    input_zero_point: int
    output_scale: float | None
    output_zero_point: int | None
    calibration_windows: int
    held_out_windows: int
    recordings: int
    cosine_min: float
    cosine_median: float
    artifact_cosine_min: float
    artifact_cosine_median: float
    worst: str

    @property
    def int8_share(self) -> float:
        return self.int8_ops / self.ops

    def lines(self) -> list[str]:
        low, high = self.input_range_uv
        return [
            f"  int8: {self.int8_ops} of {self.ops} ops ({self.int8_share:.1%}), {self.io} io; "
            f"the input clips outside [{low:.1f}, {high:.1f}] uV (step {self.input_scale:.3f} uV)",
            f"  held out: {self.held_out_windows} window(s) of {self.recordings} recording(s) "
            f"(calibrated on {self.calibration_windows}): cosine vs float32 min "
            f"{self.cosine_min:.4f}, median {self.cosine_median:.4f}; with a "
            f"{C.BLINK_UV:g} uV blink min {self.artifact_cosine_min:.4f}, median "
            f"{self.artifact_cosine_median:.4f} (target {MIN_INT8_COSINE})",
        ]

    def record(self) -> dict[str, Any]:
        """The numbers for the export record (:func:`eegdino_tf.artifact.export_record`)."""
        return {
            **dataclasses.asdict(self),
            "input_range_uv": list(self.input_range_uv),
            "int8_share": self.int8_share,
            "artifact": f"a {C.BLINK_UV:g} uV, {C.BLINK_S:g} s half-sine blink on every channel",
            "target_cosine": MIN_INT8_COSINE,
        }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def export_saved_model(
    model: keras.Model,
    output_dir: str | os.PathLike,
    *,
    channels: int = 19,
    samples: int | None = None,
    sfreq: float = SAMPLING_RATE,
    window: float | None = None,
    version: int = 1,
    force: bool = False,
    latency_calls: int = LATENCY_CALLS,
    warmup: str | Sequence[int] = (),
    serving_config: bool = False,
    model_name: str | None = None,
    base_path: str | None = None,
    weights_file: str | os.PathLike | None = None,
    channel_names: Sequence[str] | None = None,
) -> ExportReport:
    """Write a TF Serving SavedModel to ``output_dir/<version>/``.

    Signatures, each taking ``eeg`` float32 ``[batch, channels, samples]`` (dynamic batch):
    ``serving_default`` gives ``tokens``, ``global_token`` (token 0) and ``mean_token`` (mean
    of the patch tokens) for an encoder, ``logits`` and ``probabilities`` for a classifier; a
    Keras model of your own (say ``Input -> encoder -> Dense``) keeps its output names.
    ``embed`` (an encoder) gives ``global_token`` and ``mean_token`` only (8 bytes per
    feature and window on the wire instead of the whole token grid); ``classify`` (a
    classifier) gives ``logits`` and ``probabilities``. Each signature is self-checked.

    ``assets.extra/eegdino.json`` records what the bundle expects (:mod:`eegdino_tf.artifact`;
    ``weights_file`` adds its SHA-256, ``channel_names`` the montage in slot order).
    ``warmup`` (batch sizes, ``"1,8"``) writes TF Serving's warm-up records for every
    signature; ``serving_config`` times the exported model and writes ``models.config`` and
    ``batching_parameters.txt`` beside the version folders (:mod:`eegdino_tf.serving`), for a
    model named ``model_name`` (default: the folder's name) at ``base_path`` (default: the
    folder's absolute path; ``/models/NAME`` in TF Serving's Docker image).
    """
    import tensorflow as tf

    from eegdino_tf import artifact, serving

    artifact.check_channel_names(channel_names, channels)
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    sizes = serving.parse_batch_sizes(warmup) if warmup else []
    if sizes:
        require("tensorflow_serving.apis.prediction_log_pb2", "serving")
    output_dir = Path(output_dir)
    if serving_config:  # checked before anything is written
        name = model_name or output_dir.resolve().name
        config_text = serving.models_config_text(name, base_path or str(output_dir.resolve()))
    model = T.for_format(model, "saved-model")
    model, spec = at_rate(model, None, channels, samples, sfreq, window)
    samples = spec.shape[-1]
    path = output_dir / str(version)
    with _removed_if_left_empty(output_dir), atomic_output(path, force=force) as tmp:
        module = T.variables_module(model)  # TF Serving's loader finds only tf.Variables
        serve = T.trace(model, spec, form=T.GRAPH_FORMS["saved-model"], extended=True)
        signatures = {"serving_default": serve, **_narrow_signatures(serve, spec)}
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        loaded = tf.saved_model.load(str(tmp))
        runtimes = {
            f"tf.saved_model.load (TF {tf.__version__}) {signature}": _signature_runner(
                loaded.signatures[signature]
            )
            for signature in signatures
        }
        with _session_runner(tmp) as run_session:
            runtimes["a TF1 session (as TF Serving loads it)"] = run_session
            report = _self_check(
                "saved-model", model, runtimes, tmp, path, spec, "none", latency_calls
            )
        signature_outputs = {k: sorted(v.structured_outputs) for k, v in signatures.items()}
        record = _record(model, report, "none", signature_outputs, weights_file, channel_names)
        (tmp / artifact.SAVED_MODEL_RECORD).parent.mkdir(exist_ok=True)
        (tmp / artifact.SAVED_MODEL_RECORD).write_bytes(artifact.encode_record(record))
        probe = functools.partial(probe_eeg, channels=channels, samples=samples)
        if sizes:
            serving.write_warmup(tmp, serving.warmup_requests(list(signatures), sizes, probe))
        if serving_config:
            timings = serving.time_batches(runtimes[next(iter(runtimes))], probe)
            params = serving.batching_parameters(timings, hardware.cpu_threads())
        report.size_bytes = _size(tmp)
    if serving_config:
        for file, text in (
            (serving.MODELS_CONFIG, config_text),
            (serving.BATCHING_FILE, serving.batching_text(params)),
        ):
            with atomic_output(output_dir / file, force=True) as out:
                out.write_text(text)
    return report


def _narrow_signatures(serve: Any, spec: tf.TensorSpec) -> dict[str, Any]:
    """``embed`` (the two summary tokens of an encoder) or ``classify`` (a classifier's logits
    and probabilities) over ``serve``'s outputs; none for a model of the user's own."""
    import tensorflow as tf

    outputs = set(serve.structured_outputs)
    for name, keep in NARROW_SIGNATURES.items():
        if set(keep) <= outputs:
            narrow = tf.function(
                lambda eeg, keep=keep: {k: serve(eeg=eeg)[k] for k in keep},
                input_signature=[spec],
            )
            return {name: narrow.get_concrete_function()}
    return {}


def _signature_runner(signature: Any) -> Runner:
    import tensorflow as tf

    return lambda eeg: {k: v.numpy() for k, v in signature(eeg=tf.constant(eeg)).items()}


def _record(
    model: keras.Model,
    report: ExportReport,
    quantize: str,
    signatures: dict[str, Sequence[str]] | None,
    weights_file: str | os.PathLike | None,
    channel_names: Sequence[str] | None,
) -> dict[str, Any]:
    """The export record (:func:`eegdino_tf.artifact.export_record`) of a checked artifact."""
    from eegdino_tf import artifact

    self_check = {"nrmse": report.nrmse, "max_abs": report.max_abs, "cosine": report.cosine}
    int8 = None if report.int8 is None else report.int8.record()
    if int8 is not None:
        self_check.update(
            held_out_cosine_min=int8["cosine_min"],
            held_out_cosine_median=int8["cosine_median"],
            artifact_cosine_min=int8["artifact_cosine_min"],
            artifact_cosine_median=int8["artifact_cosine_median"],
        )
    return artifact.export_record(
        model,
        fmt=report.format,
        input_shape=report.input_shape,
        outputs=report.outputs,
        signatures=signatures,
        quantization=quantize,
        self_check=self_check,
        channel_names=channel_names,
        weights_file=weights_file,
        int8=int8,
    )


def _write_unchanged(
    path: Path, data: bytes, run: Runner, runner: Callable[[bytes], Runner], probe: Array
) -> None:
    """Replace ``path``'s bytes with ``data`` (the same graph plus its record) after checking
    that ``data`` gives bit-identical outputs on ``probe``."""
    before, after = run(probe), runner(data)(probe)
    if set(before) != set(after) or any(not np.array_equal(before[k], after[k]) for k in before):
        raise ExportError(f"{path.name}: adding the export record changed the outputs")
    path.write_bytes(data)


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Remove ``folder`` if the block created it and failed with it empty."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@contextlib.contextmanager
def _session_runner(saved_model: Path) -> Iterator[Runner]:
    """Run a SavedModel's ``serving_default`` the way TF Serving and ``saved_model_cli`` load
    it: a TF1 session restoring the variables by name."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    session = tf.compat.v1.Session(graph=tf.Graph())
    try:
        with session.graph.as_default(), deprecation.silence():
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(saved_model))
        signature = meta.signature_def["serving_default"]
        feed = signature.inputs["eeg"].name
        fetches = {name: info.name for name, info in signature.outputs.items()}
        yield lambda eeg: session.run(fetches, {feed: eeg})
    finally:
        session.close()


def export_tflite(
    model: keras.Model,
    output_path: str | os.PathLike,
    *,
    channels: int = 19,
    samples: int | None = None,
    sfreq: float = SAMPLING_RATE,
    window: float | None = None,
    batch: int = 1,
    quantize: str = "none",
    calibration: str | os.PathLike | np.ndarray | None = None,
    int8_io: bool = False,
    force: bool = False,
    latency_calls: int = LATENCY_CALLS,
    weights_file: str | os.PathLike | None = None,
    channel_names: Sequence[str] | None = None,
    any_shape: bool = False,
) -> ExportReport:
    """Write a TFLite (LiteRT) flatbuffer of builtin ops only, for a fixed input shape.

    Signature ``serving_default``: input ``eeg`` float32 ``[batch, channels, samples]``;
    output ``tokens`` (encoder) or ``logits`` (classifier). ``quantize``: ``"none"``
    (float32), ``"float16"`` (float16 weights), ``"dynamic-int8"`` (int8 weights,
    dynamic-range activations; no calibration data) or ``"int8"`` (full-integer: int8 weights
    and activations, calibrated on ``calibration``: a glob pattern of recordings, a manifest,
    or windows ``[N, C, T]`` at ``sfreq``, see :func:`eegdino_tf.calibration.calibration_set`;
    refused unless every held-out window, with and without a blink, keeps cosine
    :data:`MIN_INT8_COSINE` to float32 Keras; ``int8_io``: int8 input and outputs, the
    scale and zero point in the record). ``"int16"`` is refused (:data:`REFUSED_QUANTIZATIONS`).
    The NaN/Inf input check is left out: a non-finite sample gives NaN outputs (an int8 input
    cannot hold one). The file carries the export record (:mod:`eegdino_tf.artifact`) as a
    metadata buffer. ``any_shape`` makes one file for every montage and window at 200 Hz: input
    ``[batch, C, T]`` with any ``C`` in 1..19 (channel slots 0..C-1) and ``T`` a multiple of
    200 (checked against Keras on :data:`ANY_SHAPE_PROBES`; about 1.03x the size of one shape).
    """
    from eegdino_tf import artifact
    from eegdino_tf.io.channels import STANDARD_CHANNELS

    artifact.check_channel_names(channel_names, channels)
    litert = require("ai_edge_litert.interpreter", "export")
    if quantize in REFUSED_QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is refused: {REFUSED_QUANTIZATIONS[quantize]}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantize!r}; choose one of {QUANTIZATIONS}")
    if quantize == "int8" and calibration is None:
        raise ExportError(
            "quantize='int8' needs calibration: a glob pattern or a manifest of recordings, or "
            "windows [N, C, T]"
        )
    if quantize != "int8" and (calibration is not None or int8_io):
        raise ExportError(
            f"calibration and int8_io apply to quantize='int8' only, not quantize={quantize!r}"
        )
    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    model, spec = at_rate(T.for_format(model, "tflite"), batch, channels, samples, sfreq, window)
    if any_shape:
        if float(sfreq) != SAMPLING_RATE or samples is not None or window is not None:
            raise ExportError(
                "any_shape=True takes EEG at 200 Hz of any length: give no sfreq=, window= or "
                "samples="
            )
        if quantize == "int8":
            raise ExportError("any_shape=True cannot be int8: calibration needs one shape")
        spec = T.input_spec(model, batch, None, None)
    windows = None
    if quantize == "int8":
        names = channel_names or STANDARD_CHANNELS[:channels]
        windows = C.calibration_set(
            calibration, sfreq=float(sfreq), samples=spec.shape[-1], channels=names
        )
    with atomic_output(output_path, force=force) as tmp:
        representative = None if windows is None else windows.representative(float(sfreq))
        tmp.write_bytes(T.tflite_flatbuffer(model, spec, quantize, representative, int8_io))

        def runner(data: bytes) -> Runner:
            interpreter = litert.Interpreter(model_content=data, num_threads=hardware.cpu_threads())
            return T.float_runner(interpreter.get_signature_runner("serving_default"))

        run = runner(tmp.read_bytes())
        runtime = f"ai_edge_litert {importlib.metadata.version('ai-edge-litert')} (XNNPACK)"
        report = _self_check(
            "tflite", model, {runtime: run}, tmp, Path(output_path), spec, quantize, latency_calls
        )
        if windows is not None:
            report.int8 = _int8_check(model, run, batch, windows, tmp.read_bytes(), float(sfreq))
        record = _record(model, report, quantize, None, weights_file, channel_names)
        data = artifact.tflite_with_record(tmp.read_bytes(), record)
        _write_unchanged(tmp, data, run, runner, probe_eeg(*report.probe_shape))
        report.size_bytes = _size(tmp)
        return report


def _int8_check(
    model: Any,
    run: Runner,
    batch: int,
    windows: C.CalibrationSet,
    flatbuffer: bytes,
    sfreq: float,
) -> Int8Check:
    """Measure a full-integer int8 flatbuffer (op share, input range) and its cosine to float32
    Keras on every held-out window, as it is and with a blink; an :class:`ExportError` naming
    the worst window when one is under :data:`MIN_INT8_COSINE`."""
    int8_ops, ops = T.int8_op_counts(flatbuffer)
    low, high, scale, zero = T.int8_input_range(flatbuffer)
    output = T.int8_output_quantization(flatbuffer)
    held = windows.held_out
    keras_outputs = functools.partial(T.named_outputs, model)
    clean, blink = (
        T.cosines(_in_batches(run, x, batch), _in_batches(keras_outputs, x, 8))
        for x in (held, C.with_blink(held, sfreq))
    )
    cosines = np.concatenate([clean, blink])
    worst = windows.held_out_where[int(np.argmin(cosines)) % len(held)]
    if np.argmin(cosines) >= len(held):
        worst += f" with a {C.BLINK_UV:g} uV blink"
    check = Int8Check(
        io="int8" if output is not None else "float32",
        int8_ops=int8_ops,
        ops=ops,
        input_range_uv=(low, high),
        input_scale=scale,
        input_zero_point=zero,
        output_scale=None if output is None else output[0],
        output_zero_point=None if output is None else output[1],
        calibration_windows=len(windows.calibration),
        held_out_windows=len(held),
        recordings=windows.recordings,
        cosine_min=float(np.min(clean)),
        cosine_median=float(np.median(clean)),
        artifact_cosine_min=float(np.min(blink)),
        artifact_cosine_median=float(np.median(blink)),
        worst=worst,
    )
    if not np.min(cosines) >= MIN_INT8_COSINE:
        raise ExportError(
            f"int8 check failed: cosine to float32 Keras {np.min(cosines):.4f} < "
            f"{MIN_INT8_COSINE} on held-out window {worst} (input clips outside "
            f"[{low:.1f}, {high:.1f}] uV); "
            "nothing was written: calibrate on recordings like the ones the file will see"
        )
    return check


def _in_batches(run: Callable[[Array], Any], x: Array, batch: int) -> dict[str, Array]:
    """``run`` over ``x`` ``[N, ...]`` ``batch`` examples at a time (the last part padded with
    copies of its last example), outputs concatenated and cut to ``N``."""
    from eegdino_tf.runtime import padded

    parts: dict[str, list[Array]] = {}
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        for name, value in run(padded(part, batch)).items():
            parts.setdefault(name, []).append(np.asarray(value)[: len(part)])
    return {name: np.concatenate(values) for name, values in parts.items()}


def export_onnx(
    model: keras.Model,
    output_path: str | os.PathLike,
    *,
    channels: int = 19,
    samples: int | None = None,
    sfreq: float = SAMPLING_RATE,
    window: float | None = None,
    opset: int = MIN_OPSET,
    force: bool = False,
    latency_calls: int = LATENCY_CALLS,
    weights_file: str | os.PathLike | None = None,
    channel_names: Sequence[str] | None = None,
) -> ExportReport:
    """Write an ONNX model (through tf2onnx) with input ``eeg`` ``[batch, channels, samples]``
    (dynamic batch) and output ``tokens`` (encoder) or ``logits`` (classifier).

    GELU is traced as ``Erf``; the NaN/Inf input check is left out. The file carries the
    export record (:mod:`eegdino_tf.artifact`) in its ``metadata_props``.
    """
    from eegdino_tf import artifact

    artifact.check_channel_names(channel_names, channels)
    tf2onnx = require("tf2onnx", "export")
    ort = require("onnxruntime", "export")
    if opset < MIN_OPSET:
        raise ExportError(f"opset must be >= {MIN_OPSET}, got {opset}")
    model, spec = at_rate(T.for_format(model, "onnx"), None, channels, samples, sfreq, window)
    with atomic_output(output_path, force=force) as tmp:
        traced = T.trace(model, spec, form=T.GRAPH_FORMS["onnx"], non_finite_out=True)
        serve = T.frozen(traced, spec)
        with T.converter_errors("ONNX"), _quiet("tf2onnx"):
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"  # tf2onnx says "unk__N"
        tmp.write_bytes(proto.SerializeToString())

        def runner(data: bytes) -> Runner:
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            return lambda eeg: dict(zip(names, session.run(names, {"eeg": eeg}), strict=True))

        run = runner(tmp.read_bytes())
        runtime = f"onnxruntime {ort.__version__} (CPU)"
        report = _self_check(
            "onnx", model, {runtime: run}, tmp, Path(output_path), spec, "none", latency_calls
        )
        record = _record(model, report, "none", None, weights_file, channel_names)
        proto.metadata_props.add(key=artifact.RECORD_NAME, value=artifact.encode_record(record))
        data = proto.SerializeToString()
        _write_unchanged(tmp, data, run, runner, probe_eeg(*report.probe_shape))
        report.size_bytes = _size(tmp)
        return report


class Resampled:
    """``model`` behind :class:`~eegdino_tf.resampling.PolyphaseResample`: ``eeg`` microvolts
    at ``sfreq`` ``[B, C, n]`` -> the model's outputs on that window resampled to 200 Hz. It is
    what an export at a headset's rate traces; everything else is the model's."""

    def __init__(self, model: Any, sfreq: float) -> None:
        from eegdino_tf.resampling import PolyphaseResample

        self.wrapped, self.sfreq = model, float(sfreq)
        self.front = PolyphaseResample(sfreq)

    def __call__(self, eeg: Any, training: bool = False) -> Any:
        return self.wrapped(self.front(eeg), training=training)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def at_rate(
    model: Any,
    batch: int | None,
    channels: int,
    samples: int | None,
    sfreq: float,
    window: float | None,
) -> tuple[Any, tf.TensorSpec]:
    """The model an export traces and its ``eeg`` spec ``[batch, channels, n]`` at ``sfreq``:
    ``n`` is ``samples``, or ``round(sfreq * window)``, or 10 s; at 200 Hz the model itself,
    at another rate :class:`Resampled` (the window must resample to whole 1 s patches)."""
    import tensorflow as tf

    from eegdino_tf.resampling import checked_factors, resampled_length

    if samples is not None and window is not None:
        raise ExportError("give samples or window, not both")
    if window is not None and not (isinstance(window, (int, float)) and window > 0):
        raise ExportError(f"window must be a positive number of seconds, got {window!r}")
    n = samples if samples is not None else round(sfreq * (10 if window is None else window))
    if float(sfreq) == SAMPLING_RATE:
        return model, T.input_spec(model, batch, channels, n)
    checked_factors(sfreq)
    at_200 = resampled_length(n, sfreq)
    if at_200 % PATCH_SIZE and getattr(model, "partial_patch", "error") == "error":
        raise ExportError(
            f"a window of {n} samples at {sfreq:g} Hz resamples to {at_200} samples at 200 Hz, "
            "not whole 1 s patches: use a whole number of seconds (window=4, say)"
        )
    T.input_spec(model, batch, channels, at_200)  # checks the 200 Hz shape
    return Resampled(model, sfreq), tf.TensorSpec([batch, channels, n], tf.float32, name="eeg")


def export_model(
    fmt: str, model: keras.Model, output: str | os.PathLike, **options: Any
) -> ExportReport:
    """Dispatch to :func:`export_saved_model`, :func:`export_tflite` or :func:`export_onnx`."""
    exporters = {"saved-model": export_saved_model, "tflite": export_tflite, "onnx": export_onnx}
    if fmt not in exporters:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    try:
        return exporters[fmt](model, output, **options)
    finally:  # the converters' gigabytes, freed, back to the system
        hardware.release_freed_memory()


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------------------------


def _self_check(
    fmt: str,
    model: keras.Model,
    runtimes: dict[str, Runner],
    written: Path,
    final: Path,
    spec: tf.TensorSpec,
    quantize: str,
    latency_calls: int,
) -> ExportReport:
    """Run the written artifact in each runtime on a probe, compare with Keras, time it in the
    first; raise :class:`ExportError` if any result is outside the tolerance (the caller then
    keeps nothing)."""
    batch, channels, samples = spec.shape.as_list()
    shapes = ANY_SHAPE_PROBES if channels is None else ((channels, samples),)
    limit = NRMSE_LIMITS[quantize]
    nrmse = max_abs = 0.0
    cosine = None
    for shape in reversed(shapes):  # the first shape's probe stays: the one reported and timed
        probe = probe_eeg(batch or PROBE_BATCH, *shape)
        reference = {k: np.asarray(v) for k, v in T.named_outputs(model, probe, True).items()}
        for runtime, run in runtimes.items():
            got = run(probe)
            if not got or not set(got) <= set(reference):
                raise ExportError(
                    f"{fmt} artifact in {runtime} has unexpected outputs {sorted(got)}"
                )
            errors = {name: _errors(got[name], reference[name]) for name in got}
            worst = max(errors, key=lambda name: _nan_high(errors[name][0]))
            nrmse = max(nrmse, _nan_high(errors[worst][0]))
            max_abs = max(max_abs, _nan_high(max(e[1] for e in errors.values())))
            problems = []
            if limit is not None and not nrmse <= limit:
                problems.append(f"NRMSE of {worst!r} {nrmse:.2e} > {limit:.0e}")
            if quantize != "none":
                cosine = min(cosine or 1.0, T.min_cosine(got, reference))
                if quantize == "dynamic-int8" and not cosine >= MIN_INT8_COSINE:
                    problems.append(f"cosine similarity {cosine:.4f} < {MIN_INT8_COSINE}")
            if problems:
                raise ExportError(
                    f"{fmt} self-check failed in {runtime} on {list(probe.shape)}: "
                    f"{'; '.join(problems)} against Keras; nothing was written"
                )
    run = next(iter(runtimes.values()))
    timed = probe[: batch or 1]
    return ExportReport(
        format=fmt,
        path=final,
        runtimes=tuple(runtimes),
        quantize=quantize,
        input_shape=(batch, channels, samples),
        outputs=tuple(name for name in reference if name in got),
        size_bytes=_size(written),
        nrmse=nrmse,
        max_abs=max_abs,
        nrmse_limit=limit,
        cosine=cosine,
        latency_ms=_latency(run, timed, latency_calls),
        latency_batch=len(timed),
        probe_shape=tuple(probe.shape),
    )


def _nan_high(value: float) -> float:
    """``value``, with NaN turned into +inf so that comparisons treat it as the worst."""
    return math.inf if math.isnan(value) else value


def _errors(actual: Array, expected: Array) -> tuple[float, float]:
    """(NRMSE, max abs) of ``actual`` against ``expected``; NaN if the shapes differ."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return math.nan, math.nan
    diff = actual - expected
    nrmse = math.sqrt(np.mean(diff**2) / max(np.mean(expected**2), 1e-30))
    return nrmse, float(np.max(np.abs(diff)))


def _latency(run: Runner, eeg: Array, calls: int) -> float:
    """Median milliseconds of one call (after one warm-up call)."""
    from eegdino_tf.serving import median_seconds

    return 1e3 * median_seconds(run, eeg, calls)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"
