"""Hostile and broken weight files: each ends in a correct model or one WeightsError/ConfigError
line, within memory and time bounds, and nothing is built before the file is checked."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import eegdino_tf
from eegdino_tf import models
from eegdino_tf import weights as W
from eegdino_tf.cli import main
from eegdino_tf.config import MAX_DEPTH, PRESETS, EEGDinoConfig
from eegdino_tf.errors import ConfigError, EEGDinoError, WeightsError
from tests.helpers import TINY, load_io, nrmse
from tests.helpers.hostile import outcome

TINY_ENCODER = TINY / "tiny_encoder.safetensors"
TINY_CLASSIFIER = TINY / "tiny_classifier.safetensors"
#: Bounds for one hostile file (the tiny fixture is 300 KB).
SMALL_BYTES = 64 * 2**20
FC1 = "encoder_layers.0.mlp.fc1.weight"


@pytest.fixture(scope="module")
def tiny() -> dict[str, np.ndarray]:
    return load_file(str(TINY_ENCODER))


def write(tmp_path: Path, tensors: dict, name: str = "w.safetensors") -> Path:
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


def write_raw(path: Path, header: Any, data: bytes) -> Path:
    """A safetensors file with exactly this header and data (any dtype name, any offsets)."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def entries_blob(entries: dict[str, tuple[str, Any, bytes]]) -> bytes:
    """A safetensors file of ``key -> (dtype name, shape, bytes)``, laid out contiguously."""
    header, offset = {}, 0
    for key, (dtype, shape, raw) in entries.items():
        header[key] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + b"".join(raw for _, _, raw in entries.values())


def write_entries(path: Path, entries: dict[str, tuple[str, Any, bytes]]) -> Path:
    path.write_bytes(entries_blob(entries))
    return path


