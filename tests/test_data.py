"""The tf.data helper yields exactly the windows encode_recording feeds the model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf.data import window_dataset
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import encode_recording
from tests.helpers import TINY, nrmse
from tests.helpers.recordings import TUH_LABELS, eeg_like, write_edf


class SpyEncoder:
    """Stands in for a model: records every batch it is fed, returns encoder-shaped zeros."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def predict(self, x: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        self.batches.append(np.array(x))
        return np.zeros((len(x), 1 + x.shape[1] * x.shape[2] // 200, 4), np.float32)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = [folder / "a.edf", folder / "b.edf"]
    write_edf(paths[0], eeg_like(19, 256 * 33, 256.0), TUH_LABELS, 256.0, extra=True)
    write_edf(paths[1], eeg_like(19, 200 * 21, 200.0) / 1e3, TUH_LABELS, 200.0, unit="mV", bound=1)
    return paths


def fed_windows(paths, **kwargs) -> np.ndarray:
    spy = SpyEncoder()
    for path in paths:
        encode_recording(spy, path, batch_size=3, progress=False, **kwargs)
    return np.concatenate(spy.batches)


def test_dataset_windows_equal_what_encode_feeds_the_model(recordings):
    dataset = window_dataset(recordings, labels=[0, 1])
    assert dataset.element_spec == (
        tf.TensorSpec([19, 2000], tf.float32),
        tf.TensorSpec([], tf.int64),
    )
    assert len(dataset) == 5
    pairs = list(dataset.as_numpy_iterator())
    windows = np.stack([x for x, _ in pairs])
    assert [int(y) for _, y in pairs] == [0, 0, 0, 1, 1]
    expected = fed_windows(recordings)
    assert windows.shape == expected.shape == (5, 19, 2000)
    np.testing.assert_array_equal(windows, expected)

    # Overlapping, padded, a channel subset; unlabelled.
    options = dict(channels=["O2", "Cz", "Fp1"], window=4, stride=3, pad_tail=True)
    windows = np.stack(list(window_dataset(recordings, **options).as_numpy_iterator()))
    np.testing.assert_array_equal(windows, fed_windows(recordings, **options))
    assert windows.shape == (11 + 7, 3, 800)


def test_dataset_feeds_predict(recordings):
    encoder = eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", norm_groups=4)
    tokens = encoder.predict(window_dataset(recordings).batch(4), verbose=0)
    expected = np.concatenate(
        [encode_recording(encoder, p, progress=False)["global_token"] for p in recordings]
    )
    assert nrmse(tokens[:, 0], expected) <= 2e-6


def test_dataset_checks_sources_up_front(recordings, tmp_path):
    with pytest.raises(RecordingError, match="not found"):
        window_dataset(recordings, channels=["Fp1", "Nope"])
    with pytest.raises(RecordingError, match="one label per source"):
        window_dataset(recordings, labels=[1])
    short = tmp_path / "short.edf"
    write_edf(short, eeg_like(19, 200 * 5, 200.0), TUH_LABELS, 200.0)
    with pytest.raises(RecordingError, match="shorter than one 10 s window"):
        window_dataset([*recordings, short])
    labels = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    x, y = next(iter(window_dataset(recordings, labels=labels)))
    assert y.dtype == tf.float32 and y.shape == (2,) and x.shape == (19, 2000)
