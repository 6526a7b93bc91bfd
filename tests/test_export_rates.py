"""Exports at a headset's own rate: the file takes ``[B, C, round(sfreq * window)]`` microvolts
and resamples each window to 200 Hz inside, so its tokens equal Keras on scipy's resampled
window; at 200 Hz the file is today's. And one file for every montage and window."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from scipy.signal import resample_poly

from eegdino_tf import artifact
from eegdino_tf.cli import main
from eegdino_tf.errors import ExportError
from eegdino_tf.export import export_onnx, export_saved_model, export_tflite
from eegdino_tf.io.windows import resample_factors
from tests.helpers import TINY, nrmse
from tests.helpers.recordings import eeg_like

MUSE = ["TP9", "AF7", "AF8", "TP10"]


def keras_on_scipy(encoder, eeg: np.ndarray, sfreq: float) -> np.ndarray:
    """The encoder's tokens on ``eeg`` resampled to 200 Hz by scipy (float64), window alone."""
    up, down = resample_factors(sfreq)
    at_200 = resample_poly(eeg.astype(np.float64), up, down, axis=-1).astype(np.float32)
    return encoder.predict(at_200, verbose=0)


def headset_window(sfreq: float, seconds: int = 4, batch: int = 1) -> np.ndarray:
    n = round(sfreq * seconds)
    return np.stack([eeg_like(4, n, sfreq, scale=40.0) for _ in range(batch)]).astype(np.float32)


@pytest.mark.parametrize("sfreq", [125, 128, 250, 256, 500, 1000])
def test_a_tflite_file_at_the_headsets_rate_equals_keras_on_scipys_window(sfreq, encoder, tmp_path):
    path = tmp_path / "headset.tflite"
    export_tflite(encoder, path, channels=4, sfreq=sfreq, window=4, channel_names=MUSE)
    eeg = headset_window(sfreq)
    runner = Interpreter(model_content=path.read_bytes()).get_signature_runner("serving_default")
    assert runner.get_input_details()["eeg"]["shape"].tolist() == [1, 4, round(sfreq * 4)]
    got = runner(eeg=eeg)["tokens"]
    assert nrmse(got, keras_on_scipy(encoder, eeg, sfreq)) <= 1e-5
    record = artifact.read_record(path)
    assert (record["sfreq"], record["window_s"], record["channels"]) == (sfreq, 4.0, MUSE)
    assert record["input_shape"] == [1, 4, round(sfreq * 4)]
    assert record["model"]["class"] == "EEGDinoEncoder"


def test_the_resampling_adds_under_0_1_mb_at_256_hz(encoder, tmp_path):
    export_tflite(encoder, tmp_path / "200.tflite", channels=4, window=4)
    export_tflite(encoder, tmp_path / "256.tflite", channels=4, sfreq=256, window=4)
    added = (tmp_path / "256.tflite").stat().st_size - (tmp_path / "200.tflite").stat().st_size
    assert 0 < added < 100_000


def test_200_hz_in_whole_seconds_is_todays_file(encoder, tmp_path):
    export_tflite(encoder, tmp_path / "today.tflite")
    export_tflite(encoder, tmp_path / "explicit.tflite", sfreq=200, window=10)
    assert (tmp_path / "today.tflite").read_bytes() == (tmp_path / "explicit.tflite").read_bytes()


def test_onnx_and_saved_model_at_256_hz_equal_keras_on_scipys_window(encoder, tmp_path):
    import onnxruntime as ort

    eeg = headset_window(256, batch=2)
    expected = keras_on_scipy(encoder, eeg, 256)
    export_onnx(encoder, tmp_path / "m.onnx", channels=4, sfreq=256, window=4)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert nrmse(session.run(["tokens"], {"eeg": eeg})[0], expected) <= 1e-5
    export_saved_model(encoder, tmp_path / "sm", channels=4, sfreq=256, window=4)
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "1"))
    got = loaded.signatures["serving_default"](eeg=tf.constant(eeg))["tokens"].numpy()
    assert nrmse(got, expected) <= 1e-5


def test_the_export_command_takes_the_headsets_rate_window_and_montage(tmp_path, capsys):
    out = tmp_path / "muse.tflite"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["export", "tflite", weights, str(out), "--norm-groups", "4", "--sfreq", "256"]
    argv += ["--window", "4", "--channels", ",".join(MUSE)]
    assert main(argv) == 0
    assert "eeg [1, 4, 1024]" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "256 Hz, 4 s windows" in shown and "TP9, AF7, AF8, TP10" in shown


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": 1024, "window": 4}, "give samples or window, not both"),
        ({"window": 4.1}, r"1050 samples at 256 Hz resamples to 821 samples at 200 Hz"),
        ({"window": -4}, "window must be a positive number of seconds"),
    ],
)
def test_a_window_that_cannot_be_whole_patches_is_refused_naming_it(
    options, message, encoder, tmp_path
):
    with pytest.raises(ExportError, match=message):
        export_tflite(encoder, tmp_path / "m.tflite", channels=4, sfreq=256, **options)
    assert not (tmp_path / "m.tflite").exists()


def test_one_any_shape_file_serves_every_montage_and_window(encoder, tmp_path):
    export_tflite(encoder, tmp_path / "any.tflite", any_shape=True)
    export_tflite(encoder, tmp_path / "one.tflite")
    sizes = [(tmp_path / name).stat().st_size for name in ("any.tflite", "one.tflite")]
    assert sizes[0] <= 1.1 * sizes[1]
    runner = Interpreter(model_path=str(tmp_path / "any.tflite")).get_signature_runner()
    for channels, samples in ((4, 800), (8, 1000), (19, 2000), (1, 200), (3, 1400)):
        eeg = np.stack([eeg_like(channels, samples, 200.0)]).astype(np.float32)
        got = runner(eeg=eeg)["tokens"]
        assert nrmse(got, encoder.predict(eeg, verbose=0)) <= 1e-5, (channels, samples)
    record = artifact.read_record(tmp_path / "any.tflite")
    assert record["input_shape"] == [1, None, None] and record["window_s"] is None


def test_any_shape_is_for_200_hz_input_of_any_length(encoder, tmp_path):
    with pytest.raises(ExportError, match="any_shape=True takes EEG at 200 Hz"):
        export_tflite(encoder, tmp_path / "m.tflite", any_shape=True, sfreq=256)
    assert not (tmp_path / "m.tflite").exists()
