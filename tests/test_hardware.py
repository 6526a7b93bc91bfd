"""Precision per CPU class: bfloat16 rounding on every CPU, precision='auto', the warning.

Nothing here depends on the CPU the suite runs on: the CPU classes are described by
:class:`~eegdino_tf.hardware.Hardware` values, and the truncating fallback kernels that
AVX2-only CPUs get are reached on any CPU with ``TF_ENABLE_ONEDNN_OPTS=0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

from eegdino_tf import hardware, layers, models, runtime
from tests.helpers import REPO, fixture_path


def cpu(*flags: str, onednn: bool = True, gpus=()) -> hardware.Hardware:
    return hardware.Hardware("Test CPU", "x86_64", frozenset(flags), onednn, tuple(gpus))


AVX2 = cpu("avx2", "fma")
AVX512 = cpu("avx2", "fma", "avx512f")
AVX512_BF16 = cpu("avx2", "fma", "avx512f", "avx512_bf16")
AMX = cpu("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
ONEDNN_OFF = cpu("avx2", "fma", "avx512f", "avx512_bf16", onednn=False)
AMPERE = cpu("avx2", gpus=[("NVIDIA A100", (8, 0))])
PASCAL = cpu("avx2", gpus=[("Tesla P100", (6, 0))])


@pytest.mark.parametrize(
    ("hw", "small", "large"),
    [
        (AVX2, "float32", "float32"),
        (AVX512, "float32", "float32"),
        (AVX512_BF16, "float32", "mixed_bfloat16"),
        (AMX, "float32", "mixed_bfloat16"),
        (ONEDNN_OFF, "float32", "float32"),
        (AMPERE, "mixed_float16", "mixed_float16"),
        (PASCAL, "float32", "float32"),
    ],
)
def test_auto_precision_follows_the_hardware_class(hw, small, large):
    assert hardware.auto_precision(200, hw) == small
    assert hardware.auto_precision(1024, hw) == large


@pytest.mark.parametrize(
    ("hw", "missing"),
    [(AVX2, "no amx_bf16 or avx512_bf16"), (AVX512, "no amx_bf16"), (ONEDNN_OFF, "oneDNN is off")],
)
def test_slow_bf16_is_explained_with_the_missing_feature(hw, missing):
    reason = hardware.slow_precision_reason("mixed_bfloat16", hw)
    assert missing in reason and "precision='float32'" in reason
    assert hardware.slow_precision_reason("float32", hw) is None
    assert "without a GPU" in hardware.slow_precision_reason("mixed_float16", hw)


@pytest.mark.parametrize("hw", [AVX512_BF16, AMX, AMPERE])
def test_native_precisions_need_no_warning(hw):
    assert hardware.slow_precision_reason("mixed_bfloat16", hw) is None


def test_slow_precision_warns_once_per_process(monkeypatch):
    monkeypatch.setattr(hardware, "detect", lambda: AVX2)
    hardware._warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert hardware.resolve_precision("mixed_bfloat16", 200) == "mixed_bfloat16"
    assert [w.category for w in caught] == [hardware.PrecisionWarning]
    assert "amx_bf16" in str(caught[0].message)
    with pytest.raises(ValueError, match="'auto' or one of"):
        hardware.resolve_precision("bfloat16", 200)


@pytest.mark.parametrize(
    ("hw", "float32", "bf16"),
    [(AVX2, True, True), (AVX512, True, True), (AVX512_BF16, True, False), (AMPERE, True, True)],
)
def test_predict_uses_xla_where_it_measured_faster(monkeypatch, hw, float32, bf16):
    monkeypatch.setattr(hardware, "detect", lambda: hw)
    assert runtime.default_jit_compile("float32") is float32
    assert runtime.default_jit_compile("mixed_bfloat16") is bf16


def test_onednn_bf16_needs_avx512_and_no_isa_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert AVX512.onednn_bf16 and not AVX2.onednn_bf16 and not ONEDNN_OFF.onednn_bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not AVX512_BF16.onednn_bf16


def test_describe_names_cpu_flags_and_auto_choice():
    text = hardware.describe(AVX512_BF16)
    assert "Test CPU" in text and "avx512_bf16" in text and "no amx_bf16" in text
    assert "float32 (small)" in text and "mixed_bfloat16 (large)" in text
    assert hardware.detect().flag_report().keys() == set(hardware.REPORTED_FLAGS)


def _bf16(shape, seed):
    values = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return tf.cast(values, tf.bfloat16)


@pytest.mark.parametrize("fallback", [False, True])
def test_bf16_matmul_rounds_to_nearest(monkeypatch, fallback):
    """Native bfloat16 arithmetic: float32 accumulation, one round-to-nearest. TF's Eigen
    kernels truncate instead; the layers' contractions must not, whichever path runs."""
    if fallback:
        monkeypatch.setattr(hardware, "bf16_matmul_rounds_to_nearest", lambda: False)
    a, b = _bf16((64, 200), 0), _bf16((200, 96), 1)
    exact = tf.matmul(tf.cast(a, tf.float32), tf.cast(b, tf.float32)).numpy()
    nearest = tf.cast(tf.cast(exact, tf.bfloat16), tf.float32).numpy()
    for out in (layers.matmul(a, b), layers.einsum("ik,kj->ij", a, b)):
        assert out.dtype == tf.bfloat16
        out = tf.cast(out, tf.float32).numpy()
        if fallback:
            np.testing.assert_array_equal(out, nearest)
        # Whatever the kernel's summation order: no bias toward zero (truncation gives -2.8e-3).
        bias = np.mean((out - exact) * np.sign(exact)) / np.mean(np.abs(exact))
        assert abs(bias) < 1e-4
        assert np.mean(out == nearest) > 0.99


