"""The encoder and classifier equal the PyTorch reference to float32 rounding."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

import eegdino_tf
from eegdino_tf.errors import ConfigError
from eegdino_tf.layers import GraphForm, graph_form
from tests.helpers import CASES, OVERRIDES, fixture_path, load_io, nrmse

TOLERANCE = 2e-6


@functools.cache
def encoder(model: str):
    return eegdino_tf.load_encoder(fixture_path(f"{model}_encoder.safetensors"), **OVERRIDES[model])


@functools.cache
def classifier(model: str):
    path = fixture_path(f"{model}_classifier.safetensors")
    return eegdino_tf.load_classifier(path, **OVERRIDES[model])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", ["tiny", "small", "medium2"])
def test_encoder_tokens_match_reference(model, case):
    io = load_io(model)
    tokens = encoder(model)(io["raw_uv" + case]).numpy()
    assert tokens.shape == io["tokens" + case].shape
    assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("model", ["small", "medium2"])
def test_compiled_encoder_matches_reference(model, jit_compile):
    """Graph mode (grappler fuses matmul + bias + GELU into oneDNN kernels) and XLA keep
    float32 parity too; predict runs one of these."""
    io = load_io(model)
    run = encoder(model).inference_function(jit_compile)
    for case in CASES:
        tokens = run(tf.constant(io["raw_uv" + case])).numpy()
        assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE


@pytest.mark.parametrize("gelu", ["erf", "erfc"])
@pytest.mark.parametrize("softmax", ["op", "matmul"])
@pytest.mark.parametrize("model", ["tiny", "small"])
def test_every_graph_form_matches_reference(model, softmax, gelu):
    """Each way of writing GELU and the attention softmax (exporters' and XLA's) keeps
    float32 parity."""
    io = load_io(model)
    with graph_form(GraphForm(gelu=gelu, softmax=softmax)):
        for case in CASES:
            tokens = encoder(model)(io["raw_uv" + case]).numpy()
            assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE


@pytest.mark.parametrize("model", ["tiny", "small", "medium2"])
def test_the_onednn_graph_form_matches_reference(model):
    """The graph path's form where oneDNN runs bfloat16 (softmax in the compute dtype, each
    LayerNorm one oneDNN kernel) keeps float32 parity, traced as predict traces it."""
    from eegdino_tf.runtime import ONEDNN_GRAPH_FORM, graph_path_form

    if graph_path_form() != ONEDNN_GRAPH_FORM:
        pytest.skip("the oneDNN graph form runs only where oneDNN runs bfloat16 (not this CPU)")
    io, model = load_io(model), encoder(model)

    @tf.function
    def run(x):
        with graph_form(ONEDNN_GRAPH_FORM):
            return model(x, training=False)

    ops = {
        op.type
        for op in run.get_concrete_function(tf.constant(io["raw_uv"])).graph.get_operations()
    }
    assert "FusedBatchNormV3" in ops
    for case in CASES:
        tokens = run(tf.constant(io["raw_uv" + case])).numpy()
        assert nrmse(tokens, io["tokens" + case]) <= TOLERANCE


@pytest.mark.parametrize("head_dim", [4, 15, 25, 64])
def test_softmax_from_the_matmul_equals_softmax_then_matmul(head_dim):
    """Row sums from ``[v | 1 | 0...]``, whatever zeros the head width leaves room for."""
    from eegdino_tf.layers import _softmax_matmul

    rng = np.random.default_rng(head_dim)
    scores = rng.standard_normal((2, 3, 9, 9)) * 4
    v = rng.standard_normal((2, 9, 3, head_dim))
    expected = np.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores).numpy(), v)  # float64
    got = _softmax_matmul(tf.constant(scores, tf.float32), tf.constant(v, tf.float32)).numpy()
    assert got.shape == expected.shape
    assert nrmse(got, expected) <= 1e-6


@pytest.mark.parametrize("field", ["gelu", "softmax"])
def test_unknown_graph_form_is_refused_by_name(field):
    with pytest.raises(ConfigError, match=f"unknown {field} form 'tanh'; use one of"):
        GraphForm(**{field: "tanh"})


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("model", ["tiny", "small"])
def test_classifier_logits_match_reference(model, case):
    io = load_io(model)
    logits = classifier(model)(io["raw_uv" + case]).numpy()
    assert logits.shape == io["logits" + case].shape
    assert nrmse(logits, io["logits" + case]) <= TOLERANCE


@pytest.mark.parametrize("model", ["tiny", "small"])
def test_encoder_from_classifier_file_matches_reference(model):
    """``load_encoder`` on a finetuned classifier file loads its encoder, ignoring the head."""
    io = load_io(model)
    path = fixture_path(f"{model}_classifier.safetensors")
    tokens = eegdino_tf.load_encoder(path, **OVERRIDES[model])(io["raw_uv_b1"]).numpy()
    assert nrmse(tokens, io["tokens_b1"]) <= TOLERANCE


def test_size_and_depth_are_read_from_the_tensors():
    small = encoder("small")
    assert (small.config.name, small.config.embed_dim, small.config.depth) == ("small", 200, 12)
    assert small.config.norm_groups == 5 and small.config.num_heads == 8
    params = small.count_params()
    assert 4.2e6 < params < 4.6e6, params
    assert np.isclose(encoder("tiny").config.mlp_dim, 128)
