"""Weights: read a checkpoint, recognise its layout, infer its config, port it into Keras.

Three steps, kept apart as in keras-hub's converters:

1. :func:`read_tensors` reads a ``.safetensors`` file (or a ``.pt`` checkpoint, through the
   torch-free reader in :mod:`eegdino_tf.checkpoint`) into NumPy arrays.
2. :func:`normalize_state_dict` renames every layout users hold (released names with or
   without ``module.student.`` / ``encoder.``, braindecode's ``final_layer.*`` head, the
   eegdino-rs layout) to the released names in PyTorch layout, and sets aside the entries
   that inference never uses (teacher, projector, loss state, ``relative_position_index``).
   :func:`infer_config` reads the model's shape off those tensors.
3. :func:`encoder_weight_map` / :func:`head_weight_map` pair each released key with its Keras
   variable and a small layout hook (``[out, in] -> [in, out]`` for a Linear, ``OIHW -> HWIO``
   for a Conv2d); :func:`assign_weights` fills every variable exactly once and fails on a
   missing key, an unexpected key or a wrong shape.

The key map of every layout is in ``docs/architecture.md``, "Weights".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import (
    MAX_CHANNELS,
    MAX_CLASSES,
    SPECTRAL_BINS,
    TIME_KERNEL,
    EEGDinoConfig,
    divisors,
    preset_norm_groups,
)
from eegdino_tf.errors import ConfigError, WeightsError

# ---------------------------------------------------------------------------------------------
# 1. Reading
# ---------------------------------------------------------------------------------------------

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
#: Largest safetensors header read (the large model's holds about 40 KB of JSON).
MAX_HEADER_BYTES = 4 * 2**20
#: safetensors dtypes NumPy can hold (bfloat16 through ``ml_dtypes``); any other (``F8_*``,
#: ``F4``, ...) is refused by name. Integer and bool entries are read so that the buffers
#: inference ignores can be dropped; as weights, only floating dtypes are accepted.
SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bfloat16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file or a ``torch.save`` checkpoint, as NumPy."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weight file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; pass a .safetensors or .pt file")
    if path.suffix.lower() in TORCH_SUFFIXES:
        from eegdino_tf.checkpoint import read_state_dict

        return read_state_dict(path)
    try:
        return _read_safetensors(path)
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror or err}") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file whose header the safetensors library validated
    (offsets in range, contiguous, sized by shape and dtype), read from their offsets."""
    import ml_dtypes
    from safetensors import SafetensorError, safe_open

    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if size > MAX_HEADER_BYTES:
            raise _unreadable(path, f"header of {size} bytes, over {MAX_HEADER_BYTES}")
        try:
            with safe_open(str(path), framework="np"):
                pass
        except (SafetensorError, OSError, ValueError) as err:
            raise _unreadable(path, str(err).splitlines()[0] if str(err) else "") from None
        header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        tensors = {}
        for key, entry in header.items():
            name = SAFETENSORS_DTYPES.get(entry["dtype"])
            if name is None:
                raise WeightsError(
                    f"{path}: tensor {key!r} has dtype {entry['dtype']}, which eegdino-tf does "
                    "not read; weights must be float16, bfloat16, float32 or float64"
                )
            dtype = np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
            begin, end = entry["data_offsets"]
            data = bytearray(end - begin)
            handle.seek(8 + size + begin)
            if handle.readinto(data) != len(data) or len(data) != (
                math.prod(entry["shape"]) * dtype.itemsize
            ):
                raise _unreadable(path, f"tensor {key!r} changed while it was read")
            tensors[key] = np.frombuffer(data, dtype).reshape(entry["shape"])
    return tensors


def _unreadable(path: Path, reason: str) -> WeightsError:
    """The error for a file that is not a readable safetensors file, saying what it is if known."""
    other = _other_format(path)
    if other:
        return WeightsError(
            f"{path} is {other}, not a weight file; weights are read from .safetensors "
            "or torch.save (.pt) files"
        )
    return WeightsError(
        f"cannot read {path} as safetensors ({reason or 'unreadable'}); the file is truncated, "
        "corrupt or not a safetensors file"
    )