BF16_WITHOUT_ONEDNN = """
import json, sys
sys.path.insert(0, "tests")
import tensorflow as tf
from tests.helpers import CASES, load_io, nrmse
import eegdino_tf
io = load_io("small")
encoder = eegdino_tf.load_encoder(sys.argv[1], precision="mixed_bfloat16")
errors = {}
for jit in (False, True):
    run = encoder.inference_function(jit)
    for case in CASES:
        tokens = run(tf.constant(io[f"raw_uv{case}"])).numpy()
        errors[f"jit={jit}{case}"] = nrmse(tokens, io[f"tokens{case}"])
print(json.dumps(errors))
"""


def test_bf16_accuracy_with_the_fallback_kernels_of_avx2_cpus():
    """TF_ENABLE_ONEDNN_OPTS=0 gives any CPU the Eigen kernels that AVX2-only CPUs run
    bfloat16 with (without the rounding fix: NRMSE 1.9e-2 to 2.3e-2)."""
    path = fixture_path("small_encoder.safetensors")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", BF16_WITHOUT_ONEDNN, str(path)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 6
    assert max(errors.values()) <= 1e-2, errors


@pytest.mark.parametrize(
    ("precision", "limit"), [("mixed_float16", 5e-3), ("mixed_bfloat16", 1e-2)]
)
def test_mixed_precision_small_encoder_accuracy(precision, limit):
    """On this machine's kernels, through predict (whatever it picks), graph mode and XLA."""
    from tests.helpers import CASES, load_io, nrmse

    io = load_io("small")
    encoder = models.load_encoder(fixture_path("small_encoder.safetensors"), precision=precision)
    for case in CASES:
        x, expected = io[f"raw_uv{case}"], io[f"tokens{case}"]
        outputs = [encoder.predict(x, verbose=0)]
        outputs += [encoder.inference_function(jit)(tf.constant(x)) for jit in (False, True)]
        for tokens in outputs:
            assert tokens.dtype == "float32"
            assert nrmse(tokens, expected) <= limit
