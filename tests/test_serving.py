"""TF Serving bundles: warm-up records the server's own protos read, narrow signatures equal to
Keras, and a models.config / batching file the server's protos parse. No model server installs
from the package registries, so each check is done the way the server does it: the warm-up is
replayed through ``tf.saved_model.load(...).signatures``, the config files are parsed as the
server's text protos."""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from eegdino_tf import artifact, serving
from eegdino_tf.cli import main
from eegdino_tf.errors import ExportError, MissingExtraError
from eegdino_tf.export import export_saved_model, probe_eeg
from tests.helpers import TINY, nrmse

#: ``BatchingParameters`` as tensorflow/serving declares it in
#: tensorflow_serving/servables/tensorflow/session_bundle_config.proto (the proto is not in
#: tensorflow-serving-api): name, number, type, wrapper or repeated.
BATCHING_FIELDS = [
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
]


def batching_parameters_message():
    """A message class built from :data:`BATCHING_FIELDS`, to parse the batching file."""
    from google.protobuf import wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="batching_parameters_test.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in BATCHING_FIELDS:
        field = message.field.add(name=name, number=number)
        if kind.endswith("Value"):
            field.type, field.type_name = types.TYPE_MESSAGE, f".google.protobuf.{kind}"
            field.label = types.LABEL_OPTIONAL
        elif kind == "repeated int64":
            field.type, field.label = types.TYPE_INT64, types.LABEL_REPEATED
        else:
            field.type, field.label = types.TYPE_BOOL, types.LABEL_OPTIONAL
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(descriptor)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, encoder):
    output = tmp_path_factory.mktemp("serving") / "eegdino"
    weights = TINY / "tiny_encoder.safetensors"
    report = export_saved_model(
        encoder, output, warmup="1,8", serving_config=True, weights_file=weights
    )
    return output, report


def test_warmup_records_parse_as_prediction_logs_one_per_batch_and_signature(bundle):
    output, _ = bundle
    logs = serving.read_warmup(output / "1")
    requests = [log.predict_log.request for log in logs]
    got = [
        (r.model_spec.signature_name, tuple(tf.make_ndarray(r.inputs["eeg"]).shape))
        for r in requests
    ]
    assert sorted(got) == sorted(
        (name, (batch, 19, 2000)) for name in ("serving_default", "embed") for batch in (1, 8)
    )
    assert len(logs) <= serving.MAX_WARMUP_RECORDS


def test_replayed_warmup_makes_the_first_real_call_as_fast_as_a_steady_one(bundle):
    """As the server does at load: replay every record, then serve. The first call on new
    data must take at most 2x a steady call (without the replay it takes far longer: the
    graph is optimised on its first run). Three tries, for a busy shared host."""
    output, _ = bundle
    eeg = tf.constant(probe_eeg(8, 19, 2000, seed=7))
    tries = []
    for _ in range(3):
        loaded = serving.replay_warmup(output / "1")
        embed = loaded.signatures["embed"]
        start = time.perf_counter()
        embed(eeg=eeg)
        first = time.perf_counter() - start
        steady = []
        for _ in range(5):
            start = time.perf_counter()
            embed(eeg=eeg)
            steady.append(time.perf_counter() - start)
        tries.append((first, float(np.median(steady))))
        if first <= 2 * tries[-1][1]:
            break
    print("first call / steady call (s):", tries)
    assert any(first <= 2 * steady for first, steady in tries), tries


def test_every_signature_equals_keras(bundle, encoder, classifier, tmp_path):
    output, _ = bundle
    eeg = probe_eeg(3, 19, 2000, seed=3)
    tokens = encoder.predict(eeg, verbose=0)
    expected = {"global_token": tokens[:, 0], "mean_token": tokens[:, 1:].mean(axis=1)}
    loaded = tf.saved_model.load(str(output / "1"))
    embed = {k: v.numpy() for k, v in loaded.signatures["embed"](eeg=tf.constant(eeg)).items()}
    assert set(embed) == set(expected)
    for name, value in expected.items():
        assert nrmse(embed[name], value) <= 1e-5, name
    full = loaded.signatures["serving_default"](eeg=tf.constant(eeg))
    assert nrmse(full["tokens"].numpy(), tokens) <= 1e-5

    export_saved_model(classifier, tmp_path / "cls")
    cls = tf.saved_model.load(str(tmp_path / "cls" / "1")).signatures["classify"]
    got = {k: v.numpy() for k, v in cls(eeg=tf.constant(eeg)).items()}
    logits = classifier.predict(eeg, verbose=0)
    assert set(got) == {"logits", "probabilities"}
    assert nrmse(got["logits"], logits) <= 1e-5
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, rtol=1e-6)


