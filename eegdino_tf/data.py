"""``tf.data`` input pipelines over EEG recordings, for training and batch prediction.

The windows are exactly those :func:`eegdino_tf.io.encode_recording` feeds the model:
channels picked and ordered, microvolts, 200 Hz, ``window`` seconds each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import open_recording


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
    count = sum(len(r.window_starts(window, stride, pad_tail)) for r in recordings)
    known_length = tf.data.experimental.assert_cardinality(count)
    n_channels = len(recordings[0].channels)
    x_spec = tf.TensorSpec([n_channels, round(float(window) * SAMPLING_RATE)], tf.float32)
    if labels is None:

        def windows():
            for recording in recordings:
                for _, x in recording.windows(window, stride, pad_tail):
                    yield x

        return tf.data.Dataset.from_generator(windows, output_signature=x_spec).apply(known_length)

    label_array = np.asarray(labels)
    if label_array.ndim == 0 or len(label_array) != len(recordings):
        raise RecordingError(
            f"labels must give one label per source ({len(recordings)}), got shape "
            f"{label_array.shape}"
        )
    dtype = tf.string if label_array.dtype.kind in "OSU" else tf.as_dtype(label_array.dtype)
    y_spec = tf.TensorSpec(label_array.shape[1:], dtype)

    def labelled():
        for recording, label in zip(recordings, label_array, strict=True):
            for _, x in recording.windows(window, stride, pad_tail):
                yield x, label

    dataset = tf.data.Dataset.from_generator(labelled, output_signature=(x_spec, y_spec))
    return dataset.apply(known_length)