def split(path: Path) -> tuple[dict, bytes]:
    """The header and data of a safetensors file."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def load_error(path: Path, load=eegdino_tf.load_encoder, **options) -> str:
    """The one-line error of loading ``path`` (fails unless it is the package's own)."""
    result = outcome(lambda: load(path, **{"norm_groups": 4, **options}), max_bytes=SMALL_BYTES)
    assert isinstance(result, EEGDinoError), f"loaded {path.name}"
    assert "\n" not in str(result)
    return str(result)


def cli_error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- the model is never built from unchecked shapes ------------------------------------------


@pytest.fixture
def nothing_built(monkeypatch):
    """Loading fails the test if it gets as far as building a model."""

    def build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked file")

    monkeypatch.setattr(models, "build_encoder", build)
    monkeypatch.setattr(models, "build_classifier", build)


def test_zero_element_fc1_is_refused_before_anything_is_built(
    tmp_path, tiny, capsys, nothing_built
):
    path = write(tmp_path, {**tiny, FC1: np.zeros((8_000_000, 0), np.float32)})
    message = load_error(path)
    assert f"mlp_dim from '{FC1}' shaped [8000000, 0]" in message
    assert "mlp_dim=8000000 must be an integer in 1..16384" in message
    assert isinstance(outcome(lambda: W.describe_weights(path, norm_groups=4)), WeightsError)
    assert "mlp_dim=8000000" in cli_error(capsys, "info", str(path), "--norm-groups", "4")
    within = write(tmp_path, {**tiny, FC1: np.zeros((5000, 0), np.float32)}, "within.safetensors")
    assert f"'{FC1}' has shape [5000, 0], expected [5000, 64]" in load_error(within)


def test_a_stray_layer_index_is_refused_not_built(tmp_path, tiny, capsys, nothing_built):
    stray = {**tiny, "encoder_layers.99999.norm1.weight": np.ones(64, np.float32)}
    path = write(tmp_path, stray)
    message = load_error(path)
    assert "layer indices must run from 0 without gaps" in message and "99999" in message
    assert "layer indices" in cli_error(capsys, "info", str(path))
    padded = write(tmp_path, {"encoder_layers.01.x": np.ones(1, np.float32), **tiny}, "p.st")
    assert "without gaps" in load_error(padded)


def test_depth_beyond_the_limit_is_refused(tiny):
    deep = dict(tiny)
    for i in range(MAX_DEPTH + 1):
        deep[f"encoder_layers.{i}.norm1.weight"] = np.ones(64, np.float32)
    with pytest.raises(WeightsError, match=f"depth={MAX_DEPTH + 1} must be an integer in 1"):
        W.infer_config(deep, norm_groups=4)
    with pytest.raises(ConfigError, match="depth=1000000 must be"):
        eegdino_tf.build_encoder("small", depth=1_000_000)


@pytest.mark.parametrize(
    ("key", "shape"),
    [("global_tokens", ()), ("global_tokens", (1, 1, 0)), ("patch_embedding.proj_in.3.weight", ())],
)
def test_degenerate_inferred_shapes_are_weights_errors(tmp_path, tiny, key, shape):
    message = load_error(write(tmp_path, {**tiny, key: np.zeros(shape, np.float32)}))
    assert f"key {key!r} has shape []" in message or "embed_dim=0 must be" in message


def test_a_huge_head_is_refused_before_it_is_built(tmp_path, nothing_built):
    tensors = load_file(str(TINY_CLASSIFIER))
    tensors["classifier.6.weight"] = np.zeros((8_000_000, 0), np.float32)
    path = write(tmp_path, tensors)
    message = load_error(path, eegdino_tf.load_classifier)
    assert "'classifier.6.weight' has shape [8000000, 0]" in message


def test_expected_shapes_are_the_built_models():
    config = EEGDinoConfig(64, 2, mlp_dim=128, conv_channels=(8, 8, 8), norm_groups=4)
    model = eegdino_tf.build_classifier(config, num_classes=3)
    pairs = [*W.encoder_weight_map(model.encoder), *W.head_weight_map(model.head)]
    built = {}
    for key, variable, permutation in pairs:
        shape = tuple(variable.shape)
        built[key] = (
            shape if permutation is None else tuple(shape[i] for i in np.argsort(permutation))
        )
    assert W.expected_shapes(config, 3) == built
    assert set(W.expected_shapes(config)) == {k for k, _, _ in W.encoder_weight_map(model.encoder)}


# --- values and dtypes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (np.nan, "1 NaN/Inf value(s)"),
        (np.inf, "1 NaN/Inf value(s)"),
        (1e300, "1 float64 value(s) beyond float32"),
    ],
)
def test_non_finite_weights_are_refused_unless_asked(tmp_path, tiny, value, problem):
    weight = tiny[FC1].astype(np.float64 if value == 1e300 else np.float32)
    weight[3, 5] = value
    path = write(tmp_path, {**tiny, FC1: weight})
    message = load_error(path)
    assert f"key '{FC1}' has {problem}" in message and "check_weights=False" in message
    assert "check_weights" in str(outcome(lambda: W.describe_weights(path, norm_groups=4)))
    model = eegdino_tf.load_encoder(path, norm_groups=4, check_weights=False)
    assert model.config.mlp_dim == 128
    assert W.describe_weights(path, norm_groups=4, check_weights=False)["config"]["depth"] == 2


def test_non_finite_head_weights_are_refused_and_the_cli_names_the_flag(tmp_path, capsys):
    tensors = load_file(str(TINY_CLASSIFIER))
    tensors["classifier.3.bias"][:2] = np.nan
    path = write(tmp_path, tensors)
    assert "'classifier.3.bias' has 2 NaN/Inf" in load_error(path, eegdino_tf.load_classifier)
    eegdino_tf.load_encoder(path, norm_groups=4)  # the encoder alone is finite
    err = cli_error(capsys, "info", str(path), "--norm-groups", "4")
    assert "pass --no-check-weights to load them anyway" in err
    assert main(["info", str(path), "--norm-groups", "4", "--no-check-weights"]) == 0
    eegdino_tf.load_classifier(path, norm_groups=4, check_weights=False)