#: Leading bytes of the model formats people confuse with weight files.
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a Keras .keras model, or a .npz)"),
    (b"\x89HDF", "an HDF5 file (a legacy Keras .h5 model)"),
)


def _other_format(path: Path) -> str | None:
    """What a file that failed to read as safetensors is, from its first bytes, if known."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3":
        return "a TFLite flatbuffer"
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


# ---------------------------------------------------------------------------------------------
# 2. Layouts
# ---------------------------------------------------------------------------------------------

#: Head keys in the original finetuning layout, and braindecode's names for them.
BRAINDECODE_HEAD = {
    "final_layer.token_proj.0.": "full_linear.",
    "final_layer.time_proj.0.": "channel_linear.",
    "final_layer.classifier.": "classifier.",
}
HEAD_KEY = re.compile(r"^(full_linear|channel_linear|classifier\.[036])\.(weight|bias)$")

#: eegdino-rs renames (applied to the key after the encoder prefix).
RS_RENAMES = {
    "patch_embedding.proj_in.conv1.": "patch_embedding.proj_in.0.",
    "patch_embedding.proj_in.norm1.": "patch_embedding.proj_in.1.",
    "patch_embedding.proj_in.conv2.": "patch_embedding.proj_in.3.",
    "patch_embedding.proj_in.norm2.": "patch_embedding.proj_in.4.",
    "patch_embedding.proj_in.conv3.": "patch_embedding.proj_in.6.",
    "patch_embedding.proj_in.norm3.": "patch_embedding.proj_in.7.",
    "patch_embedding.time_encoding.": "patch_embedding.time_encoding.0.",
    "patch_embedding.spectral_proj.": "patch_embedding.spectral_proj.0.",
}
#: Released-name keys whose 2-D weight eegdino-rs stores transposed (``[in, out]``).
RS_TRANSPOSED = re.compile(
    r"^(patch_embedding\.(spectral_proj\.0|channel_embedding)"
    r"|encoder_layers\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2))\.weight$"
)

#: Entries inference never uses, with the reason reported when they are dropped.
IGNORED = (
    (re.compile(r"relative_position_index$"), "unused relative_position_index buffer"),
    (re.compile(r"(^|\.)teacher[._]"), "DINO teacher network (pretraining only)"),
    (re.compile(r"(head|projector)[._]"), "pretraining projection head"),
    (re.compile(r"(loss|center)"), "pretraining loss state"),
)


@dataclasses.dataclass
class NormalizedWeights:
    """A state dict in released key names and PyTorch layout.

    Attributes:
        tensors: encoder keys (no prefix) and, if present, head keys (``full_linear.*``...).
        layout: what was detected: ``"released"``, ``"pretraining"``, ``"finetuning"``,
            ``"braindecode"`` or ``"eegdino-rs"``.
        dropped: keys set aside, each with the reason.
        source_keys: canonical key -> the key as it appeared in the file (for messages).
    """

    tensors: dict[str, np.ndarray]
    layout: str
    dropped: dict[str, str]
    source_keys: dict[str, str]

    @property
    def has_head(self) -> bool:
        return any(HEAD_KEY.match(k) for k in self.tensors)

    def encoder_tensors(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.tensors.items() if not HEAD_KEY.match(k)}


def _encoder_prefix(keys: list[str]) -> str:
    """The prefix in front of the encoder keys, found from where ``global_tokens`` sits."""
    candidates = sorted(
        {k[: -len("global_tokens")] for k in keys if k.endswith("global_tokens")}
        - {p for p in (k[: -len("global_tokens")] for k in keys) if "teacher" in p}
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsError(
            "no 'global_tokens' tensor found, so this is not an EEG-DINO encoder checkpoint "
            f"(first keys: {sorted(keys)[:5]})"
        )
    student = [c for c in candidates if "student" in c]
    if len(student) == 1:
        return student[0]
    raise WeightsError(f"several encoders in one file (prefixes {candidates}); keep one")


def normalize_state_dict(tensors: dict[str, np.ndarray]) -> NormalizedWeights:
    """Rename any supported layout to released names in PyTorch layout (see module doc)."""
    prefix = _encoder_prefix(list(tensors))
    is_rs = any(".proj_in.conv1." in k for k in tensors)
    layout = "eegdino-rs" if is_rs else "released"
    if prefix.startswith("module.student."):
        layout = "pretraining"
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key, value in tensors.items():
        reason = next((why for pattern, why in IGNORED if pattern.search(key)), None)
        name = key
        for old, new in BRAINDECODE_HEAD.items():
            if key.startswith(old):
                name, layout = new + key[len(old) :], "braindecode"
        if HEAD_KEY.match(name):
            if prefix == "encoder." and layout == "released":
                layout = "finetuning"
        elif key.startswith(prefix) and reason is None:
            name = key[len(prefix) :]
            for old, new in RS_RENAMES.items():
                if is_rs and name.startswith(old):
                    name = new + name[len(old) :]
            if is_rs and RS_TRANSPOSED.match(name) and np.ndim(value) == 2:
                value = np.ascontiguousarray(np.transpose(value))
        elif reason is not None:
            dropped[key] = reason
            continue
        if name in out:
            raise WeightsError(f"keys {source[name]!r} and {key!r} both map to {name!r}")
        out[name], source[name] = value, key
    return NormalizedWeights(out, layout, dropped, source)


def to_rs_layout(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Released encoder names (PyTorch layout) -> the eegdino-rs converter layout."""
    out = {}
    for key, value in tensors.items():
        name = key
        if RS_TRANSPOSED.match(key) and np.ndim(value) == 2:
            value = np.ascontiguousarray(np.transpose(value))
        for rs_name, released in RS_RENAMES.items():
            if name.startswith(released):
                name = rs_name + name[len(released) :]
        out[name] = value
    return out