def test_an_embed_answer_for_one_10_s_window_is_a_few_kilobytes(bundle):
    output, _ = bundle
    loaded = tf.saved_model.load(str(output / "1"))
    eeg = tf.constant(probe_eeg(1, 19, 2000))
    response = predict_pb2.PredictResponse()
    for name, value in loaded.signatures["embed"](eeg=eeg).items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    full = predict_pb2.PredictResponse()
    for name, value in loaded.signatures["serving_default"](eeg=eeg).items():
        full.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    width = response.outputs["global_token"].tensor_shape.dim[-1].size
    assert response.ByteSize() <= 8 * width + 200 <= 8192
    assert full.ByteSize() > 50 * response.ByteSize()


def test_models_config_parses_as_the_servers_model_server_config(bundle):
    output, _ = bundle
    config = text_format.Parse(
        (output / serving.MODELS_CONFIG).read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "eegdino",
        str(output.resolve()),
        "tensorflow",
    )


def test_batching_file_uses_only_the_servers_field_names(bundle):
    output, _ = bundle
    params = text_format.Parse(
        (output / serving.BATCHING_FILE).read_text(), batching_parameters_message()()
    )
    assert list(params.allowed_batch_sizes)[-1] == params.max_batch_size.value
    assert params.max_batch_size.value in serving.BATCHING_SIZES
    assert params.num_batch_threads.value >= 1 and params.batch_timeout_micros.value >= 1


def test_batching_parameters_take_the_smallest_batch_within_10_percent_of_the_best():
    # 1 -> 100/s, 2 -> 160/s, 4 -> 190/s, 8 -> 200/s, 16 -> 200/s: 4 is within 10% of 200.
    timings = {1: 0.010, 2: 0.0125, 4: 4 / 190, 8: 0.040, 16: 0.080}
    params = serving.batching_parameters(timings, threads=2)
    assert params["max_batch_size"] == 4
    assert params["allowed_batch_sizes"] == [1, 2, 4]
    assert params["batch_timeout_micros"] == round(4 / 190 * 1e6 / 10)
    assert (params["num_batch_threads"], params["max_enqueued_batches"]) == (2, 8)


def test_the_record_names_the_weights_and_the_input(bundle):
    output, _ = bundle
    record = artifact.read_record(output)
    expected_sha = hashlib.sha256((TINY / "tiny_encoder.safetensors").read_bytes()).hexdigest()
    assert record["weights_sha256"] == expected_sha
    assert (record["sfreq"], record["window_s"], record["input_shape"]) == (
        200.0,
        10.0,
        [None, 19, 2000],
    )
    assert record["units"] == "uV" and len(record["channels"]) == 19
    assert record["signatures"]["embed"] == ["global_token", "mean_token"]


def test_warmup_sizes_are_sorted():
    assert serving.parse_batch_sizes("8, 1") == [1, 8]


@pytest.mark.parametrize("sizes", ["0", "1,x", "8,8", ","])
def test_bad_warmup_sizes_are_refused(sizes):
    with pytest.raises(ExportError, match="warmup must be"):
        serving.parse_batch_sizes(sizes)


def test_serving_flags_on_another_format_are_one_line_errors(tmp_path, capsys):
    weights = str(TINY / "tiny_encoder.safetensors")
    out = tmp_path / "m.tflite"
    code = main(["export", "tflite", weights, str(out), "--norm-groups", "4", "--warmup", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--warmup applies to saved-model exports, not tflite") and "\n" not in err
    assert not out.exists()


def test_warmup_without_the_serving_extra_names_it_and_writes_nothing(
    tmp_path, encoder, monkeypatch
):
    import builtins

    real_import = builtins.__import__

    def no_serving(name, *args, **kwargs):
        if name.startswith("tensorflow_serving"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_serving)
    monkeypatch.delitem(sys.modules, "tensorflow_serving.apis.prediction_log_pb2", raising=False)
    with pytest.raises(MissingExtraError, match=r"eegdino-tf\[serving\]"):
        export_saved_model(encoder, tmp_path / "m", warmup="1")
    assert not (tmp_path / "m").exists()


def test_a_folder_name_models_config_cannot_hold_matters_only_with_serving_config(
    tmp_path, encoder
):
    odd = tmp_path / 'model "a"'
    assert export_saved_model(encoder, odd).path == odd / "1"
    with pytest.raises(ExportError, match="cannot be written into models.config"):
        export_saved_model(encoder, tmp_path / 'model "b"', serving_config=True)
    assert not (tmp_path / 'model "b"').exists()
