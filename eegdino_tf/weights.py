"""Weights: read a checkpoint, recognise its layout, infer its config, port it into Keras.

Four steps, kept apart as in keras-hub's converters (the last undoes the first three):

1. :func:`read_tensors` reads a ``.safetensors`` file (or a ``.pt`` checkpoint, through the
   torch-free reader in :mod:`eegdino_tf.checkpoint`) into NumPy arrays.
2. :func:`normalize_state_dict` recognises the file's layout (one of the registry
   :data:`eegdino_tf.layouts.LAYOUTS`), renames its keys to the released names in PyTorch
   layout, and sets aside the entries that inference never uses (teacher, projector, loss
   state, ``relative_position_index``). :func:`infer_config` reads the model's shape off
   those tensors; what they cannot tell comes from the metadata eegdino-tf wrote, if any
   (:func:`read_weights` does steps 1 and 2 with the metadata).
3. :func:`encoder_weight_map` / :func:`head_weight_map` pair each released key with its Keras
   variable and a small layout hook (``[out, in] -> [in, out]`` for a Linear, ``OIHW -> HWIO``
   for a Conv2d); :func:`assign_weights` fills every variable exactly once and fails on a
   missing key, an unexpected key or a wrong shape.
4. :func:`write_weights` (behind :func:`save_weights` and :mod:`eegdino_tf.convert`) writes
   released-name tensors in any layout, with the one metadata schema :func:`read_metadata`
   reads back.

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
from eegdino_tf.layouts import HEAD_KEY, detect_layout, get_layout

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
    return _read(Path(path))[0]


def read_weights(path: str | os.PathLike) -> NormalizedWeights:
    """A weight file's tensors under the released names (:func:`normalize_state_dict`), with
    the metadata eegdino-tf wrote into it, if any (:func:`read_metadata`)."""
    tensors, strings = _read(Path(path))
    return normalize_state_dict(tensors, read_metadata(path, strings))


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str] | None]:
    """The tensors of a weight file and its safetensors metadata (None for a ``.pt``)."""
    if not path.exists():
        raise WeightsError(f"weight file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; pass a .safetensors or .pt file")
    if path.suffix.lower() in TORCH_SUFFIXES:
        from eegdino_tf.checkpoint import read_state_dict

        return read_state_dict(path), None
    try:
        return _read_safetensors(path)
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror or err}") from None


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str] | None]:
    """The tensors of a safetensors file whose header the safetensors library validated
    (offsets in range, contiguous, sized by shape and dtype), read from their offsets; and
    the header's metadata."""
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
        metadata = header.pop("__metadata__", None)
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
    return tensors, metadata


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
        layout: the name of the layout detected (:data:`eegdino_tf.layouts.NAMES`).
        dropped: keys set aside, each with the reason.
        source_keys: canonical key -> the key as it appeared in the file (for messages).
        metadata: what eegdino-tf wrote into the file (:func:`read_metadata`), if it did.
    """

    tensors: dict[str, np.ndarray]
    layout: str
    dropped: dict[str, str]
    source_keys: dict[str, str]
    metadata: Metadata | None = None

    @property
    def has_head(self) -> bool:
        return any(HEAD_KEY.match(k) for k in self.tensors)

    @property
    def saved(self) -> dict[str, Any]:
        """The config fields the tensors cannot tell, as the file's metadata records them;
        pass ``saved | overrides`` to :func:`infer_config`."""
        return {} if self.metadata is None else self.metadata.untold()

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


def normalize_state_dict(
    tensors: dict[str, np.ndarray], metadata: Metadata | None = None
) -> NormalizedWeights:
    """Rename any layout of the registry to released names in PyTorch layout (module doc).

    The encoder keys lose whatever prefix precedes ``global_tokens`` (``module.student.``,
    ``encoder.``, ...), then the detected layout maps every key to its released name.
    """
    prefix = _encoder_prefix(list(tensors))
    layout = detect_layout(prefix, tensors.keys())
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key, value in tensors.items():
        reason = next((why for pattern, why in IGNORED if pattern.search(key)), None)
        name, released = layout.to_released(key.removeprefix(prefix), value)
        if not HEAD_KEY.match(name):  # a head key is kept whatever its name says
            if reason is not None:
                dropped[key] = reason
                continue
            if not key.startswith(prefix):  # no encoder key: kept, to fail as unexpected
                name, released = key, value
        if name in out:
            raise WeightsError(f"keys {source[name]!r} and {key!r} both map to {name!r}")
        out[name], source[name] = released, key
    return NormalizedWeights(out, layout.name, dropped, source, metadata)


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

    ``overrides`` are config fields the tensors cannot tell (``norm_groups``, ``num_heads``);
    they win over what the file's metadata records (:attr:`NormalizedWeights.saved`). The
    tensors are checked as the loaders check them (:func:`validate_weights`). Where the
    group count is unknown (no released size has this shape and no ``norm_groups``), the
    returned ``config["norm_groups"]`` is None and ``"norm_groups_unknown"`` says what to pass.
    ``"metadata"`` is what eegdino-tf wrote into the file (:class:`Metadata`'s fields), or None.
    """
    normalized = read_weights(path)
    config, groups = infer_shape(normalized.tensors, **(normalized.saved | overrides))
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
        "metadata": normalized.metadata and dataclasses.asdict(normalized.metadata),
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
# 4. Writing back out, and the metadata
# ---------------------------------------------------------------------------------------------

#: Config fields a file's tensors cannot tell; the metadata eegdino-tf writes records them.
UNTOLD = ("num_heads", "norm_groups", "input_scale")
#: The one metadata schema (all values strings, as safetensors stores them); ``source`` and
#: ``source_sha256`` only in a conversion's output.
METADATA_KEYS = ("writer", "layout", "size", "config", "has_head", "source", "source_sha256")