def infer_config(tensors: dict[str, np.ndarray], **overrides: Any) -> EEGDinoConfig:
    """The model shape, read off released-name tensors (before anything is built).

    ``overrides`` (e.g. ``norm_groups=4``, ``num_heads=16``) win over what is inferred. A file
    does not hold the GroupNorm group count: it is the size table's for a released shape, and
    for any other it must be given (``norm_groups=``), or this raises.
    """
    config, groups = infer_shape(tensors, **overrides)
    if groups is None:
        raise WeightsError(_unknown_groups(config, "so it cannot be loaded without it"))
    return config


def infer_shape(
    tensors: dict[str, np.ndarray], **overrides: Any
) -> tuple[EEGDinoConfig, int | None]:
    """The shape the tensors tell, checked within the limits of :mod:`eegdino_tf.config`, with
    ``overrides``; and the GroupNorm group count, None when unknown. For callers that need no
    group count (conversion, description): when it is None, the config's ``norm_groups`` is a
    stand-in 1 (no tensor's shape depends on it) and the config must not be built.

    Bad tensors raise :class:`WeightsError`, bad overrides :class:`ConfigError`.
    """

    def first(key: str, axis: int) -> int:
        if key not in tensors:
            raise WeightsError(f"missing key {key!r}, needed to infer the model's shape")
        shape = np.shape(tensors[key])
        if not shape:
            raise WeightsError(f"key {key!r} has shape [], expected a tensor")
        return int(shape[axis])

    layers = {m.group(1) for k in tensors if (m := re.match(r"encoder_layers\.(\d+)\.", k))}
    if not layers:
        raise WeightsError("no 'encoder_layers.*' tensors found; the checkpoint has no layers")
    if layers != {str(i) for i in range(len(layers))}:
        found = sorted(layers, key=lambda i: (len(i), i))
        shown = found if len(found) <= 5 else [*found[:4], "...", found[-1]]
        raise WeightsError(
            f"layer indices must run from 0 without gaps: found encoder_layers.{{i}} for i in "
            f"{', '.join(shown)} ({len(found)} indices), expected 0..{len(found) - 1}"
        )
    conv = tuple(first(f"patch_embedding.proj_in.{i}.weight", 0) for i in (0, 3, 6))
    embed_dim = first("global_tokens", -1)
    mlp_dim = first("encoder_layers.0.mlp.fc1.weight", 0)
    try:
        config = EEGDinoConfig(
            embed_dim, len(layers), mlp_dim=mlp_dim, conv_channels=conv, norm_groups=1
        )
    except ConfigError as err:
        origins = {"embed_dim": "global_tokens", "mlp_dim": "encoder_layers.0.mlp.fc1.weight"}
        named = [
            f"{field} from {key!r} shaped {list(np.shape(tensors[key]))}"
            for field, key in origins.items()
            if f"{field}=" in str(err)
        ]
        where = f" ({'; '.join(named)})" if named else ""
        raise WeightsError(f"the tensors do not form a valid model{where}: {err}") from None
    groups = overrides.get("norm_groups", preset_norm_groups(embed_dim, conv))
    return config.replace(**{**overrides, "norm_groups": 1 if groups is None else groups}), groups


