"""StreamEncoder: chunks of any size in, the tokens of offline encoding out, hop by hop.

The live source is BrainFlow's synthetic board (no hardware); its samples are collected, then
pushed in irregular chunks and compared with ``encode_recording`` over the same samples.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import eegdino_tf
from eegdino_tf.errors import ConfigError, InputError, RecordingError
from eegdino_tf.export import export_tflite
from eegdino_tf.io import encode_recording, open_recording
from eegdino_tf.io.windows import resample_factors
from eegdino_tf.stream import StreamEncoder, StreamItem, TFLiteEncoder
from tests.helpers import OVERRIDES, TINY, nrmse
from tests.helpers.recordings import eeg_like

NAMES = ("Fp1", "Fp2", "C3", "C4")
#: Native samples of board data streamed: 5.04 s at 250 Hz, so the last 2 s window (3-5 s)
#: lacks the filter's 56 ms look-ahead and only flush() completes it.
BOARD_SAMPLES = 1260


@pytest.fixture(scope="module")
def tiny():
    return eegdino_tf.load_encoder(TINY / "tiny_encoder.safetensors", **OVERRIDES["tiny"])


@pytest.fixture(scope="module")
def board_eeg() -> tuple[np.ndarray, list[str], float]:
    """``BOARD_SAMPLES`` samples of the synthetic board's EEG channels (uV), their names and
    rate, streamed live through BrainFlow."""
    board_shim = pytest.importorskip("brainflow.board_shim", reason="needs brainflow (pip)")
    shim, board = board_shim.BoardShim, board_shim.BoardIds.SYNTHETIC_BOARD.value
    shim.disable_board_logger()
    session = shim(board, board_shim.BrainFlowInputParams())
    session.prepare_session()
    try:
        session.start_stream()
        deadline = time.monotonic() + 60
        while session.get_board_data_count() < BOARD_SAMPLES and time.monotonic() < deadline:
            time.sleep(0.1)
        data = session.get_board_data(BOARD_SAMPLES)
        session.stop_stream()
    finally:
        session.release_session()
    assert data.shape[1] == BOARD_SAMPLES, f"the synthetic board gave {data.shape[1]} samples"
    eeg = data[shim.get_eeg_channels(board)]
    return eeg, list(shim.get_eeg_names(board)), float(shim.get_sampling_rate(board))


@pytest.fixture(scope="module")
def tiny_tflite(tiny, tmp_path_factory):
    """The tiny encoder exported for 4 named channels and 1 s windows."""
    path = tmp_path_factory.mktemp("stream") / "tiny_4x200.tflite"
    export_tflite(tiny, path, channels=4, samples=200, channel_names=NAMES, latency_calls=1)
    return path


def stream_in_chunks(encoder: StreamEncoder, data: np.ndarray, seed: int = 0):
    """Push ``data`` in seeded irregular chunks (0 to 97 samples), then flush. Returns the
    items and, per item, the native samples pushed when it came out (None: from flush)."""
    rng = np.random.default_rng(seed)
    items, pushed_at, done = [], [], 0
    while done < data.shape[1]:
        size = int(rng.integers(0, 98))
        out = encoder.push(data[:, done : done + size])
        done = min(done + size, data.shape[1])
        items += out
        pushed_at += [done] * len(out)
    last = encoder.flush()
    return items + last, pushed_at + [None] * len(last)


def assert_equals_offline(items: list[StreamItem], offline: dict, limit: float = 1e-6) -> None:
    assert [item.start_s for item in items] == offline["window_start_s"].tolist()
    for key in ("global_token", "mean_token"):
        got = np.stack([getattr(item, key) for item in items])
        assert got.dtype == np.float32
        assert nrmse(got, offline[key]) <= limit, key


def offline(model, data, sfreq, names, window, hop) -> dict:
    recording = open_recording(data, sfreq=sfreq, ch_names=list(names), channels=list(names))
    return encode_recording(model, recording, window=window, stride=hop, progress=False)


def first_complete(end_s: float, sfreq: float, lookahead: int) -> int:
    """Native samples needed before a window ending at ``end_s`` is final."""
    up, down = resample_factors(sfreq)
    return -(-round(end_s * 200) * down // up) + lookahead


def print_latency(what: str, items: list[StreamItem]) -> None:
    hops = ", ".join(f"{item.start_s:g} s: {item.latency_s * 1e3:.1f} ms" for item in items)
    print(f"\n{what} latency per hop (push start to tokens): {hops}")


def test_brainflow_synthetic_board_streams_the_tokens_of_offline_encoding(tiny, board_eeg):
    eeg, names, sfreq = board_eeg
    assert sfreq == 250 and eeg.shape == (16, BOARD_SAMPLES)
    encoder = StreamEncoder(tiny, sfreq=sfreq, window=2, hop=0.5, channels=names)
    assert encoder.lookahead_s == 14 / 250  # up 4 / down 5: the filter reaches 14 samples on
    items, pushed_at = stream_in_chunks(encoder, eeg)
    print_latency("synthetic board, Keras", items)

    assert_equals_offline(items, offline(tiny, eeg, sfreq, names, window=2, hop=0.5))
    assert [item.start_s for item in items] == [0, 0.5, 1, 1.5, 2, 2.5, 3]
    # Each window came out of the first push that brought its last needed sample; the last
    # (3-5 s) needs 1264 samples of the 1260, so flush() gave it.
    rng, done, needed = np.random.default_rng(0), 0, []
    for item in items[:-1]:
        need = first_complete(item.start_s + 2, sfreq, 14)
        while done < need:
            done = min(done + int(rng.integers(0, 98)), BOARD_SAMPLES)
        needed.append(done)
    assert pushed_at == [*needed, None]


@pytest.mark.parametrize(("sfreq", "hop"), [(200, 0.25), (256, 1.5), (125, 0.5)])
def test_any_rate_and_hop_equals_offline_encoding(tiny, sfreq, hop):
    """200 Hz (no resampling), 256 Hz (up 25 / down 32) with gaps between windows, 125 Hz."""
    data = eeg_like(4, round(6.3 * sfreq), sfreq)
    encoder = StreamEncoder(tiny, sfreq=sfreq, window=1, hop=hop, channels=list(NAMES))
    items, _ = stream_in_chunks(encoder, data, seed=1)
    assert_equals_offline(items, offline(tiny, data, sfreq, NAMES, window=1, hop=hop))


def test_one_push_of_everything_equals_tiny_pushes(tiny):
    data = eeg_like(4, 1500, 250.0)
    whole = StreamEncoder(tiny, sfreq=250, window=1, hop=0.5, channels=4)
    items = whole.push(data) + whole.flush()
    sample_by_sample = StreamEncoder(tiny, sfreq=250, window=1, hop=0.5, channels=4)
    small = [i for t in range(1500) for i in sample_by_sample.push(data[:, t : t + 1])]
    small += sample_by_sample.flush()
    assert [i.start_s for i in small] == [i.start_s for i in items] == [x / 2 for x in range(11)]
    for a, b in zip(items, small, strict=True):
        assert nrmse(b.global_token, a.global_token) <= 1e-6


def test_tflite_file_streams_like_offline_encoding(tiny, tiny_tflite):
    data = eeg_like(4, 256 * 5 + 7, 256.0)
    encoder = StreamEncoder(tiny_tflite, sfreq=256, hop=0.25)
    assert (encoder.window_s, encoder.channels) == (1.0, NAMES)  # from the file and its record
    items, _ = stream_in_chunks(encoder, data, seed=2)
    print_latency("tflite at 256 Hz", items)
    # The same file offline: equal; Keras offline: within the export's own check (1e-5).
    assert_equals_offline(items, offline(TFLiteEncoder(tiny_tflite), data, 256, NAMES, 1, 0.25))
    assert_equals_offline(items, offline(tiny, data, 256, NAMES, 1, 0.25), limit=1e-5)


def test_tflite_file_fixes_window_and_channels(tiny_tflite):
    with pytest.raises(ConfigError, match=r"window=2 s, but .*tiny_4x200.tflite takes 200 samples"):
        StreamEncoder(tiny_tflite, sfreq=250, window=2)
    with pytest.raises(ConfigError, match="channels gives 3 channels, but .* takes 4"):
        StreamEncoder(tiny_tflite, sfreq=250, channels=["Fp1", "Fp2", "C3"])
    with pytest.raises(ConfigError, match=r"model='x.onnx': expected a Keras encoder or .*tflite"):
        StreamEncoder("x.onnx", sfreq=250)


def test_reset_and_flush_start_over_at_zero(tiny):
    data = eeg_like(4, 800, 200.0)
    encoder = StreamEncoder(tiny, sfreq=200, window=1, hop=1, channels=4)
    first = encoder.push(data) + encoder.flush()
    encoder.push(data[:, :500])
    encoder.reset()
    again = encoder.push(data) + encoder.flush()
    assert [i.start_s for i in first] == [i.start_s for i in again] == [0, 1, 2, 3]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.mean_token, b.mean_token)


def test_bad_chunks_are_refused_whole_and_named(tiny):
    data = eeg_like(4, 600, 250.0)
    encoder = StreamEncoder(tiny, sfreq=250, window=1, channels=list(NAMES))
    items = encoder.push(data[:, :300])
    bad = data[:, 300:].copy()
    bad[2, 137] = np.nan
    with pytest.raises(
        InputError,
        match=r"chunk sample 137 \(stream sample 437, 1.7480 s\) of "
        r"channel C3 is nan",
    ):
        encoder.push(bad)
    with pytest.raises(InputError, match=r"a chunk has 3 rows; .*4 channels \(Fp1, Fp2, C3, C4\)$"):
        encoder.push(data[:3, :50])
    with pytest.raises(InputError, match=r"50 rows; .*\(transposed\? chunks are \[channels, "):
        encoder.push(data[:, :50].T)
    with pytest.raises(InputError, match=r"must be 2-D \[channels, samples\]; got shape \(300,\)"):
        encoder.push(data[0, 300:])
    with pytest.raises(InputError, match="real numbers .* got dtype complex128"):
        encoder.push(data[:, 300:] + 0j)
    # Nothing of a refused chunk was taken: the stream goes on as if it never came.
    items += encoder.push(data[:, 300:]) + encoder.flush()
    assert_equals_offline(items, offline(tiny, data, 250, NAMES, window=1, hop=None))


def test_model_and_channels_are_checked(tiny):
    with pytest.raises(ConfigError, match=r"channels=\.\.\. is needed with a Keras model"):
        StreamEncoder(tiny, sfreq=250)
    with pytest.raises(ConfigError, match=r"channels=\['Fp1', 'Fp1'\] names a channel twice"):
        StreamEncoder(tiny, sfreq=250, channels="Fp1, Fp1")
    with pytest.raises(ConfigError, match=r"channels gives 20 channels; expected 1\.\.19"):
        StreamEncoder(tiny, sfreq=250, channels=20)
    classifier = eegdino_tf.load_classifier(TINY / "tiny_classifier.safetensors", norm_groups=4)
    with pytest.raises(ConfigError, match="model: got EEGDinoClassifier; expected an encoder"):
        StreamEncoder(classifier, sfreq=250, channels=4)
    with pytest.raises(RecordingError, match="hop must be a whole number of 200 Hz samples"):
        StreamEncoder(tiny, sfreq=250, hop=0.0033, channels=4)
