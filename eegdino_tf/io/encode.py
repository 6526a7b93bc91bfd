"""A whole recording through the model, window by window: :func:`encode_recording`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from eegdino_tf.config import SAMPLING_RATE, batch_count
from eegdino_tf.errors import ConfigError, RecordingError
from eegdino_tf.io.sources import Recording, open_recording
from eegdino_tf.io.windows import window_samples

_log = logging.getLogger(__name__)


def summarize(outputs: np.ndarray, tokens: bool = False) -> dict[str, np.ndarray]:
    """What ``encode`` keeps of a batch of model outputs, float32, one row per window.

    Encoder tokens ``[B, 1 + C*P, D]`` -> ``global_token`` (token 0) and ``mean_token`` (mean of
    the patch tokens) ``[B, D]``, plus ``tokens`` itself when asked; classifier logits
    ``[B, K]`` -> ``logits`` and ``probabilities`` (softmax, computed in float64 by Keras).
    """
    import keras  # the model is a Keras model: this import is already done

    out = np.asarray(outputs)
    if out.ndim == 3:
        found = {"global_token": out[:, 0], "mean_token": out[:, 1:].mean(axis=1)}
        if tokens:
            found["tokens"] = out
    elif out.ndim == 2 and not tokens:
        probabilities = keras.ops.softmax(out.astype(np.float64), axis=-1)
        found = {"logits": out, "probabilities": keras.ops.convert_to_numpy(probabilities)}
    else:
        raise RecordingError(
            f"the model returned shape {out.shape}; expected encoder tokens [B, 1 + C*P, D]"
            + ("" if out.ndim != 2 else " (tokens=True needs an encoder, not a classifier)")
        )
    return {key: value.astype(np.float32) for key, value in found.items()}


def encode_recording(
    model: Any,
    source: str | os.PathLike | Recording | Any,
    *,
    channels: Sequence[str] | str | None = None,
    unit: str | None = None,
    window: float = 10,
    stride: float | None = None,
    batch_size: int = 8,
    tokens: bool = False,
    pad_tail: bool = False,
    progress: bool = True,
    runtime: str = "auto",
    quantize: str = "none",
) -> dict[str, np.ndarray]:
    """Encode a whole recording, window by window, with an EEG-DINO encoder or classifier.

    ``model`` is from :func:`eegdino_tf.load_encoder` (output ``[B, 1 + C*P, D]``) or
    :func:`eegdino_tf.load_classifier` (output ``[B, n_classes]``); it is fed raw microvolts
    ``[batch_size, C, window*200]``. ``source`` is anything
    :func:`~eegdino_tf.io.open_recording` takes (then ``channels`` and ``unit`` go to it) or an
    opened :class:`~eegdino_tf.io.Recording`. ``runtime`` is ``predict``'s: ``"auto"`` (decided
    once for the whole recording: :meth:`~eegdino_tf.runtime.EEGModel.choose_runtime`),
    ``"keras"``, ``"xla"`` or ``"litert"`` (LiteRT on the CPU, float32; see
    :mod:`eegdino_tf.litert`), and so is ``quantize`` (``"dynamic-int8"``: int8 weights in
    LiteRT).

    Returns, for W windows: ``window_start_s`` ``[W]``, ``channels`` and ``source_channels``
    ``[C]``, ``sfreq`` (200.0), ``steps`` (what was done, one line each) and, for an encoder,
    ``global_token`` ``[W, D]`` (token 0), ``mean_token`` ``[W, D]`` (mean of the C*P patch
    tokens) and with ``tokens=True`` ``tokens`` ``[W, 1 + C*P, D]`` (kept in memory: it grows
    with the recording's length, unlike everything else here); for a classifier,
    ``logits`` and ``probabilities`` (softmax) ``[W, n_classes]``.
    """
    if isinstance(source, Recording):
        if channels is not None or unit is not None:
            raise RecordingError("channels and unit apply when opening; this Recording is open")
        recording = source
    else:
        recording = open_recording(source, channels=channels, unit=unit)
    batch_count(batch_size)
    starts = recording.window_starts(window, stride, pad_tail)
    if hasattr(model, "num_heads"):  # refused before any window is read, not at the first batch
        from eegdino_tf.runtime import check_attention_memory

        samples = window_samples(window)
        shape = (len(starts), len(recording.channels), samples)
        check_attention_memory(shape, min(batch_size, len(starts)), model.num_heads)
    steps = [*recording.steps, recording.describe_windows(window, stride, pad_tail)]
    _log.info("%s", steps[-1])
    parts: dict[str, list[np.ndarray]] = {}

    if hasattr(model, "choose_runtime"):
        if runtime == "auto":  # decided once, for every window
            samples = window_samples(window)
            channels = len(recording.channels)
            runtime = model.choose_runtime(channels, samples, len(starts), quantize)
        extra = {"runtime": runtime, "quantize": quantize}
    elif runtime in ("auto", "keras") and quantize == "none":
        extra = {}  # a model of the user's own: Keras' predict, which has no runtime argument
    else:
        raise ConfigError(
            f"runtime={runtime!r} and quantize={quantize!r} run eegdino_tf's own models; this "
            f"{type(model).__name__} runs in Keras (runtime='auto' or 'keras')"
        )

    def run(batch: list[np.ndarray]) -> None:
        out = model.predict(np.stack(batch), batch_size=batch_size, verbose=0, **extra)
        for key, value in summarize(out, tokens).items():
            parts.setdefault(key, []).append(value)

    with tqdm(total=len(starts), unit="window", desc="encoding", disable=not progress) as bar:
        batch: list[np.ndarray] = []
        for _, x in recording.windows(window, stride, pad_tail):
            batch.append(x)
            if len(batch) == batch_size:
                run(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            run(batch)
            bar.update(len(batch))
    result = {key: np.concatenate(values) for key, values in parts.items()}
    result.update(
        window_start_s=starts / SAMPLING_RATE,
        channels=np.asarray(recording.channels),
        source_channels=np.asarray(recording.source_channels),
        sfreq=np.asarray(SAMPLING_RATE),
        steps=np.asarray(steps),
    )
    return result