def _unknown_groups(config: EEGDinoConfig, consequence: str) -> str:
    """Why the GroupNorm group count is unknown, and what to pass."""
    return (
        f"the file does not tell the GroupNorm group count: D={config.embed_dim} with conv "
        f"widths {list(config.conv_channels)} matches no released size, {consequence}; pass "
        f"norm_groups=G, G one of {divisors(config.conv_channels)} (what the model was "
        "trained with)"
    )


def num_classes(weights: NormalizedWeights) -> int:
    """The class count of a file's classification head, from its last layer."""
    key = "classifier.6.weight"
    if key not in weights.tensors:
        raise WeightsError(f"missing key {key!r} (the head's last layer)")
    shape = np.shape(weights.tensors[key])
    if not shape or not 1 <= shape[0] <= MAX_CLASSES:
        raise WeightsError(
            f"key {weights.source_keys.get(key, key)!r} has shape {list(shape)}; its first "
            f"dimension is the class count, which must be 1..{MAX_CLASSES}"
        )
    return int(shape[0])


def describe_weights(
    path: str | os.PathLike, *, check_weights: bool = True, **overrides: Any
) -> dict[str, Any]:
    """Layout, size, shape, parameter count and head of a weight file, without building it.

    ``overrides`` are config fields the tensors cannot tell (``norm_groups``, ``num_heads``).
    The tensors are checked as the loaders check them (:func:`validate_weights`). Where the
    group count is unknown (no released size has this shape and no ``norm_groups``), the
    returned ``config["norm_groups"]`` is None and ``"norm_groups_unknown"`` says what to pass.
    """
    normalized = normalize_state_dict(read_tensors(path))
    config, groups = infer_shape(normalized.tensors, **overrides)
    head = normalized.has_head
    classes = num_classes(normalized) if head else None
    validate_weights(normalized, config, num_classes=classes, check_finite=check_weights)
    return {
        "layout": normalized.layout,
        "size": "custom" if groups is None else config.name,
        "config": {**config.to_dict(), "norm_groups": groups},
        "norm_groups_unknown": None if groups else _unknown_groups(config, "so it is unknown"),
        "encoder_parameters": int(sum(v.size for v in normalized.encoder_tensors().values())),
        "head": head,
        "num_classes": classes,
        "dropped": normalized.dropped,
    }