@dataclasses.dataclass(frozen=True)
class Metadata:
    """What eegdino-tf writes into a safetensors file (:func:`write_weights`).

    Attributes:
        layout: the layout written (a name of :data:`eegdino_tf.layouts.NAMES`).
        config: :meth:`EEGDinoConfig.to_dict` of the model; ``norm_groups`` None when the
            writer did not know it (a conversion of a shape no released size has).
        has_head: whether the file holds a classification head.
        writer: ``"eegdino-tf <version>"``.
        source, source_sha256: the file a conversion read, and its SHA-256.
    """

    layout: str
    config: dict[str, Any]
    has_head: bool
    writer: str
    source: str | None = None
    source_sha256: str | None = None

    @property
    def size(self) -> str:
        if self.config["norm_groups"] is None:
            return "custom"
        return EEGDinoConfig.from_dict(self.config).name

    def untold(self) -> dict[str, Any]:
        """The :data:`UNTOLD` fields this file records (``norm_groups`` only where known)."""
        return {k: self.config[k] for k in UNTOLD if self.config[k] is not None}

    def strings(self) -> dict[str, str]:
        """The safetensors metadata (string -> string) of :data:`METADATA_KEYS`."""
        values = {
            "writer": self.writer,
            "layout": self.layout,
            "size": self.size,
            "config": json.dumps(self.config),
            "has_head": str(self.has_head).lower(),
            "source": self.source,
            "source_sha256": self.source_sha256,
        }
        return {k: v for k, v in values.items() if v is not None}


def read_metadata(path: str | os.PathLike, strings: dict[str, str] | None) -> Metadata | None:
    """The :class:`Metadata` in a file's safetensors metadata ``strings``; None where
    eegdino-tf did not write it (no ``config`` by an ``eegdino-tf`` writer). A config that
    is not one raises :class:`WeightsError` naming the file."""
    if (
        not strings
        or "config" not in strings
        or not strings.get("writer", "").startswith("eegdino-tf ")
    ):
        return None
    try:
        config = json.loads(strings["config"])
        groups = config["norm_groups"]
        EEGDinoConfig.from_dict({**config, "norm_groups": 1 if groups is None else groups})
        has_head = {"true": True, "false": False}[strings.get("has_head", "")]
        layout = get_layout(strings.get("layout", "")).name
    except (ValueError, TypeError, KeyError) as err:  # ConfigError is a ValueError
        raise WeightsError(
            f"{path}: the metadata eegdino-tf wrote is damaged (config {strings['config'][:200]!r}"
            f", layout {strings.get('layout')!r}, has_head {strings.get('has_head')!r}): "
            f"{err}; remove the metadata or rewrite the file"
        ) from None
    source = {k: strings.get(k) for k in ("source", "source_sha256")}
    return Metadata(layout, config, has_head, strings["writer"], **source)


def released_tensors(model: Any) -> dict[str, np.ndarray]:
    """Every weight of a Keras encoder or classifier as a float32 PyTorch-layout tensor under
    its released name (the head's as ``full_linear.*``...); the inverse of loading."""
    head = getattr(model, "head", None)
    pairs = list(encoder_weight_map(model.encoder if head is not None else model))
    if head is not None:
        pairs += head_weight_map(head)
    tensors = {}
    for key, variable, permutation in pairs:
        value = np.asarray(variable.numpy(), dtype=np.float32)
        if permutation is not AS_IS:  # the Keras layout back to PyTorch's
            value = value.transpose(np.argsort(permutation))
        tensors[key] = np.ascontiguousarray(value)
    return tensors


def write_weights(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    config: EEGDinoConfig,
    *,
    layout: str = "released",
    norm_groups_known: bool = True,
    source: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """Write released-name ``tensors`` as float32 safetensors in ``layout``
    (:data:`eegdino_tf.layouts.NAMES`), with :class:`Metadata` of ``config`` (and of the
    ``source`` file converted). Written atomically; an existing ``path`` is an error unless
    ``force``. Returns the tensors written, under ``layout``'s names."""
    from safetensors.numpy import save_file

    from eegdino_tf import __version__
    from eegdino_tf.files import atomic_output, sha256_of

    target = get_layout(layout)
    written = target.write(tensors, str(source) if source else "this model")
    written = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in written.items()}
    metadata = Metadata(
        layout=target.name,
        config={
            **config.to_dict(),
            "norm_groups": config.norm_groups if norm_groups_known else None,
        },
        has_head=any(HEAD_KEY.match(k) for k in tensors),
        writer=f"eegdino-tf {__version__}",
        source=source and source.name,
        source_sha256=source and sha256_of(source),
    )
    with atomic_output(path, force=force) as tmp:
        save_file(written, str(tmp), metadata=metadata.strings())
    return written


def save_weights(
    model: Any,
    path: str | os.PathLike,
    *,
    layout: str = "finetuning",
    force: bool = False,
) -> Path:
    """Write a Keras encoder or classifier as a float32 ``.safetensors`` file that PyTorch
    code loads: exactly the keys, shapes and tensor layouts of ``layout``
    (:data:`eegdino_tf.layouts.NAMES`; ``"finetuning"`` and ``"braindecode"`` hold a
    classifier, ``"pretraining"`` and ``"eegdino-rs"`` an encoder, ``"released"`` either).
    The config goes in the file's metadata, and loading reads it back. Written atomically;
    an existing ``path`` is an error unless ``force``."""
    config = getattr(model, "encoder", model).config
    write_weights(path, released_tensors(model), config, layout=layout, force=force)
    return Path(path)
