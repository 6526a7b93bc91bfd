"""Exports (SavedModel, TFLite, ONNX), each run in its own runtime against the golden fixtures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf import export as E
from eegdino_tf import tracing as T
from eegdino_tf.cli import main
from eegdino_tf.errors import EEGDinoError, ExportError, MissingExtraError
from tests.helpers import OVERRIDES, fixture_path, load_io, nrmse

ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tf2onnx")


def _load(name: str, kind: str = "encoder", **kwargs):
    load = eegdino_tf.load_classifier if kind == "classifier" else eegdino_tf.load_encoder
    return load(fixture_path(f"{name}_{kind}.safetensors"), **OVERRIDES[name], **kwargs)


@pytest.fixture(scope="module")
def tiny_io():
    return load_io("tiny")


@pytest.fixture(scope="module")
def tiny_encoder():
    return _load("tiny")


@pytest.fixture(scope="module")
def tiny_classifier():
    return _load("tiny", "classifier")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


def _tflite(path: Path, eeg: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = litert.Interpreter(model_path=str(path))
    assert interpreter.get_signature_list()["serving_default"]["inputs"] == ["eeg"]
    return interpreter.get_signature_runner("serving_default")(eeg=eeg)


def _onnx(path: Path, eeg: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["eeg"]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"eeg": eeg}), strict=True))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------
# SavedModel
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_saved_model(tiny_encoder, out) -> Path:
    report = E.export_saved_model(tiny_encoder, out / "tiny_sm")
    assert report.path == out / "tiny_sm" / "1"
    assert report.outputs == ("tokens", "global_token", "mean_token")
    assert report.nrmse <= 1e-5 and report.size_bytes > 0 and report.latency_ms > 0
    return report.path


def test_saved_model_serving_signature_matches_the_fixtures(tiny_saved_model, tiny_io):
    signature = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["eeg"]
    assert signature.structured_input_signature[1]["eeg"].shape.as_list() == [None, 19, 2000]
    for case in ("", "_b1"):
        got = {
            k: v.numpy() for k, v in signature(eeg=tf.constant(tiny_io[f"raw_uv{case}"])).items()
        }
        tokens = tiny_io[f"tokens{case}"]
        assert nrmse(got["tokens"], tokens) <= 5e-6
        assert nrmse(got["global_token"], tokens[:, 0]) <= 5e-6
        assert nrmse(got["mean_token"], tokens[:, 1:].mean(axis=1)) <= 5e-6


def test_saved_model_runs_in_saved_model_cli(tiny_saved_model, tiny_io, tmp_path):
    """``saved_model_cli`` loads like TF Serving (a TF1 session restoring variables by name)."""
    np.save(tmp_path / "eeg.npy", tiny_io["raw_uv"])
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "run", "--dir", str(tiny_saved_model), "--tag_set", "serve"]
        + ["--signature_def", "serving_default", "--inputs", f"eeg={tmp_path / 'eeg.npy'}"]
        + ["--outdir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert nrmse(np.load(tmp_path / "out" / "tokens.npy"), tiny_io["tokens"]) <= 5e-6


def test_saved_model_classifier_gives_logits_and_probabilities(tiny_classifier, tiny_io, out):
    report = E.export_saved_model(tiny_classifier, out / "tiny_cls_sm", version=3)
    assert report.path.name == "3" and report.outputs == ("logits", "probabilities")
    signature = tf.saved_model.load(str(report.path)).signatures["serving_default"]
    got = signature(eeg=tf.constant(tiny_io["raw_uv"]))
    assert nrmse(got["logits"].numpy(), tiny_io["logits"]) <= 5e-6
    np.testing.assert_allclose(got["probabilities"].numpy().sum(axis=-1), 1.0, rtol=1e-5)


def test_saved_model_of_a_users_own_model_keeps_its_output_names(tiny_encoder, tiny_io, out):
    import keras

    eeg = keras.Input((19, 2000))
    tokens = tiny_encoder(eeg)
    scores = keras.layers.Dense(3, name="scores")(keras.layers.GlobalAveragePooling1D()(tokens))
    model = keras.Model(eeg, scores)
    report = E.export_saved_model(model, out / "own_model")
    assert report.outputs == ("scores",)  # not "tokens", no global_token / mean_token
    signature = tf.saved_model.load(str(report.path)).signatures["serving_default"]
    got = signature(eeg=tf.constant(tiny_io["raw_uv"]))["scores"].numpy()
    assert nrmse(got, model(tiny_io["raw_uv"]).numpy()) <= 1e-6


# ---------------------------------------------------------------------------------------------
# TFLite
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tflite(tiny_encoder, out) -> dict[str, E.ExportReport]:
    return {
        quantize: E.export_tflite(tiny_encoder, out / f"tiny_{quantize}.tflite", quantize=quantize)
        for quantize in E.QUANTIZATIONS
        if quantize != "int8"  # calibrated: tests/test_export_int8.py
    }


def test_tflite_float32_matches_the_fixtures_with_builtin_ops_only(tiny_tflite, tiny_io):
    path = tiny_tflite["none"].path
    ops = T.tflite_operators(path.read_bytes())
    assert all(ops.values()), ops
    assert "GELU" in ops  # the builtin exact GELU, not an erf decomposition
    assert "SOFTMAX" in ops  # the fused softmax, not XLA's row sums from the matmul
    got = _tflite(path, tiny_io["raw_uv_b1"])
    assert list(got) == ["tokens"]
    assert nrmse(got["tokens"], tiny_io["tokens_b1"]) <= 1e-5


def test_tflite_quantized_variants(tiny_tflite, tiny_io):
    eeg, tokens = tiny_io["raw_uv_b1"], tiny_io["tokens_b1"]
    sizes = {q: report.size_bytes for q, report in tiny_tflite.items()}
    assert sizes["dynamic-int8"] < sizes["float16"] < sizes["none"]

    assert nrmse(_tflite(tiny_tflite["float16"].path, eeg)["tokens"], tokens) <= 5e-3

    int8 = tiny_tflite["dynamic-int8"]
    got = _tflite(int8.path, eeg)["tokens"]
    print(f"dynamic-int8 tiny: NRMSE {nrmse(got, tokens):.2e}, cosine {int8.cosine:.5f}")
    assert int8.nrmse_limit is None and int8.cosine >= E.MIN_INT8_COSINE
    assert _cosine(got[:, 0], tokens[:, 0]) >= 0.99
    assert all(T.tflite_operators(int8.path.read_bytes()).values())


def test_one_nan_policy_in_every_variant(tiny_encoder, tiny_tflite, tiny_saved_model, out):
    """A non-finite sample never gives a finite answer: TFLite (float32, float16, dynamic-range
    int8) and ONNX give that example NaN in every output and leave the others as they were;
    the SavedModel refuses the call."""
    eeg = E.probe_eeg(3, 19, 2000, seed=4)
    bad = eeg.copy()
    bad[1, 7, 300] = np.nan
    bad[2, 0, 0] = np.inf
    onnx = E.export_onnx(tiny_encoder, out / "nan.onnx").path
    runs = {q: (lambda x, p=r.path: _batched_tflite(p, x)) for q, r in tiny_tflite.items()}
    runs["onnx"] = lambda x: _onnx(onnx, x)["tokens"]
    for variant, run in runs.items():
        clean, got = run(eeg), run(bad)
        assert np.isnan(got[1]).all() and np.isnan(got[2]).all(), variant
        np.testing.assert_array_equal(got[0], clean[0], err_msg=variant)
    signature = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        signature(eeg=tf.constant(bad))


def _batched_tflite(path: Path, eeg: np.ndarray) -> np.ndarray:
    """A batch-1 TFLite file run on each example of ``eeg`` in turn."""
    return np.concatenate([_tflite(path, x[None])["tokens"] for x in eeg])


def test_tflite_fixed_batch_and_classifier(tiny_encoder, tiny_classifier, tiny_io, out):
    batch3 = E.export_tflite(tiny_encoder, out / "tiny_b3.tflite", batch=3)
    assert batch3.input_shape == (3, 19, 2000)
    assert nrmse(_tflite(batch3.path, tiny_io["raw_uv"])["tokens"], tiny_io["tokens"]) <= 1e-5

    c16 = E.export_tflite(tiny_classifier, out / "tiny_cls.tflite", channels=16, samples=3000)
    got = _tflite(c16.path, tiny_io["raw_uv_c16"][:1])
    assert list(got) == ["logits"]
    assert nrmse(got["logits"], tiny_io["logits_c16"][:1]) <= 1e-5

    fp16 = E.export_tflite(tiny_classifier, out / "tiny_cls_fp16.tflite", quantize="float16")
    got = _tflite(fp16.path, tiny_io["raw_uv_b1"])["logits"]
    assert nrmse(got, tiny_io["logits_b1"]) <= 5e-3


def test_tflite_refuses_flex_ops(tiny_encoder, out, monkeypatch):
    """An op TFLite has no builtin for (a bare tf.math.erf) would need the Flex runtime."""
    outputs = T.named_outputs
    monkeypatch.setattr(
        T,
        "named_outputs",
        lambda *args, **kw: {k: tf.math.erf(v) for k, v in outputs(*args, **kw).items()},
    )
    with pytest.raises(ExportError, match="TFLite conversion failed.*Erf"):
        E.export_tflite(tiny_encoder, out / "flex.tflite")
    assert not (out / "flex.tflite").exists()


def test_tflite_fuses_erf_gelu_to_the_builtin(tiny_encoder, out, monkeypatch):
    """The ONNX-friendly erf GELU also converts: the converter fuses it into builtin GELU."""
    monkeypatch.setitem(T.GRAPH_FORMS, "tflite", {**T.GRAPH_FORMS["tflite"], "gelu": "erf"})
    report = E.export_tflite(tiny_encoder, out / "erf_gelu.tflite")
    ops = T.tflite_operators(report.path.read_bytes())
    assert all(ops.values()) and "GELU" in ops


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


def test_onnx_dynamic_batch_matches_the_fixtures(tiny_encoder, tiny_io, out):
    report = E.export_onnx(tiny_encoder, out / "tiny.onnx")
    assert report.input_shape == (None, 19, 2000) and report.outputs == ("tokens",)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 19, 2000]
    assert session.get_outputs()[0].shape == ["batch", 191, 64]
    for case in ("_b1", ""):  # batch 1, then batch 3, from the same file
        got = _onnx(report.path, tiny_io[f"raw_uv{case}"])
        assert list(got) == ["tokens"]
        assert nrmse(got["tokens"], tiny_io[f"tokens{case}"]) <= 1e-5


def test_onnx_classifier(tiny_classifier, tiny_io, out):
    report = E.export_onnx(tiny_classifier, out / "tiny_cls.onnx", opset=18)
    for case in ("_b1", ""):
        got = _onnx(report.path, tiny_io[f"raw_uv{case}"])
        assert nrmse(got["logits"], tiny_io[f"logits{case}"]) <= 1e-5


# ---------------------------------------------------------------------------------------------
# The small model (released shape): one artifact per format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", E.FORMATS)
def test_small_encoder_exports(fmt, tmp_path):
    model = _load("small", check_finite=False)
    io = load_io("small")
    name = {"saved-model": "sm", "tflite": "small.tflite", "onnx": "small.onnx"}[fmt]
    report = E.export_model(fmt, model, tmp_path / name)
    assert report.nrmse <= 1e-5
    eeg, tokens = io["raw_uv_b1"], io["tokens_b1"]
    if fmt == "saved-model":
        signature = tf.saved_model.load(str(report.path)).signatures["serving_default"]
        got = signature(eeg=tf.constant(eeg))["tokens"].numpy()
    else:
        got = (_tflite if fmt == "tflite" else _onnx)(report.path, eeg)["tokens"]
    assert nrmse(got, tokens) <= (5e-6 if fmt == "saved-model" else 1e-5)


def test_small_classifier_tflite_int8(tmp_path):
    model = _load("small", "classifier")
    io = load_io("small")
    report = E.export_tflite(model, tmp_path / "cls.tflite", quantize="dynamic-int8")
    got = _tflite(report.path, io["raw_uv_b1"])["logits"]
    print(f"dynamic-int8 small classifier: NRMSE {nrmse(got, io['logits_b1']):.2e}")
    assert report.cosine >= E.MIN_INT8_COSINE
    assert _cosine(got, io["logits_b1"]) >= 0.99


# ---------------------------------------------------------------------------------------------
# Errors, atomic writes, the command line
# ---------------------------------------------------------------------------------------------


def test_existing_output_is_refused_without_force(tiny_encoder, tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"keep me")
    with pytest.raises(EEGDinoError, match="already exists"):
        E.export_tflite(tiny_encoder, target)
    assert target.read_bytes() == b"keep me"

    (tmp_path / "sm" / "1").mkdir(parents=True)
    (tmp_path / "sm" / "1" / "keep").write_text("me")
    with pytest.raises(EEGDinoError, match="already exists"):
        E.export_saved_model(tiny_encoder, tmp_path / "sm")
    assert (tmp_path / "sm" / "1" / "keep").read_text() == "me"

    report = E.export_tflite(tiny_encoder, target, force=True)
    assert target.stat().st_size == report.size_bytes > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite", "sm"]


@pytest.mark.parametrize("fmt", ["tflite", "saved-model"])
def test_failed_self_check_leaves_nothing(fmt, tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.setitem(E.NRMSE_LIMITS, "none", 1e-12)
    with pytest.raises(ExportError, match=f"{fmt} self-check failed.*NRMSE"):
        E.export_model(fmt, tiny_encoder, tmp_path / "artifact")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("module", "fmt"), [("tf2onnx", "onnx"), ("ai_edge_litert.interpreter", "tflite")]
)
def test_missing_extra_names_it(module, fmt, tiny_encoder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError, match=r'pip install "eegdino-tf\[export\]"'):
        E.export_model(fmt, tiny_encoder, tmp_path / "artifact")
    weights = str(fixture_path("tiny_encoder.safetensors"))
    assert main(["export", fmt, weights, str(tmp_path / "artifact"), "--norm-groups", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{module!r} is not installed" in err and "[export]" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_shapes_and_options_are_errors(tiny_encoder, tmp_path):
    with pytest.raises(EEGDinoError, match="not a multiple of 200"):
        E.export_tflite(tiny_encoder, tmp_path / "m.tflite", samples=2100)
    with pytest.raises(EEGDinoError, match="20 channels"):
        E.export_onnx(tiny_encoder, tmp_path / "m.onnx", channels=20)
    with pytest.raises(ExportError, match="opset must be >= 17"):
        E.export_onnx(tiny_encoder, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ExportError, match="unknown quantization"):
        E.export_tflite(tiny_encoder, tmp_path / "m.tflite", quantize="int4")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(tmp_path, capsys):
    weights = str(fixture_path("tiny_classifier.safetensors"))
    args = ["export", "tflite", weights, str(tmp_path / "m.tflite"), "--classifier"]
    args += ["--norm-groups", "4", "--quantize", "float16", "--batch", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "eeg [2, 19, 2000] -> logits" in printed and "float16 weights" in printed
    assert "NRMSE" in printed and "ms" in printed
    assert (tmp_path / "m.tflite").exists()

    assert main(args) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    args = ["export", "onnx", weights, str(tmp_path / "m.onnx"), "--quantize", "float16"]
    assert main(args) == 2
    assert "--quantize applies to tflite exports, not onnx" in capsys.readouterr().err