def expected_shapes(
    config: EEGDinoConfig, num_classes: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Every released key of an encoder of this shape (and of its head, given
    ``num_classes``) with its tensor shape in PyTorch layout: what a file must hold."""
    d = config.embed_dim

    def linear(key: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
        return {f"{key}.weight": (n_out, n_in), f"{key}.bias": (n_out,)}

    def norm(key: str, width: int) -> dict[str, tuple[int, ...]]:
        return {f"{key}.weight": (width,), f"{key}.bias": (width,)}

    shapes: dict[str, tuple[int, ...]] = {"global_tokens": (1, 1, d)}
    c_in = 1
    for index, (width, conv) in zip((0, 3, 6), config.conv_blocks, strict=True):
        key = f"patch_embedding.proj_in.{index}"
        shapes |= {f"{key}.weight": (width, c_in, 1, conv.kernel), f"{key}.bias": (width,)}
        shapes |= norm(f"patch_embedding.proj_in.{index + 1}", width)
        c_in = width
    shapes |= linear("patch_embedding.spectral_proj.0", SPECTRAL_BINS, d)
    shapes |= linear("patch_embedding.channel_embedding", MAX_CHANNELS, d)
    shapes |= {
        "patch_embedding.time_encoding.0.weight": (d, 1, 1, TIME_KERNEL),
        "patch_embedding.time_encoding.0.bias": (d,),
    }
    for i in range(config.depth):
        key = f"encoder_layers.{i}"
        shapes |= norm(f"{key}.norm1", d)
        shapes |= {f"{key}.attn.qkv.weight": (3 * d, d)}
        shapes |= {f"{key}.attn.q_bias": (d,), f"{key}.attn.v_bias": (d,)}
        shapes |= linear(f"{key}.attn.proj", d, d)
        shapes |= norm(f"{key}.norm2", d)
        shapes |= linear(f"{key}.mlp.fc1", d, config.mlp_dim)
        shapes |= linear(f"{key}.mlp.fc2", config.mlp_dim, d)
    if num_classes is not None:
        shapes |= linear("full_linear", d, d) | linear("channel_linear", d, d)
        shapes |= linear("classifier.0", d, d // 2) | linear("classifier.3", d // 2, d // 4)
        shapes |= linear("classifier.6", d // 4, num_classes)
    return shapes


#: Weight dtypes the loaders accept (each is cast to float32 on assignment).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: Problems listed in one error before the rest are only counted.
MAX_REPORTED = 10


def validate_weights(
    weights: NormalizedWeights,
    config: EEGDinoConfig,
    *,
    num_classes: int | None = None,
    check_finite: bool = True,
) -> None:
    """Check the tensors against what ``config`` implies, before any model is built.

    Every key of :func:`expected_shapes` (the head's only given ``num_classes``; otherwise head
    keys are ignored) must be present with its shape and no other key, each a floating dtype
    (:data:`FLOAT_DTYPES`); with ``check_finite``, every value finite in float32. Raises one
    :class:`WeightsError` listing the problems.
    """
    expected = expected_shapes(config, num_classes)
    problems = _shape_problems(expected, weights, ignore_head=num_classes is None)
    values = []
    for key in expected:
        if key not in weights.tensors:
            continue
        name, value = weights.source_keys.get(key, key), weights.tensors[key]
        if value.dtype.name not in FLOAT_DTYPES:
            problems.append(f"key {name!r} has dtype {value.dtype.name}, expected a float")
        elif check_finite:
            values += _non_finite(name, value)
    hint = "; pass check_weights=False to load them anyway" if values else ""
    _raise_problems(problems + values, hint)


def _non_finite(name: str, value: np.ndarray) -> list[str]:
    """What is not finite in float32 about one tensor, if anything."""
    finite = np.isfinite(value)
    problems = []
    if bad := int(value.size - np.count_nonzero(finite)):
        problems.append(f"key {name!r} has {bad} NaN/Inf value(s)")
    if value.dtype == np.float64:
        big = int(np.count_nonzero(finite & (np.abs(value) > np.finfo(np.float32).max)))
        if big:
            problems.append(f"key {name!r} has {big} float64 value(s) beyond float32's range")
    return problems


def _shape_problems(
    expected: dict[str, tuple[int, ...]], weights: NormalizedWeights, *, ignore_head: bool
) -> list[str]:
    """Missing keys, shape mismatches and unexpected keys (shapes in PyTorch layout)."""
    source = weights.source_keys
    problems = []
    for key, shape in expected.items():
        if key not in weights.tensors:
            problems.append(f"missing key {key!r} (expected shape {list(shape)})")
        elif np.shape(weights.tensors[key]) != shape:
            problems.append(
                f"key {source.get(key, key)!r} has shape {list(np.shape(weights.tensors[key]))}"
                f", expected {list(shape)}"
            )
    problems += [
        f"unexpected key {source.get(k, k)!r} (shape {list(np.shape(v))})"
        for k, v in weights.tensors.items()
        if k not in expected and not (ignore_head and HEAD_KEY.match(k))
    ]
    return problems


def _raise_problems(problems: list[str], hint: str = "") -> None:
    """One WeightsError listing ``problems`` (the first :data:`MAX_REPORTED`), if any."""
    if not problems:
        return
    shown = (
        problems
        if len(problems) <= MAX_REPORTED
        else [*problems[:MAX_REPORTED], f"and {len(problems) - MAX_REPORTED} more"]
    )
    raise WeightsError(f"{len(problems)} problem(s) loading weights: {'; '.join(shown)}{hint}")


# ---------------------------------------------------------------------------------------------
# 3. Porting into Keras
# ---------------------------------------------------------------------------------------------

#: A layout hook: the axis permutation from the PyTorch tensor to the Keras variable.
LINEAR = (1, 0)  # Linear [out, in] -> Dense [in, out]
CONV = (2, 3, 1, 0)  # Conv2d [out, in, kh, kw] -> Conv2D [kh, kw, in, out]
DEPTHWISE = (2, 3, 0, 1)  # depthwise Conv2d [D, 1, kh, kw] -> DepthwiseConv2D [kh, kw, D, 1]
AS_IS = None


def _port_linear(key: str, dense) -> Iterator[tuple]:
    yield f"{key}.weight", dense.kernel, LINEAR
    if dense.bias is not None:
        yield f"{key}.bias", dense.bias, AS_IS


def _port_norm(key: str, norm) -> Iterator[tuple]:
    yield f"{key}.weight", norm.gamma, AS_IS
    yield f"{key}.bias", norm.beta, AS_IS


def encoder_weight_map(encoder) -> Iterator[tuple]:
    """``(released key, Keras variable, layout hook)`` for every encoder weight."""
    pe = encoder.get_layer("patch_embedding")
    yield "global_tokens", encoder.get_layer("global_token").token, AS_IS
    convs = (pe.temporal.conv1, pe.temporal.conv2, pe.temporal.conv3)
    norms = (pe.temporal.norm1, pe.temporal.norm2, pe.temporal.norm3)
    for index, conv, norm in zip((0, 3, 6), convs, norms, strict=False):
        yield f"patch_embedding.proj_in.{index}.weight", conv.kernel, CONV
        yield f"patch_embedding.proj_in.{index}.bias", conv.bias, AS_IS
        yield from _port_norm(f"patch_embedding.proj_in.{index + 1}", norm)
    yield from _port_linear("patch_embedding.spectral_proj.0", pe.spectral_proj)
    yield from _port_linear("patch_embedding.channel_embedding", pe.channel_embedding)
    yield "patch_embedding.time_encoding.0.weight", pe.time_encoding.kernel, DEPTHWISE
    yield "patch_embedding.time_encoding.0.bias", pe.time_encoding.bias, AS_IS
    for i in range(encoder.depth):
        block, key = encoder.get_layer(f"encoder_layer_{i}"), f"encoder_layers.{i}"
        yield from _port_norm(f"{key}.norm1", block.norm1)
        yield from _port_linear(f"{key}.attn.qkv", block.attn.qkv)
        yield f"{key}.attn.q_bias", block.attn.q_bias, AS_IS
        yield f"{key}.attn.v_bias", block.attn.v_bias, AS_IS
        yield from _port_linear(f"{key}.attn.proj", block.attn.proj)
        yield from _port_norm(f"{key}.norm2", block.norm2)
        yield from _port_linear(f"{key}.mlp.fc1", block.mlp.fc1)
        yield from _port_linear(f"{key}.mlp.fc2", block.mlp.fc2)


def head_weight_map(head) -> Iterator[tuple]:
    """``(released key, Keras variable, layout hook)`` for every classification-head weight."""
    yield from _port_linear("full_linear", head.full_linear)
    yield from _port_linear("channel_linear", head.channel_linear)
    # The reference's head MLP is a torch Sequential: Linear, GELU, Dropout at 0/1/2, ...
    yield from _port_linear("classifier.0", head.hidden1)
    yield from _port_linear("classifier.3", head.hidden2)
    yield from _port_linear("classifier.6", head.logits)


def assign_weights(
    weight_map: Iterator[tuple], weights: NormalizedWeights, *, ignore_head: bool = False
) -> None:
    """Fill every variable of ``weight_map`` exactly once from ``weights``; strict.

    Raises :class:`WeightsError` naming each missing key, each unexpected key and each shape
    mismatch (with both shapes, in PyTorch layout). Nothing is assigned unless all match.
    The loaders run :func:`validate_weights` first, so nothing is built for a bad file.
    """
    targets, filled = {}, set()
    for key, variable, permutation in weight_map:
        assert id(variable) not in filled, f"{variable.path} mapped twice"  # a bug in the map
        filled.add(id(variable))
        shape = tuple(variable.shape)
        if permutation is not AS_IS:
            shape = tuple(shape[i] for i in np.argsort(permutation))
        targets[key] = (variable, permutation, shape)
    expected = {key: shape for key, (_, _, shape) in targets.items()}
    _raise_problems(_shape_problems(expected, weights, ignore_head=ignore_head))
    for key, (variable, permutation, _) in targets.items():
        value = np.asarray(weights.tensors[key], dtype=np.float32)
        variable.assign(value if permutation is AS_IS else value.transpose(permutation))


# ---------------------------------------------------------------------------------------------
# 4. Writing back out
# ---------------------------------------------------------------------------------------------

#: Layouts :func:`save_weights` writes: the original finetuning code's (``encoder.*`` and the
#: head), braindecode ``EEGDINO``'s (un-prefixed encoder, ``final_layer.*`` head), and the
#: released encoder alone.
SAVE_LAYOUTS = ("finetuning", "braindecode", "released")


def model_tensors(model: Any, layout: str = "finetuning") -> dict[str, np.ndarray]:
    """Every weight of a Keras encoder or classifier as float32 PyTorch-layout tensors under
    ``layout``'s key names (:data:`SAVE_LAYOUTS`); the inverse of loading."""
    if layout not in SAVE_LAYOUTS:
        raise WeightsError(f"unknown layout {layout!r}; choose one of {SAVE_LAYOUTS}")
    head = getattr(model, "head", None)
    encoder = model.encoder if head is not None else model
    if layout != "released" and head is None:
        raise WeightsError(
            f"the {layout} layout holds a classifier (encoder + head), and this model is an "
            "encoder; save it with layout='released'"
        )
    prefix = "encoder." if layout == "finetuning" else ""
    pairs = [(prefix + key, v, p) for key, v, p in encoder_weight_map(encoder)]
    if layout != "released":
        renames = {ours: theirs for theirs, ours in BRAINDECODE_HEAD.items()}
        for key, variable, permutation in head_weight_map(head):
            if layout == "braindecode":
                ours = next(o for o in renames if key.startswith(o))
                key = renames[ours] + key[len(ours) :]
            pairs.append((key, variable, permutation))
    tensors = {}
    for key, variable, permutation in pairs:
        value = np.asarray(variable.numpy(), dtype=np.float32)
        if permutation is not None:  # the Keras layout back to PyTorch's
            value = value.transpose(np.argsort(permutation))
        tensors[key] = np.ascontiguousarray(value)
    return tensors


def save_weights(
    model: Any,
    path: str | os.PathLike,
    *,
    layout: str = "finetuning",
    force: bool = False,
) -> Path:
    """Write a Keras encoder or classifier as a float32 ``.safetensors`` file that PyTorch
    code loads: exactly the keys, shapes and tensor layouts of ``layout``
    (:data:`SAVE_LAYOUTS`; ``"released"`` writes the encoder alone). The shape goes in the
    file's metadata. Written atomically; an existing ``path`` is an error unless ``force``."""
    from safetensors.numpy import save_file

    from eegdino_tf import __version__
    from eegdino_tf.files import atomic_output

    tensors = model_tensors(model, layout)
    encoder = getattr(model, "encoder", model)
    config = encoder.config
    metadata = {
        "layout": layout,
        "size": config.name,
        "config": json.dumps(config.to_dict()),
        "has_head": str(layout != "released").lower(),
        "writer": f"eegdino-tf {__version__}",
    }
    with atomic_output(path, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)