@pytest.mark.parametrize("dtype", [np.int8, np.bool_, np.int64])
def test_non_floating_weights_are_refused_with_key_and_dtype(tmp_path, tiny, dtype, nothing_built):
    path = write(tmp_path, {**tiny, FC1: np.ones((128, 64), dtype)})
    name = np.dtype(dtype).name
    assert f"key '{FC1}' has dtype {name}, expected a float" in load_error(path)
    assert name in load_error(path, check_weights=False)


#: Bits per element of the safetensors dtypes NumPy has no type for.
ODD_DTYPES = {"C64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "F6_E2M3": 6, "F4": 4, "E8M0": 8}


@pytest.mark.parametrize("dtype", sorted(ODD_DTYPES))
def test_dtypes_numpy_cannot_hold_are_named(tmp_path, capsys, tiny, dtype):
    entries = {k: ("F32", v.shape, v.tobytes()) for k, v in tiny.items()}
    entries[FC1] = (dtype, (128, 64), bytes(128 * 64 * ODD_DTYPES[dtype] // 8))
    path = write_entries(tmp_path / "odd.safetensors", entries)
    message = load_error(path)
    if "cannot read" not in message:  # else this safetensors release does not know the dtype
        assert f"tensor '{FC1}' has dtype {dtype}, which eegdino-tf does not read" in message
    assert isinstance(outcome(lambda: W.describe_weights(path)), WeightsError)
    assert message.split(": ", 1)[1] in cli_error(capsys, "info", str(path))


@pytest.mark.parametrize(
    ("dtype", "name"), [(np.float16, "F16"), (ml_dtypes.bfloat16, "BF16"), (np.float64, "F64")]
)
def test_every_floating_dtype_loads(tmp_path, tiny, dtype, name):
    entries = {k: (name, v.shape, v.astype(dtype).tobytes()) for k, v in tiny.items()}
    path = write_entries(tmp_path / f"{name}.safetensors", entries)
    assert W.read_tensors(path)[FC1].dtype == np.dtype(dtype)
    io = load_io("tiny")
    tokens = eegdino_tf.load_encoder(path, norm_groups=4)(io["raw_uv_b1"]).numpy()
    assert nrmse(tokens, io["tokens_b1"]) <= (2e-6 if name == "F64" else 3e-2)


# --- GroupNorm groups: never guessed ---------------------------------------------------------


def test_a_width_without_a_released_size_needs_norm_groups(capsys):
    with pytest.raises(WeightsError, match=r"does not tell the GroupNorm group count") as err:
        eegdino_tf.load_encoder(TINY_ENCODER)
    assert "pass norm_groups=G, G one of [1, 2, 4, 8]" in str(err.value)
    info = W.describe_weights(TINY_ENCODER)
    assert info["config"]["norm_groups"] is None and info["size"] == "custom"
    assert "norm_groups=G" in info["norm_groups_unknown"]
    assert main(["info", str(TINY_ENCODER)]) == 0
    out = capsys.readouterr().out
    assert "GroupNorm groups unknown" in out and "pass --norm-groups G" in out
    assert W.describe_weights(TINY_ENCODER, norm_groups=4)["norm_groups_unknown"] is None


def test_metadata_of_another_writer_is_ignored_and_ours_damaged_is_one_error(tmp_path, tiny):
    """Only metadata eegdino-tf wrote is read; damaged, it is a WeightsError naming the file."""
    config = json.dumps(EEGDinoConfig(64, 2, conv_channels=(8, 8, 8), norm_groups=4).to_dict())
    ours = {"writer": "eegdino-tf 0.1.0", "layout": "released", "has_head": "false"}
    path = tmp_path / "w.safetensors"
    save_file(tiny, str(path), metadata={**ours, "writer": "someone else", "config": config})
    assert W.read_weights(path).metadata is None
    save_file(tiny, str(path), metadata={**ours, "config": config})
    assert W.read_weights(path).saved == {"num_heads": 8, "norm_groups": 4, "input_scale": 0.01}
    for damage in (
        {"config": "{not json"},
        {"config": config.replace('"norm_groups": 4', '"norm_groups": 3')},
        {"config": config.replace('"depth": 2, ', "")},
        {"layout": "keras"},
        {"has_head": "maybe"},
    ):
        save_file(tiny, str(path), metadata={**ours, "config": config, **damage})
        error = outcome(lambda: eegdino_tf.load_encoder(path))
        assert isinstance(error, WeightsError), (damage, error)
        assert str(error).startswith(f"{path}: the metadata eegdino-tf wrote is damaged")
        assert "\n" not in str(error)


def _fake(config: EEGDinoConfig) -> dict[str, np.ndarray]:
    """Tensors of this shape that take no memory (for the shape inference only)."""
    return {k: np.broadcast_to(np.float32(0), s) for k, s in W.expected_shapes(config).items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_released_shapes_take_their_groups_from_the_size_table(name):
    preset = PRESETS[name]
    assert W.infer_config(_fake(preset)) == preset  # medium: 8 groups (the guess said 16)
    other = preset.replace(conv_channels=(16, 32, preset.conv_channels[2]), norm_groups=1)
    with pytest.raises(WeightsError, match="does not tell the GroupNorm group count"):
        W.infer_config(_fake(other))


@pytest.mark.parametrize(
    ("groups", "shown"),
    [("0", "--norm-groups 0"), ("-4", "--norm-groups -4"), ("3", "--norm-groups 3 must divide")],
)
def test_bad_norm_groups_are_config_errors_naming_the_flag(capsys, groups, shown):
    with pytest.raises(ConfigError, match=f"norm_groups={groups}"):
        eegdino_tf.load_encoder(TINY_ENCODER, norm_groups=int(groups))
    assert shown in cli_error(capsys, "info", str(TINY_ENCODER), "--norm-groups", groups)


@pytest.mark.parametrize(
    "fields",
    [
        {"norm_groups": 0},
        {"norm_groups": True},
        {"num_heads": 0},
        {"num_heads": 7},
        {"depth": 0},
        {"mlp_dim": -1},
        {"embed_dim": 2.5},
        {"conv_channels": (25, 25)},
        {"conv_channels": (25, 0, 25)},
        {"conv_channels": "abc"},
        {"input_scale": float("nan")},
    ],
)
def test_config_validation_rejects_every_bad_field(fields):
    with pytest.raises(ConfigError, match=next(iter(fields))):
        PRESETS["small"].replace(**fields)


def test_num_classes_is_checked():
    with pytest.raises(ConfigError, match="num_classes=0 must be an integer"):
        eegdino_tf.build_classifier("small", num_classes=0, depth=1)


# --- broken files ----------------------------------------------------------------------------


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    header, data = split(TINY_ENCODER)
    raw = TINY_ENCODER.read_bytes()
    files = {
        "empty": b"",
        "short": b"\x01\x02\x03",
        "huge header length": struct.pack("<Q", 2**63) + raw[8:],
        "header past the end": struct.pack("<Q", len(raw)) + raw[8:],
        "header a list": b"",
        "header not json": struct.pack("<Q", 5) + b"{nope" + data,
    }
    paths = {n: tmp_path / f"{i}.safetensors" for i, n in enumerate(files)}
    for name, content in files.items():
        paths[name].write_bytes(content)
    write_raw(paths["header a list"], [], data)
    out_of_range = json.loads(json.dumps(header))
    out_of_range[FC1]["data_offsets"][1] += 10**9
    overlapping = json.loads(json.dumps(header))
    overlapping["global_tokens"]["data_offsets"] = overlapping[FC1]["data_offsets"]
    overlapping["global_tokens"]["shape"] = overlapping[FC1]["shape"]
    for name, bad in (("offsets out of range", out_of_range), ("overlapping", overlapping)):
        paths[name] = write_raw(tmp_path / f"{name.replace(' ', '_')}.safetensors", bad, data)
    return paths


def test_broken_safetensors_files_are_one_line_weights_errors(tmp_path, capsys):
    for name, path in _broken_files(tmp_path).items():
        for call in (W.read_tensors, W.describe_weights, eegdino_tf.load_encoder):
            result = outcome(lambda call=call, path=path: call(path), max_bytes=SMALL_BYTES)
            assert isinstance(result, WeightsError), (name, call.__name__, result)
            assert "\n" not in str(result) and str(path) in str(result), (name, str(result))
        cli_error(capsys, "info", str(path))


# --- fuzzing ---------------------------------------------------------------------------------

_HEADER, _DATA = split(TINY_ENCODER)
_KEYS = sorted(_HEADER)
_TENSORS = load_file(str(TINY_ENCODER))
#: Well-formed dtypes (bytes per element) for the "layout" mutation.
_LAYOUT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "BOOL": 1, "I64": 8}
_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="eegdino_fuzz_"))
_FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_numbers = st.one_of(
    st.integers(-3, 3),
    st.integers(0, 400_000),
    st.sampled_from([2**31, 2**32 + 1, 2**63, 10**30, 8_000_000]),
)
_values = st.one_of(
    _numbers,
    st.lists(_numbers, max_size=5),
    st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "BOOL", "C64", "F8_E4M3", "F4", "", None]),
    st.text(max_size=4),
)


