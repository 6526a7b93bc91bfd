"""The torch-free ``torch.save`` reader: exact tensors, and refusals instead of code execution.

Checkpoints beyond the two fixtures are written here by hand, without PyTorch: a zip in the
``torch.save`` layout whose ``data.pkl`` is emitted opcode by opcode (:func:`dumps`), naming
``torch._utils._rebuild_tensor_v2`` and the storage types as plain globals.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from eegdino_tf.checkpoint import load_torch_checkpoint, read_state_dict
from tests.helpers import TINY
from tests.helpers.checkpoints import (
    Build,
    Call,
    Global,
    PersistentId,
    dumps,
    error_of,
    rewrite_zip,
    tensor,
    write_checkpoint,
)

PRETRAIN = TINY / "tiny_pretrain_checkpoint.pt"
FINETUNE = TINY / "tiny_finetune_checkpoint.pt"

# ---------------------------------------------------------------------------------------------
# A minimal protocol-2 pickle writer and torch.save zip writer
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The fixtures: exact tensors
# ---------------------------------------------------------------------------------------------


def test_pretraining_student_equals_encoder_fixture_and_teacher_differs():
    state = read_state_dict(PRETRAIN)
    encoder = load_file(str(TINY / "tiny_encoder.safetensors"))
    for key, expected in encoder.items():
        student = state[f"module.student.{key}"]
        assert student.dtype == np.float32 and student.flags.c_contiguous
        np.testing.assert_array_equal(student, expected)
        assert not np.array_equal(state[f"module.teacher.{key}"], expected), key
    index = state["module.student.encoder_layers.0.attn.relative_position_index"]
    assert index.dtype == np.int64


def test_finetune_checkpoint_equals_classifier_fixture():
    state = read_state_dict(FINETUNE)
    classifier = load_file(str(TINY / "tiny_classifier.safetensors"))
    assert state.keys() == classifier.keys()
    for key, expected in classifier.items():
        np.testing.assert_array_equal(state[key], expected)


def test_whole_checkpoint_keeps_plain_entries():
    checkpoint = load_torch_checkpoint(PRETRAIN)
    assert checkpoint["epoch"] == 7
    assert checkpoint["args"] == {"feature_size": 64, "num_layers": 2, "lr": 0.0005}
    assert checkpoint["optimizer"]["param_groups"][0]["params"] == [0]


# ---------------------------------------------------------------------------------------------
# Malicious pickles are refused, and nothing they name is imported or run
# ---------------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_os_system_pickle_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _RunsShell(f"touch {marker}")}, protocol=protocol)
    path = write_checkpoint(tmp_path / "evil.pt", payload, {})
    message = error_of(path)
    assert "refusing to load" in message
    assert f"{os.system.__module__}.system" in message  # posix.system (os.system) on Linux
    assert not marker.exists()


def test_payload_hidden_beside_the_tensors_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    weight = tensor("0", "FloatStorage", 2, 0, (2,), (1,))
    evil = Call(Global("builtins", "eval"), (f"open({str(marker)!r}, 'w')",))
    pickled = dumps({"state_dict": {"w": weight}, "args": evil})
    path = write_checkpoint(tmp_path / "evil.pt", pickled, {"0": np.zeros(2, "<f4").tobytes()})
    assert "builtins.eval" in error_of(path)
    assert not marker.exists()


def test_refused_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "planted_module_xyz.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pickled = dumps(Call(Global("planted_module_xyz", "anything"), ()))
    message = error_of(write_checkpoint(tmp_path / "evil.pt", pickled, {}))
    assert "planted_module_xyz.anything" in message
    assert "planted_module_xyz" not in sys.modules
    assert not marker.exists()


def test_pickle_cannot_alter_the_allowed_objects(tmp_path):
    """BUILD on a storage type (to swap its dtype for ``object``) fails: they are immutable."""
    storage_type = Build(Global("torch", "FloatStorage"), {"dtype": "O"})
    storage = PersistentId(("storage", storage_type, "0", "cpu", 1))
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    pickled = dumps({"w": Call(rebuild, (storage, 0, (1,), (1,)))})
    path = write_checkpoint(tmp_path / "tamper.pt", pickled, {"0": bytes(8)})
    assert "malformed checkpoint (AttributeError" in error_of(path)


# ---------------------------------------------------------------------------------------------
# Damaged and foreign files: one clear line each
# ---------------------------------------------------------------------------------------------


def test_truncated_zip(tmp_path):
    data = PRETRAIN.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt zip archive" in error_of(path)


def test_missing_storage_record_is_named(tmp_path):
    path = rewrite_zip(FINETUNE, tmp_path / "incomplete.pt", drop="/data/3")
    message = error_of(path)
    assert "incomplete" in message and "'tiny_finetune_checkpoint/data/3'" in message


def test_missing_data_pkl(tmp_path):
    path = rewrite_zip(FINETUNE, tmp_path / "no_pickle.pt", drop="/data.pkl")
    assert "no '<archive>/data.pkl' record" in error_of(path)


@pytest.mark.parametrize("storage_type", ["ComplexFloatStorage", "QInt8Storage"])
def test_unsupported_storage_type(tmp_path, storage_type):
    pickled = dumps({"w": tensor("0", storage_type, 1, 0, (1,), (1,))})
    path = write_checkpoint(tmp_path / "complex.pt", pickled, {"0": bytes(8)})
    message = error_of(path)
    assert f"unsupported storage type torch.{storage_type}" in message
    assert "FloatStorage" in message  # lists what is supported


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096).replace(b"\x80", b"\x00"))
    assert "not a torch.save checkpoint (not a zip archive" in error_of(path)


def test_legacy_torch_save_format(tmp_path):
    path = tmp_path / "legacy.pt"
    # What torch.save(..., _use_new_zipfile_serialization=False) starts with: a pickled magic.
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps({}))
    message = error_of(path)
    assert "legacy torch.save format" in message
    assert "torch.save(torch.load(f, weights_only=True), g)" in message


def test_directory_and_missing_file(tmp_path):
    assert "is a directory" in error_of(tmp_path)
    assert "checkpoint not found" in error_of(tmp_path / "absent.pt")


def test_storage_too_small_for_the_tensor(tmp_path):
    pickled = dumps({"w": tensor("0", "FloatStorage", 6, 2, (2, 3), (3, 1))})
    path = write_checkpoint(tmp_path / "small.pt", pickled, {"0": np.zeros(6, "<f4").tobytes()})
    message = error_of(path)
    assert "storage '0' holds 6 elements, too few" in message and "[2, 3]" in message


def test_storage_record_shorter_than_declared(tmp_path):
    pickled = dumps({"w": tensor("0", "FloatStorage", 6, 0, (6,), (1,))})
    path = write_checkpoint(tmp_path / "short.pt", pickled, {"0": bytes(20)})
    assert "holds 20 bytes, too few for 6 float32 elements" in error_of(path)


def test_malformed_pickle(tmp_path):
    path = write_checkpoint(tmp_path / "bad.pt", b"\x80\x02}(X", {})
    assert "malformed checkpoint" in error_of(path)


# ---------------------------------------------------------------------------------------------
# Dtypes, strides and offsets, against NumPy
# ---------------------------------------------------------------------------------------------

DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("storage_type", list(DTYPES))
def test_storage_dtypes_strides_and_offsets(tmp_path, storage_type, byteorder):
    dtype = np.dtype(DTYPES[storage_type])
    values = np.random.default_rng(1).normal(scale=40.0, size=30)
    storage = values.astype(dtype) if dtype != np.bool_ else values > 0
    raw = (storage.byteswap() if byteorder == "big" else storage).tobytes()
    pickled = dumps(
        {
            "model": {
                "contiguous": tensor("0", storage_type, 30, 0, (5, 6), (6, 1)),
                "transposed": tensor("0", storage_type, 30, 0, (6, 5), (1, 6)),
                "offset": tensor("0", storage_type, 30, 7, (2, 3, 2), (10, 1, 4)),
                "scalar": tensor("0", storage_type, 30, 29, (), ()),
                "empty": tensor("0", storage_type, 30, 0, (0, 4), (4, 1)),
            },
            "epoch": 3,
        }
    )
    path = write_checkpoint(tmp_path / "dtypes.pt", pickled, {"0": raw}, byteorder)
    state = read_state_dict(path)
    expected = {
        "contiguous": storage.reshape(5, 6),
        "transposed": storage.reshape(5, 6).T,
        "offset": np.lib.stride_tricks.as_strided(
            storage[7:], (2, 3, 2), tuple(s * dtype.itemsize for s in (10, 1, 4))
        ),
        "scalar": storage[29],
        "empty": storage[:0].reshape(0, 4),
    }
    for key, value in expected.items():
        assert state[key].dtype == dtype and state[key].flags.c_contiguous, key
        np.testing.assert_array_equal(state[key], value, strict=True)


def test_parameters_and_argparse_namespace(tmp_path):
    weight = tensor("0", "FloatStorage", 4, 0, (2, 2), (2, 1))
    hooks = Call(Global("collections", "OrderedDict"), ())
    parameter = Call(Global("torch._utils", "_rebuild_parameter"), (weight, True, hooks))
    pickled = dumps({"state_dict": {"w": parameter}})
    values = np.arange(4, dtype="<f4")
    state = read_state_dict(write_checkpoint(tmp_path / "p.pt", pickled, {"0": values.tobytes()}))
    np.testing.assert_array_equal(state["w"], values.reshape(2, 2))

    namespace = pickle.dumps({"args": argparse.Namespace(lr=0.1, layers=2)}, protocol=2)
    checkpoint = load_torch_checkpoint(write_checkpoint(tmp_path / "ns.pt", namespace, {}))
    assert vars(checkpoint["args"]) == {"lr": 0.1, "layers": 2}
    assert not isinstance(checkpoint["args"], argparse.Namespace)  # a plain stand-in


# ---------------------------------------------------------------------------------------------
# Which dict is the state dict
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "model_state_dict"])
def test_state_dict_is_found(tmp_path, wrap):
    flat = {"a": tensor("0", "FloatStorage", 3, 0, (3,), (1,))}
    pickled = dumps(flat if wrap is None else {wrap: flat, "epoch": 1})
    path = write_checkpoint(tmp_path / "s.pt", pickled, {"0": np.ones(3, "<f4").tobytes()})
    np.testing.assert_array_equal(read_state_dict(path)["a"], np.ones(3, np.float32))


def test_no_state_dict(tmp_path):
    path = write_checkpoint(tmp_path / "meta.pt", dumps({"epoch": 3, "note": "x"}), {})
    assert "no state dict found" in error_of(path) and "'epoch'" in error_of(path)


def test_state_dict_with_non_tensor_entries(tmp_path):
    pickled = dumps({"state_dict": {"a": 1, "b": "x"}})
    path = write_checkpoint(tmp_path / "bad.pt", pickled, {})
    assert "is not a state dict: 2 entries are not name -> tensor" in error_of(path)
