"""``tf.data`` input pipelines over EEG recordings, for training and batch prediction.

The windows are exactly those :func:`eegdino_tf.io.encode_recording` feeds the model:
channels picked and ordered, microvolts, 200 Hz, ``window`` seconds each.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import open_recording
from eegdino_tf.io.windows import window_samples


def window_dataset(
    sources: Sequence[str | os.PathLike | Any],
    *,
    channels: Sequence[str] | str | None = None,
    unit: str | None = None,
    window: float = 10,
    stride: float | None = None,
    pad_tail: bool = False,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> tf.data.Dataset:
    """A dataset of model-ready windows from several recordings, one recording after another.

    ``sources`` are anything :func:`~eegdino_tf.io.open_recording` takes (EDF/BDF or
    other paths, ``mne.io.Raw`` objects); ``channels``, ``unit``, ``window``, ``stride`` and
    ``pad_tail`` mean what they mean there. Elements are float32 microvolts
    ``[C, window * 200]``, or ``(x, label)`` pairs when ``labels`` gives one label (a scalar
    or an array, the same shape for all) per source. The dataset knows its length
    (``len(dataset)``). Every source is opened (headers only)
    and checked here, so a bad file or a missing channel is an error now, not mid-epoch. The
    data are read lazily, a chunk at a time, on each pass.
    """
    recordings = [open_recording(source, channels=channels, unit=unit) for source in sources]
    if not recordings:
        raise RecordingError("window_dataset needs at least one source")
    # Raises if a recording is shorter than a window or the window is invalid.
    starts = [r.window_starts(window, stride, pad_tail) for r in recordings]
    label_spec = None
    if labels is None:
        label_array = np.full(len(recordings), None)
    else:
        label_array = np.asarray(labels)
        if label_array.ndim == 0 or len(label_array) != len(recordings):
            raise RecordingError(
                f"labels must give one label per source ({len(recordings)}), got shape "
                f"{label_array.shape}"
            )
        dtype = tf.string if label_array.dtype.kind in "OSU" else tf.as_dtype(label_array.dtype)
        label_spec = tf.TensorSpec(label_array.shape[1:], dtype)
    plan = [
        (lambda r=r: r, [(int(s), label) for s in ss])
        for r, ss, label in zip(recordings, starts, label_array, strict=True)
    ]
    return planned_dataset(
        plan,
        n_channels=len(recordings[0].channels),
        window=window,
        stride=stride,
        pad_tail=pad_tail,
        label_spec=label_spec,
    )


def planned_dataset(
    plan: Sequence[tuple[Callable[[], Any], Sequence[tuple[int, Any]]]],
    *,
    n_channels: int,
    window: float = 10,
    stride: float | None = None,
    pad_tail: bool = False,
    label_spec: tf.TensorSpec | None = None,
) -> tf.data.Dataset:
    """The windows a plan lists, in its order: ``x`` float32 ``[n_channels, window * 200]``, or
    ``(x, label)`` with ``label_spec``.

    ``plan`` holds, per recording, a function that opens it (a
    :class:`~eegdino_tf.io.sources.Recording`; called once per pass) and its wanted
    ``(start sample, label)`` pairs, sorted by start; a start listed twice (overlapping events)
    gives its window once per label. The starts must be among those of
    ``recording.window_starts(window, stride, pad_tail)``.
    """
    size = window_samples(window)
    x_spec = tf.TensorSpec([n_channels, size], tf.float32)
    count = sum(len(wanted) for _, wanted in plan)

    def generate() -> Iterator[Any]:
        for opener, wanted in plan:
            if not wanted:
                continue
            labels: dict[int, list[Any]] = defaultdict(list)
            for start, label in wanted:
                labels[start].append(label)
            last = max(labels)
            for start_s, x in opener().windows(window, stride, pad_tail):
                start = round(start_s * SAMPLING_RATE)
                for label in labels.get(start, ()):
                    yield x if label_spec is None else (x, label)
                if start >= last:
                    break

    spec = x_spec if label_spec is None else (x_spec, label_spec)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))