@st.composite
def mutated_files(draw) -> bytes:
    """The tiny encoder with its header, shapes, dtypes, offsets or bytes mutated."""
    header = json.loads(json.dumps(_HEADER))
    data = bytearray(_DATA)
    kind = draw(st.sampled_from(["layout", "field", "drop", "add", "data", "flip", "truncate"]))
    key = draw(st.sampled_from(_KEYS))
    if kind == "layout":  # a well-formed file, one tensor reshaped / retyped: our checks
        shape = draw(st.lists(st.integers(0, 300), max_size=4).filter(lambda s: np.prod(s) < 1e5))
        dtype, itemsize = draw(st.sampled_from(list(_LAYOUT_DTYPES.items())))
        entries = {k: ("F32", _TENSORS[k].shape, _TENSORS[k].tobytes()) for k in _KEYS}
        size = int(np.prod(shape)) * itemsize
        entries[key] = (dtype, shape, (draw(st.binary(min_size=1, max_size=8)) * size)[:size])
        return entries_blob(entries)
    if kind == "field":
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[key][field] = draw(_values)
    elif kind == "drop":
        del header[key]
    elif kind == "add":
        header[draw(st.sampled_from(["encoder_layers.7.x", key + "x", "__metadata__"]))] = draw(
            st.sampled_from([header[key], {"a": "b"}, [1], 3])
        )
    elif kind == "data":
        at = draw(st.integers(0, len(data) - 4))
        data[at : at + 4] = draw(st.sampled_from([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f"]))
    blob = struct.pack("<Q", len(json.dumps(header))) + json.dumps(header).encode() + data
    if kind == "flip":
        at = draw(st.integers(0, 8 + len(json.dumps(header)) - 1))
        blob = blob[:at] + bytes([draw(st.integers(0, 255))]) + blob[at + 1 :]
    if kind == "truncate":
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    return blob


def _fuzz_file(blob: bytes) -> Path:
    path = _FUZZ_DIR / "fuzz.safetensors"
    path.write_bytes(blob)
    return path


@settings(_FUZZ, max_examples=400)
@given(mutated_files())
def test_fuzz_read_tensors(blob):
    path = _fuzz_file(blob)
    result = outcome(lambda: W.read_tensors(path), max_bytes=SMALL_BYTES, max_seconds=5)
    assert isinstance(result, (dict, WeightsError))
    describe = outcome(lambda: W.describe_weights(path, norm_groups=4), max_bytes=SMALL_BYTES)
    assert isinstance(describe, (dict, EEGDinoError))


@settings(_FUZZ, max_examples=40)
@given(mutated_files())
def test_fuzz_load_encoder(blob):
    path = _fuzz_file(blob)
    load = lambda: eegdino_tf.load_encoder(path, norm_groups=4)  # noqa: E731
    result = outcome(load, max_bytes=SMALL_BYTES, max_seconds=15)
    assert isinstance(result, (eegdino_tf.EEGDinoEncoder, EEGDinoError))
